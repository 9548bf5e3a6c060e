"""Block normalization as a step pre-hook on any ``torch.optim`` optimizer.

The optimizer stays the user's own object: the hook rewrites ``p.grad`` in place just
before ``optimizer.step()`` runs, so schedulers, ``state_dict``, ``zero_grad``, param
groups, ``GradScaler`` and DDP work unchanged.

Paper: A. W. Yu, L. Huang, Q. Lin, R. Salakhutdinov, J. Carbonell, "Block-normalized
gradient method: an empirical study for training deep neural network", arXiv:1707.04822.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from itertools import repeat
from typing import Any

import torch
from torch import Tensor, nn

from bng.blocks import BlockPlan, BlockSpec, Group, resolve_blocks
from bng.functional import (
    MODES,
    block_scales,
    element_squares_add_,
    is_small,
    tensor_norms_add_,
)

_ATTR = "_bng_normalizer"


class BlockNormalizer:
    """The hook: measure each block's gradient norm, then rescale the gradients.

    Per step and (device, dtype) group: one ``_foreach_norm`` over the large gradients, one
    ``cat`` over the small 1-D ones, two ``index_add_`` into the (B,) squared block norms,
    and one ``_foreach_mul_``. ``mode="adap"`` does the same reduction over the weights.
    Index tensors and the per-tensor scale views are cached per grad-None pattern, so the
    step builds only the gradient lists. No host-device synchronization.
    """

    def __init__(
        self, plan: BlockPlan, mode: str, alpha: float = 0.02, threshold: float = 0.1
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if mode == "clip" and not threshold > 0:
            raise ValueError(f"clip threshold must be > 0, got {threshold}")
        if mode == "adap" and not alpha > 0:
            raise ValueError(f"adap alpha must be > 0, got {alpha}")
        self.plan = plan
        self.mode = mode
        self.alpha = alpha
        self.threshold = threshold
        self.last_norms: Tensor | None = None  # (B,) gradient norms of the last step
        self.handle: Any = None
        # by grad-None pattern; None is the all-present layout
        self._layouts: dict[tuple[int, ...] | None, _Layout] = {}

    def __call__(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        # Fused optimizers under GradScaler get still-scaled gradients plus
        # `optimizer.grad_scale` (S) and unscale inside their kernel.
        self.normalize_(getattr(optimizer, "grad_scale", None))

    def normalize_(self, grad_scale: Tensor | None = None) -> Tensor:
        """Rescale the present gradients in place; return the (B,) unscaled block norms.

        With ``grad_scale`` S the gradients hold ``S·g``: the norms are divided by S so
        that norms and clip thresholds refer to the true gradient ``g``, and the factor
        ``c(g)`` is applied to ``S·g``; the fused kernel's division by S then yields
        exactly ``c(g)·g``.
        """
        layout, grads = self._gather()
        if layout is None:
            self.last_norms = torch.zeros(self.plan.num_blocks, device=self.plan.device)
            return self.last_norms
        norms = layout.block_norms(grads)
        if grad_scale is not None:
            norms = norms / grad_scale.to(device=norms.device, dtype=norms.dtype)
        self.last_norms = norms
        if self.mode == "none":
            return norms
        weight_norms = None
        if self.mode == "adap":
            with torch.no_grad():
                weight_norms = layout.block_norms(layout.params)
        scales = block_scales(
            norms, self.mode, weight_norms=weight_norms, alpha=self.alpha,
            threshold=self.threshold,
        )
        layout.scale_(grads, scales)
        return norms

    def _gather(self) -> tuple[_Layout | None, list[Tensor]]:
        """This step's gradients in the order of their (cached) layout; host-side only.

        The common case, every gradient present, reads ``p.grad`` once per parameter in
        the all-present layout's order. A step with some ``grad is None`` (host-visible
        Python state, not tensor data) uses the layout cached for that pattern.
        """
        full = self._layouts.get(None)
        if full is None:
            full = self._layouts[None] = _Layout(self.plan, tuple(range(len(self.plan.params))))
        grads = [p.grad for p in full.params]
        if not any(map(operator.is_, grads, repeat(None))):
            return full, grads
        by_position = dict(zip(full.positions, grads, strict=True))
        present = tuple(k for k in range(len(grads)) if by_position[k] is not None)
        if not present:
            return None, []
        layout = self._layouts.get(present)
        if layout is None:
            if len(self._layouts) > 64:  # grad-None patterns are few; never grow unbounded
                self._layouts = {None: full}
            layout = self._layouts[present] = _Layout(self.plan, present)
        return layout, [by_position[k] for k in layout.positions]


class _Layout:
    """Processing order, index tensors and buffers for one set of present gradients.

    Built once per grad-None pattern and reused. Per (device, dtype) group the tensors are
    ordered large first, then small 1-D ones (:func:`bng.functional.is_small`), and the
    groups are concatenated: ``positions`` (plan indices) and ``params`` follow that order,
    and every group is a slice of it. The large tensors get one ``_foreach_norm``, the small
    ones one ``cat`` + ``index_add_``. The per-tensor scale lives in a (P_g,) buffer whose
    0-d views are made once, so a step does not ``unbind`` P_g new tensors.
    """

    def __init__(self, plan: BlockPlan, present: tuple[int, ...]) -> None:
        self.plan = plan
        self.groups: list[_GroupLayout] = []
        positions: list[int] = []
        for group in plan.groups(present):
            self.groups.append(_GroupLayout(plan, group, start=len(positions)))
            positions += self.groups[-1].order
        self.positions = tuple(positions)
        self.params = [plan.params[k] for k in positions]

    def block_norms(self, tensors: list[Tensor]) -> Tensor:
        """(B,) block norms of ``tensors``, given in this layout's order."""
        plan = self.plan
        squared = torch.zeros(plan.num_blocks, device=plan.device, dtype=plan.norm_dtype)
        for group in self.groups:
            if group.large_index is not None:
                tensor_norms_add_(squared, tensors[group.lo:group.mid], group.large_index)
            if group.element_index is not None:
                element_squares_add_(squared, tensors[group.mid:group.hi], group.element_index)
        return squared.sqrt()  # (B,)

    def scale_(self, grads: list[Tensor], scales: Tensor) -> None:
        """In place, ``g_k ← scales[block_of(k)] · g_k``: one ``_foreach_mul_`` per group."""
        for group in self.groups:
            here = scales
            if group.cast:
                here = scales.to(device=group.device, dtype=group.dtype, non_blocking=True)
            torch.index_select(here, 0, group.order_index, out=group.scale)  # (P_g,)
            torch._foreach_mul_(grads[group.lo:group.hi], group.scale_views)


