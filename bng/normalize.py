"""Block normalization as a step pre-hook on any ``torch.optim`` optimizer.

The optimizer stays the user's own object: the hook rewrites ``p.grad`` in place just
before ``optimizer.step()`` runs, so schedulers, ``state_dict``, ``zero_grad``, param
groups, ``GradScaler`` and DDP work unchanged. The math is :mod:`bng.functional`'s; the
hook only gathers the gradients and records the norms.

Paper: A. W. Yu, L. Huang, Q. Lin, R. Salakhutdinov, J. Carbonell, "Block-normalized
gradient method: an empirical study for training deep neural network", arXiv:1707.04822.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from bng.blocks import BlockPlan, BlockSpec, plan_blocks
from bng.functional import MODES, block_norms, normalize_blocks_


class BlockNormalizer:
    """The hook: measure each block's gradient norm, then rescale the gradients.

    Attached to an optimizer as ``optimizer.block_normalizer`` by :func:`block_normalize`.
    ``plan`` is its :class:`bng.blocks.BlockPlan`, ``last_norms`` the (B,) gradient norms of
    the last step (``None`` before the first) and ``handle`` the hook's removable handle.
    """

    def __init__(self, plan: BlockPlan, mode: str, alpha: float = 0.02,
                 threshold: float = 0.1) -> None:
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
        self.last_norms: Tensor | None = None
        self.handle: Any = None

    def __call__(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        # Fused optimizers under GradScaler get still-scaled gradients plus
        # `optimizer.grad_scale` (S) and unscale inside their kernel.
        self.normalize_(getattr(optimizer, "grad_scale", None))

    def normalize_(self, grad_scale: Tensor | None = None) -> Tensor:
        """Rescale the present gradients in place; record and return the (B,) block norms
        of the true (unscaled) gradients, before the rescaling."""
        gathered = self.plan.gather()
        if gathered is None:
            norms = _zeros(self.plan)
        else:
            params, grads, index = gathered
            norms = normalize_blocks_(grads, index, self.mode, params=params, alpha=self.alpha,
                                      threshold=self.threshold, grad_scale=grad_scale)
        self.last_norms = norms
        return norms


def block_normalize(
    optimizer: torch.optim.Optimizer,
    model: nn.Module | Iterable[Tensor] | None = None,
    mode: str = "ng",
    blocks: BlockSpec | BlockPlan = "layer",
    alpha: float = 0.02,
    threshold: float = 0.1,
    norm_dtype: torch.dtype | str | None = None,
) -> torch.optim.Optimizer:
    """Make ``optimizer`` step on block-normalized gradients; return the same object.

    Before each ``optimizer.step()``, for every block i (see :mod:`bng.blocks`):

    - ``"ng"``:   ``g_i ← g_i / ‖g_i‖₂``
    - ``"adap"``: ``g_i ← α · ‖x_i‖₂ · g_i / ‖g_i‖₂`` (NG_adap; ‖x_i‖ = 0 is taken as 1)
    - ``"clip"``: ``g_i ← g_i · min(1, τ / ‖g_i‖₂)`` (global clipping with blocks="global")
    - ``"none"``: gradients untouched; only the block norms are recorded.

    The base optimizer then takes its ordinary step; its weight decay is added after the
    normalization. Yu et al., arXiv:1707.04822, Algorithm 1. The gradients are rescaled in
    place: the ``p.grad`` objects stay the caller's.

    Args:
        optimizer: any ``torch.optim.Optimizer``; its parameters must all lie in some block.
        model: the module that defines ``"layer"``/``"conv_bn"`` blocks (or ``None`` with a
            dict / ``"param"`` / ``"global"`` spec, which then uses the optimizer's
            parameters).
        mode: ``"ng"``, ``"adap"``, ``"clip"`` or ``"none"``.
        blocks: ``"layer"``, ``"conv_bn"``, ``"param"``, ``"global"``, a dict of name ->
            parameters, or a ready :class:`bng.blocks.BlockPlan` (used as it is).
        alpha: NG_adap's α (paper's best: 0.02).
        threshold: clip's τ (paper's best: 0.1).
        norm_dtype: the dtype the block norms accumulate in (default: float32, float64 for
            float64 models). In float32 the squares of gradient entries below ~1e-19 lose
            precision and below ~4e-23 vanish, so a layer with such a (vanishing) gradient
            gets norm 0 and is not moved; ``torch.float64`` (or ``"float64"``) keeps it
            normalized, at about 3x the cost of the norm kernels on CPU.
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"block_normalize needs a torch.optim.Optimizer (it registers a step "
                        f"pre-hook), got {type(optimizer).__name__}")
    if getattr(optimizer, "block_normalizer", None) is not None:
        raise ValueError("this optimizer already normalizes its gradients (block_normalize twice)")
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if not params:
        raise ValueError("the optimizer has no parameters")
    if isinstance(blocks, BlockPlan):
        plan = blocks
        covered = {id(p) for p in plan.params}
        if any(id(p) not in covered for p in params if p.requires_grad):
            raise ValueError("the block plan does not cover every optimizer parameter")
    else:
        module = model if isinstance(model, nn.Module) else None
        plan = plan_blocks(module, blocks, params=params, norm_dtype=norm_dtype)
    normalizer = BlockNormalizer(plan, mode, alpha=alpha, threshold=threshold)
    normalizer.handle = optimizer.register_step_pre_hook(normalizer)
    optimizer.block_normalizer = normalizer
    return optimizer


def _normalizer(optimizer: torch.optim.Optimizer) -> BlockNormalizer:
    normalizer = getattr(optimizer, "block_normalizer", None)
    if normalizer is None:
        raise ValueError("optimizer was not built by bng (no block normalizer attached); "
                         "bng.block_normalize(optimizer, model, mode='none') records its norms")
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


def grad_norms(plan: BlockPlan) -> Tensor:
    """(B,) L2 norm of the current gradients of each block of ``plan``, in ``plan.names``
    order, on the device (0 for a block without gradients); no optimizer involved.

    For measuring any optimizer's per-layer gradients: ``plan = bng.plan_blocks(model)``
    once, then ``bng.grad_norms(plan)`` after ``backward()``.
    """
    gathered = plan.gather()
    return _zeros(plan) if gathered is None else block_norms(gathered[1], gathered[2])


def _zeros(plan: BlockPlan) -> Tensor:
    return torch.zeros(plan.num_blocks, device=plan.device, dtype=plan.norm_dtype)
