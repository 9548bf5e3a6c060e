"""Block normalization as a step pre-hook on any ``torch.optim`` optimizer.

The optimizer stays the user's own object: the hook rewrites ``p.grad`` in place just
before ``optimizer.step()`` runs, so schedulers, ``state_dict``, ``zero_grad``, param
groups, ``GradScaler`` and DDP work unchanged.

Paper: A. W. Yu, L. Huang, Q. Lin, R. Salakhutdinov, J. Carbonell, "Block-normalized
gradient method: an empirical study for training deep neural network", arXiv:1707.04822.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from bng.blocks import BlockPlan, BlockSpec, Group, resolve_blocks
from bng.functional import MODES, TensorGroup, block_norms, block_scales, scale_blocks_

_ATTR = "_bng_normalizer"


class BlockNormalizer:
    """The hook: measure each block's gradient norm, then rescale the gradients.

    Per step: one ``_foreach_norm`` over all gradients (per device/dtype group), an
    ``index_add_`` into the (B,) block norms, and one ``_foreach_mul_``. ``mode="adap"``
    adds one ``_foreach_norm`` over the weights. No host-device synchronization.
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
        plan = self.plan
        present = tuple(k for k, p in enumerate(plan.params) if p.grad is not None)
        if not present:
            self.last_norms = torch.zeros(plan.num_blocks, device=plan.device)
            return self.last_norms
        groups = plan.groups(present)
        grads = _tensor_groups(groups, [[p.grad for p in g.params] for g in groups])
        norms = block_norms(grads, plan.num_blocks, device=plan.device, dtype=plan.norm_dtype)
        if grad_scale is not None:
            norms = norms / grad_scale.to(device=norms.device, dtype=norms.dtype)
        self.last_norms = norms
        if self.mode == "none":
            return norms
        weight_norms = None
        if self.mode == "adap":
            weights = _tensor_groups(groups, [[p.detach() for p in g.params] for g in groups])
            weight_norms = block_norms(
                weights, plan.num_blocks, device=plan.device, dtype=plan.norm_dtype
            )
        scales = block_scales(
            norms, self.mode, weight_norms=weight_norms, alpha=self.alpha,
            threshold=self.threshold,
        )
        scale_blocks_(grads, scales)
        return norms


def _tensor_groups(groups: list[Group], tensors: list[list[Tensor]]) -> list[TensorGroup]:
    return [(ts, g.block_index) for g, ts in zip(groups, tensors, strict=True)]


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


def block_grad_norms(optimizer: torch.optim.Optimizer) -> dict[str, Tensor]:
    """Each block's gradient norm at the last step, before normalization, on the device.

    Empty before the first step. Reading the values (``.item()``) is the caller's business.
    """
    normalizer = getattr(optimizer, _ATTR, None)
    if normalizer is None:
        raise ValueError("optimizer was not built by bng (no block normalizer attached)")
    if normalizer.last_norms is None:
        return {}
    return dict(zip(normalizer.plan.names, normalizer.last_norms.unbind(0), strict=True))