class _GroupLayout:
    """One (device, dtype) group: the slice ``[lo, hi)`` of the layout, large ones first."""

    def __init__(self, plan: BlockPlan, group: Group, start: int) -> None:
        self.device, self.dtype = group.device, group.dtype
        small = [is_small(plan.params[k]) for k in group.positions]
        large = [k for k, s in zip(group.positions, small, strict=True) if not s]
        small_ones = [k for k, s in zip(group.positions, small, strict=True) if s]
        self.order = large + small_ones
        self.lo, self.mid, self.hi = start, start + len(large), start + len(self.order)
        blocks = plan.block_of
        # (L,) block of each large tensor and (N,) block of each element of cat(small)
        self.large_index = _index([blocks[k] for k in large], plan.device) if large else None
        self.element_index = (
            _index([blocks[k] for k in small_ones for _ in range(plan.params[k].numel())],
                   plan.device)
            if small_ones else None
        )
        self.order_index = _index([blocks[k] for k in self.order], self.device)  # (P_g,)
        # block arithmetic runs on plan.device in plan.norm_dtype; cast only when they differ
        self.cast = (plan.device, plan.norm_dtype) != (self.device, self.dtype)
        self.scale = torch.zeros(len(self.order), device=self.device, dtype=self.dtype)
        self.scale_views = self.scale.unbind(0)


