"""The math of block normalization: pure functions over lists of tensors.

Blocks are given by a :class:`BlockIndex`: for a list of tensors (one per parameter), which
block each belongs to, precomputed as index tensors by :class:`bng.blocks.BlockPlan`. The
functions never read a tensor's value on the host (no ``.item()``, no Python branch on
data), so a step never synchronizes with the device and traces under ``torch.compile``.
Like ``torch.nn.utils.clip_grad_norm_``, they carry nothing from one call to the next; the
one buffer they write is each group's factor workspace (:func:`tensor_factors`), whose
0-d views are made once with the index and overwritten by every call.

    index = plan.index                          # built once per optimizer
    norms = block_norms(grads, index)           # (B,) ‖g_i‖₂
    scales = block_scales(norms, "ng")          # (B,) c_i = 1/‖g_i‖₂
    scale_blocks_(grads, index, scales)         # g_k ← c_{block(k)} · g_k, in place
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

MODES = ("none", "ng", "adap", "clip")

# 1-D tensors (biases, BatchNorm/LayerNorm affines) up to this many elements have their norms
# taken together: one cat of their elements and one index_add_ of the squares. On a CPU each
# tensor in a _foreach_norm costs ~4 µs of dispatch once backward has pushed its code out of
# the caches, more than squaring a thousand elements (ResNet-110's 219 such tensors: 0.9 ms in
# _foreach_norm, 0.2 ms as one cat).
SMALL_NUMEL = 1024


def is_small(tensor: Tensor) -> bool:
    """Whether ``tensor`` takes the concatenated path; a static property of its shape."""
    return tensor.dim() == 1 and tensor.numel() <= SMALL_NUMEL


@dataclass(eq=False)
class TensorGroup:
    """The slice ``[start, stop)`` of a tensor list whose tensors share one device and dtype
    (what one ``torch._foreach_*`` call takes): large tensors in ``[start, split)``, then small
    1-D ones in ``[split, stop)``."""

    start: int
    split: int
    stop: int
    part_blocks: Tensor   # (L+N,) block of each large tensor's norm, then of each element of
                          # the small tensors; on the index's device (for the norms)
    local_blocks: Tensor  # (P_g,) block of each tensor, on the group's device (for the scales)
    cast: bool            # the group's device or dtype differs from the index's
    factors: Tensor       # (P_g,) workspace in the group's dtype: this step's factor per tensor
    factor_views: tuple[Tensor, ...]  # its 0-d views, made once (_foreach_mul_ takes a list;
                                      # unbinding 329 factors each step costs 0.5 ms on a CPU)


@dataclass(eq=False)
class BlockIndex:
    """Which block each tensor of a list belongs to; block arithmetic runs on ``device``
    in ``dtype``."""

    groups: tuple[TensorGroup, ...]
    num_blocks: int
    device: torch.device
    dtype: torch.dtype


def processing_order(tensors: Sequence[Tensor]) -> list[int]:
    """The order :func:`block_index` needs: tensors of one device and dtype together, in
    first-seen order, large ones before small 1-D ones; stable otherwise."""
    keys: dict[tuple[torch.device, torch.dtype], int] = {}
    for t in tensors:
        keys.setdefault((t.device, t.dtype), len(keys))
    return sorted(range(len(tensors)),
                  key=lambda k: (keys[tensors[k].device, tensors[k].dtype], is_small(tensors[k])))


def block_index(
    tensors: Sequence[Tensor],
    blocks: Sequence[int],
    num_blocks: int,
    *,
    device: torch.device,
    dtype: torch.dtype,
) -> BlockIndex:
    """Index tensors for ``tensors``, given in :func:`processing_order`; ``blocks[k]`` is the
    block of ``tensors[k]``. Host-side; built once and reused every step."""
    groups: list[TensorGroup] = []
    start = 0
    while start < len(tensors):
        key = (tensors[start].device, tensors[start].dtype)
        stop = start
        while stop < len(tensors) and (tensors[stop].device, tensors[stop].dtype) == key:
            stop += 1
        split = start
        while split < stop and not is_small(tensors[split]):
            split += 1
        if any(not is_small(t) for t in tensors[split:stop]) or any(
                (t.device, t.dtype) == key for t in tensors[stop:]):
            raise ValueError("tensors are not in processing_order()")
        parts = [*blocks[start:split],
                 *(blocks[k] for k in range(split, stop) for _ in range(tensors[k].numel()))]
        factors = torch.zeros(stop - start, device=key[0], dtype=key[1])
        groups.append(TensorGroup(
            start=start, split=split, stop=stop, part_blocks=_long(parts, device),
            local_blocks=_long(blocks[start:stop], key[0]), cast=(device, dtype) != key,
            factors=factors, factor_views=factors.unbind(0),
        ))
        start = stop
    return BlockIndex(tuple(groups), num_blocks, device, dtype)


def _long(values: Sequence[int], device: torch.device) -> Tensor:
    return torch.tensor(list(values), dtype=torch.long, device=device)


def block_norms(tensors: list[Tensor], index: BlockIndex) -> Tensor:
    """L2 norm of each block, ``‖t_i‖₂ = sqrt(Σ_{k in block i} ‖t_k‖₂²)``.

    Per group: one ``_foreach_norm`` over the large tensors, their norms concatenated with the
    small tensors' elements, and one ``index_add_`` of the squares into the blocks. Squares are
    taken in ``index.dtype`` (float64 keeps tiny float32 gradients exact, and half precision
    cannot overflow). Blocks without tensors get 0.

    Returns:
        (B,) block norms on ``index.device`` in ``index.dtype``.
    """
    squared = torch.zeros(index.num_blocks, device=index.device, dtype=index.dtype)  # (B,)
    for group in index.groups:
        small = tensors[group.split:group.stop]  # summed element by element, after the large
        parts = list(small)                       # tensors' norms
        if group.split > group.start:
            large = tensors[group.start:group.split]
            wider = None if large[0].dtype == index.dtype else index.dtype
            parts.insert(0, torch.stack(torch._foreach_norm(large, dtype=wider)))
        flat = torch.cat(parts) if small else parts[0]  # (L+N,), new: squared in place
        if group.cast:  # into the index's dtype before squaring: half precision would overflow
            flat = flat.to(device=index.device, dtype=index.dtype, non_blocking=True)
        squared.index_add_(0, group.part_blocks, flat.square_())
    return squared.sqrt_()


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


def tensor_factors(scales: Tensor, group: TensorGroup, dtype: torch.dtype) -> tuple[Tensor, ...]:
    """``scales[block(k)]`` for each tensor k of ``group``, as 0-d tensors in ``dtype`` (the
    group's) on its device: the views of the group's workspace, valid until the next call on
    this group. A factor beyond the dtype's range (1/‖g‖ of a float64-accumulated norm under
    ~3e-39) is clamped to its largest finite value."""
    if dtype != group.factors.dtype:
        raise ValueError(f"the group's tensors are {group.factors.dtype}, not {dtype}")
    if group.cast:
        if dtype.is_floating_point and torch.finfo(dtype).max < torch.finfo(scales.dtype).max:
            scales = scales.clamp(max=torch.finfo(dtype).max)
        scales = scales.to(device=group.factors.device, dtype=dtype, non_blocking=True)
    torch.index_select(scales, 0, group.local_blocks, out=group.factors)  # (P_g,)
    return group.factor_views


def scale_blocks_(tensors: list[Tensor], index: BlockIndex, scales: Tensor) -> None:
    """In place, ``t_k ← scales[block(k)] · t_k``: one ``_foreach_mul_`` per group."""
    for group in index.groups:
        part = tensors[group.start:group.stop]
        torch._foreach_mul_(part, tensor_factors(scales, group, part[0].dtype))


def normalize_blocks_(
    grads: list[Tensor],
    index: BlockIndex,
    mode: str,
    *,
    params: list[Tensor] | None = None,
    alpha: float = 0.02,
    threshold: float = 0.1,
    grad_scale: Tensor | None = None,
) -> Tensor:
    """Algorithm 1's normalization: rescale ``grads`` in place by their blocks' factors.

    ``params`` (the weights, in the order of ``grads``) are needed by ``"adap"`` only. With
    ``grad_scale`` S (a GradScaler's scale, still in the gradients) the norms are divided by
    S, so norms and thresholds refer to the true gradient ``g``, and the factor ``c(g)`` is
    applied to ``S·g``; the fused optimizer's division by S then yields ``c(g)·g``.

    Returns:
        (B,) block norms of the true gradients, before the rescaling.
    """
    norms = block_norms(grads, index)
    if grad_scale is not None:
        norms = norms / grad_scale.to(device=norms.device, dtype=norms.dtype)
    if mode == "none":
        return norms
    weight_norms = None
    if mode == "adap":
        if params is None:
            raise ValueError("mode='adap' needs the parameters")
        with torch.no_grad():
            weight_norms = block_norms(params, index)
    scales = block_scales(norms, mode, weight_norms=weight_norms, alpha=alpha,
                          threshold=threshold)
    scale_blocks_(grads, index, scales)
    return norms


def adagrad_bng_(
    params: list[Tensor],
    grads: list[Tensor],
    sums: list[Tensor],
    norms: Tensor,
    index: BlockIndex,
    *,
    lr: Sequence[float],
    delta: Sequence[float],
) -> None:
    """Algorithm 2's update (AdaGradBNG, the appendix of arXiv:1707.04822), in place.

    ``grads`` hold the block-normalized gradients ``g_t = F'_i / ‖F'_i‖₂`` (what
    :func:`normalize_blocks_` in mode ``"ng"`` leaves) and ``norms`` the (B,) raw norms
    ``‖F'_i‖₂`` it returned. Per tensor k of block i, with ``lr[k]`` = η and ``delta[k]`` = δ:

    - ``s ← s + g²`` (``sums[k]``: ``s_t,j² = Σ_{u≤t} g_u,j²``)
    - ``τ = η · ‖F'_i‖₂ / (δ + √s)``
    - ``x ← x − τ ∘ g``

    One ``addcdiv`` computes ``η · ‖F'_i‖ · g / (δ + √s)``: no host sync, no state kept here.
    """
    for group in index.groups:
        here = slice(group.start, group.stop)
        normalized, weights, accumulators = grads[here], params[here], sums[here]
        torch._foreach_addcmul_(accumulators, normalized, normalized)      # Σ_u g_u,j²
        denominators = torch._foreach_sqrt(accumulators)                  # s_t,j
        torch._foreach_add_(denominators, list(delta[here]))              # δ + s_t,j
        steps = torch._foreach_mul(normalized, tensor_factors(norms, group, weights[0].dtype))
        torch._foreach_addcdiv_(weights, steps, denominators, [-rate for rate in lr[here]])
