"""Pure functions over lists of tensors: the math of block normalization.

Blocks are given as index tensors (``block_index[k]`` is the block of tensor ``k``), built
once by :class:`bng.blocks.BlockPlan`. Nothing here reads a tensor's value on the host:
no ``.item()``, no Python branch on data, so a step never synchronizes with the device and
traces cleanly under ``torch.compile``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

MODES = ("none", "ng", "adap", "clip")

# (tensors, block_index): tensors of one device and dtype, and the (P_g,) block of each
TensorGroup = tuple[list[Tensor], Tensor]


# 1-D tensors (biases, BatchNorm/LayerNorm affines) up to this many elements are reduced
# together with one cat + index_add_ (see block_norms_add_): on CPU every tensor in a
# foreach op costs ~2 µs of dispatch, more than summing a thousand squares.
SMALL_NUMEL = 1024


def is_small(tensor: Tensor) -> bool:
    """Whether ``tensor`` takes the concatenated path; a static property of its shape."""
    return tensor.dim() == 1 and tensor.numel() <= SMALL_NUMEL


def block_norms(
    groups: Sequence[TensorGroup],
    num_blocks: int,
    *,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """L2 norm of each block, ``‖t_i‖₂ = sqrt(Σ_{k in block i} ‖t_k‖₂²)``.

    One ``torch._foreach_norm`` per (device, dtype) group; the squared per-tensor norms are
    summed per block on ``device`` with ``index_add_``. Blocks without tensors get 0.

    Returns:
        (B,) tensor of block norms on ``device`` in ``dtype``.
    """
    squared = torch.zeros(num_blocks, device=device, dtype=dtype)  # (B,) Σ‖t_k‖² per block
    for tensors, block_index in groups:
        tensor_norms_add_(squared, tensors, block_index)
    return squared.sqrt()


def tensor_norms_add_(squared: Tensor, tensors: Sequence[Tensor], block_index: Tensor) -> None:
    """``squared[block_index[k]] += ‖t_k‖²``: one ``_foreach_norm``, one ``index_add_``."""
    if tensors[0].dtype == squared.dtype:
        norms = torch.stack(torch._foreach_norm(tensors))  # (P_g,)
    else:  # accumulate in squared's dtype (float64 keeps tiny float32 gradients exact)
        norms = torch.stack(torch._foreach_norm(tensors, dtype=squared.dtype))
    norms = norms.to(device=squared.device, non_blocking=True)
    squared.index_add_(0, block_index, norms * norms)


def element_squares_add_(
    squared: Tensor, tensors: Sequence[Tensor], element_block_index: Tensor
) -> None:
    """``squared[b] += Σ t²`` over small 1-D tensors at once (one ``cat``, one ``index_add_``).

    ``element_block_index`` is the (N,) block of each element of ``cat(tensors)``. The
    squares are taken in ``squared``'s dtype, so half-precision gradients cannot overflow.
    """
    flat = torch.cat(list(tensors)).to(device=squared.device, dtype=squared.dtype)  # (N,)
    squared.index_add_(0, element_block_index, flat * flat)


def block_scales(
    grad_norms: Tensor,
    mode: str,
    *,
    weight_norms: Tensor | None = None,
    alpha: float = 0.02,
    threshold: float = 0.1,
) -> Tensor:
    """Per-block factor ``c_i`` such that the new gradient is ``c_i · g_i``.

    - ``ng``:   ``c_i = 1 / ‖g_i‖``                     (the paper's NG)
    - ``adap``: ``c_i = α · ‖x_i‖ / ‖g_i‖``             (the paper's NG_adap)
    - ``clip``: ``c_i = min(1, τ / ‖g_i‖)``             (per-block clipping)
    - ``none``: ``c_i = 1``

    Zero-norm blocks never give NaN or inf: a block whose gradient is all zero gets
    ``c_i = 0`` in ``ng``/``adap`` (its gradient stays zero) and 1 in ``clip``. In ``adap``
    a block whose weights are all zero uses ``‖x_i‖ = 1`` (the LARS convention), so its step
    is ``α · g_i / ‖g_i‖`` and a zero-initialized layer can still move.
    """
    if mode == "none":
        return torch.ones_like(grad_norms)
    if mode == "clip":
        return threshold / grad_norms.clamp(min=threshold)
    # 1/‖g_i‖ with 1/0 = inf -> 0: two kernels, and NaN norms give 0 instead of NaN scales
    inverse = grad_norms.reciprocal().nan_to_num_(nan=0.0, posinf=0.0)  # (B,)
    if mode == "ng":
        return inverse
    if mode == "adap":
        if weight_norms is None:
            raise ValueError("mode='adap' needs the weight norms")
        weights = torch.where(weight_norms > 0, weight_norms, 1.0)  # LARS: ‖x‖ = 0 -> 1
        return (alpha * weights).mul_(inverse)
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def narrow_scales(scales: Tensor, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``scales`` on the gradients' device and dtype; a factor beyond the dtype's range (1/‖g‖
    of a float64-accumulated norm under ~3e-39) is clamped to its largest finite value."""
    if dtype.is_floating_point and torch.finfo(dtype).max < torch.finfo(scales.dtype).max:
        scales = scales.clamp(max=torch.finfo(dtype).max)
    return scales.to(device=device, dtype=dtype, non_blocking=True)


def scale_blocks_(groups: Sequence[TensorGroup], scales: Tensor) -> None:
    """In place, ``t_k ← scales[block_of(k)] · t_k`` with one ``_foreach_mul_`` per group."""
    for tensors, block_index in groups:
        per_tensor = scales.index_select(0, block_index)  # (P_g,)
        per_tensor = narrow_scales(per_tensor, tensors[0].device, tensors[0].dtype)
        torch._foreach_mul_(tensors, per_tensor.unbind(0))