def _index(values: list[int], device: torch.device) -> Tensor:
    return torch.tensor(values, dtype=torch.long, device=device)


def block_normalize(
    optimizer: torch.optim.Optimizer,
    model: nn.Module | Iterable[Tensor] | None = None,
    mode: str = "ng",
    blocks: BlockSpec = "layer",
    alpha: float = 0.02,
    threshold: float = 0.1,
) -> torch.optim.Optimizer:
    """Make ``optimizer`` step on block-normalized gradients; return the same object.

    Before each ``optimizer.step()``, for every block i (see :mod:`bng.blocks`):

    - ``"ng"``:   ``g_i ← g_i / ‖g_i‖₂``
    - ``"adap"``: ``g_i ← α · ‖x_i‖₂ · g_i / ‖g_i‖₂`` (NG_adap; ‖x_i‖ = 0 is taken as 1)
    - ``"clip"``: ``g_i ← g_i · min(1, τ / ‖g_i‖₂)`` (global clipping with blocks="global")
    - ``"none"``: gradients untouched; only the block norms are recorded.

    The base optimizer then takes its ordinary step; its weight decay is added after the
    normalization. Yu et al., arXiv:1707.04822, Algorithm 1.

    Args:
        optimizer: any ``torch.optim.Optimizer``; its parameters must all lie in some block.
        model: the module that defines ``"layer"`` blocks (or ``None`` with a dict /
            ``"param"`` / ``"global"`` spec, which then uses the optimizer's parameters).
        mode: ``"ng"``, ``"adap"``, ``"clip"`` or ``"none"``.
        blocks: ``"layer"``, ``"param"``, ``"global"`` or a dict of name -> parameters.
        alpha: NG_adap's α (paper's best: 0.02).
        threshold: clip's τ (paper's best: 0.1).
    """
    if getattr(optimizer, _ATTR, None) is not None:
        raise ValueError("this optimizer already normalizes its gradients (block_normalize twice)")
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if not params:
        raise ValueError("the optimizer has no parameters")
    module = model if isinstance(model, nn.Module) else None
    resolved = resolve_blocks(module, blocks, params=params)
    normalizer = BlockNormalizer(BlockPlan(resolved), mode, alpha=alpha, threshold=threshold)
    normalizer.handle = optimizer.register_step_pre_hook(normalizer)
    setattr(optimizer, _ATTR, normalizer)
    return optimizer


def _normalizer(optimizer: torch.optim.Optimizer) -> BlockNormalizer:
    normalizer = getattr(optimizer, _ATTR, None)
    if normalizer is None:
        raise ValueError("optimizer was not built by bng (no block normalizer attached)")
    return normalizer


def block_names(optimizer: torch.optim.Optimizer) -> list[str]:
    """The optimizer's block names, in block order (the order of every (B,) norm vector)."""
    return list(_normalizer(optimizer).plan.names)


def last_block_norms(optimizer: torch.optim.Optimizer) -> Tensor | None:
    """The (B,) gradient norms of the last step, before normalization; None before the first.

    The same values as :func:`block_grad_norms` as one device tensor, for callers that
    accumulate them every step (a training loop logging mean norms) without building a dict.
    """
    return _normalizer(optimizer).last_norms


def block_grad_norms(optimizer: torch.optim.Optimizer) -> dict[str, Tensor]:
    """Each block's gradient norm at the last step, before normalization, on the device.

    Empty before the first step. Reading the values (``.item()``) is the caller's business.
    """
    norms = last_block_norms(optimizer)
    if norms is None:
        return {}
    return dict(zip(block_names(optimizer), norms.unbind(0), strict=True))
