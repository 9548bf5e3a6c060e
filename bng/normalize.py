"""Block normalization as a step pre-hook on any ``torch.optim`` optimizer, and the readers of
block gradient norms.

The optimizer stays the user's own object: the hook rewrites ``p.grad`` in place just
before ``optimizer.step()`` runs, so schedulers, ``state_dict``, ``zero_grad``, param
groups, ``GradScaler`` and DDP work unchanged. The math is :mod:`bng.functional`'s; the
hook only gathers the gradients and records the norms.

Paper: A. W. Yu, L. Huang, Q. Lin, R. Salakhutdinov, J. Carbonell, "Block-normalized
gradient method: an empirical study for training deep neural network", arXiv:1707.04822.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from bng.blocks import BlockPlan, BlockSpec, plan_blocks
from bng.functional import MODES, block_norms, normalize_blocks_


class BlockNormalizer:
    """The hook: measure each block's gradient norm, then rescale the gradients.

    Attached to an optimizer as ``optimizer.block_normalizer`` by :func:`block_normalize`.
    ``plan`` is its :class:`bng.blocks.BlockPlan` (``plan.names``: the block names),
    ``last_norms`` the (B,) gradient norms of the last step in ``plan.names`` order (``None``
    before the first) and ``handle`` the hook's removable handle.

    A param group added with ``add_param_group`` after :func:`block_normalize` is seen at the
    next step: the plan is rebuilt over every parameter from the same model and block spec
    (``replan``), so the new parameters are normalized too. Without ``replan`` (a ready
    ``BlockPlan`` was given) that step raises instead.
    """

    def __init__(self, plan: BlockPlan, mode: str, alpha: float = 0.02, threshold: float = 0.1,
                 replan: Callable[[list[Tensor]], BlockPlan] | None = None) -> None:
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
        self.replan = replan
        self.last_norms: Tensor | None = None
        self.handle: Any = None
        self.num_groups = 0          # the optimizer's param groups that the plan covers

    def __call__(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if len(optimizer.param_groups) != self.num_groups:  # add_param_group since the last step
            self.cover(optimizer)
        # Fused optimizers under GradScaler get still-scaled gradients plus
        # `optimizer.grad_scale` (S) and unscale inside their kernel.
        self.normalize_(getattr(optimizer, "grad_scale", None))

    def cover(self, optimizer: torch.optim.Optimizer) -> None:
        """Make the plan cover every trainable parameter of ``optimizer``'s param groups."""
        params = _trainable(optimizer)
        covered = {id(p) for p in self.plan.params}
        if {id(p) for p in params} != covered:
            if self.replan is None:
                raise ValueError("the optimizer's parameters are not the block plan's (a param "
                                 "group added after block_normalize with a ready BlockPlan?); "
                                 "plan the blocks over every parameter")
            self.plan = self.replan(params)
        self.num_groups = len(optimizer.param_groups)

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
    model: nn.Module | None = None,
    *,
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
    place: the ``p.grad`` objects stay the caller's. These five keywords are the one
    definition of the normalization's settings (``SETTINGS``): the ``bng`` factories and the
    suite's ``optim.normalize`` config node pass them here.

    Args:
        optimizer: any ``torch.optim.Optimizer``; its parameters must all lie in some block.
        model: the module that defines ``"layer"``/``"conv_bn"`` blocks (or ``None`` with a
            dict / ``"param"`` / ``"global"`` spec, which then uses the optimizer's
            parameters).
        mode: ``"ng"``, ``"adap"``, ``"clip"`` or ``"none"``.
        blocks: ``"layer"``, ``"conv_bn"``, ``"child"``, ``"param"``, ``"global"``, a dict of name ->
            parameters, or a ready :class:`bng.blocks.BlockPlan` over exactly the optimizer's
            parameters (used as it is).
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
    params = _trainable(optimizer)
    if not params:
        raise ValueError("the optimizer has no parameters")
    replan = None
    if isinstance(blocks, BlockPlan):
        plan = blocks
    else:
        module = model if isinstance(model, nn.Module) else None

        def replan(params: list[Tensor]) -> BlockPlan:
            return plan_blocks(module, blocks, params=params, norm_dtype=norm_dtype)

        plan = replan(params)
    normalizer = BlockNormalizer(plan, mode, alpha=alpha, threshold=threshold, replan=replan)
    normalizer.cover(optimizer)
    normalizer.handle = optimizer.register_step_pre_hook(normalizer)
    optimizer.block_normalizer = normalizer
    return optimizer


# The normalization's settings, named once: block_normalize's keyword-only parameters.
SETTINGS: tuple[str, ...] = tuple(
    name for name, parameter in inspect.signature(block_normalize).parameters.items()
    if parameter.kind is inspect.Parameter.KEYWORD_ONLY)


def _trainable(optimizer: torch.optim.Optimizer) -> list[Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]


def block_grad_norms(optimizer: torch.optim.Optimizer) -> dict[str, Tensor]:
    """Each block's gradient norm at the optimizer's last step, before normalization.

    ``{block name: 0-d tensor on the device}``, in block order; empty before the first step.
    Reading the values (``.item()``) is the caller's business. The same norms as one (B,)
    tensor, for a loop that accumulates them: ``optimizer.block_normalizer.last_norms``.
    """
    normalizer = getattr(optimizer, "block_normalizer", None)
    if normalizer is None:
        raise ValueError("optimizer was not built by bng (no block normalizer attached); "
                         "bng.block_normalize(optimizer, model, mode='none') records its norms")
    if normalizer.last_norms is None:
        return {}
    return dict(zip(normalizer.plan.names, normalizer.last_norms.unbind(0), strict=True))


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
