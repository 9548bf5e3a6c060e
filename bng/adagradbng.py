"""AdaGradBNG: AdaGrad with block-normalized gradient (the paper's appendix, Algorithm 2).

Paper: Yu et al., "Block-normalized gradient method: an empirical study for training deep
neural network", arXiv:1707.04822, Algorithm 2 and its convex O(1/√T) theorem.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from bng.blocks import BlockPlan, BlockSpec, resolve_blocks
from bng.functional import block_norms, block_scales, scale_blocks_
from bng.normalize import _ATTR, BlockNormalizer


class AdaGradBNG(torch.optim.Optimizer):
    r"""AdaGrad with block-normalized gradient (Algorithm 2 of arXiv:1707.04822).

    At step t, with raw gradient ``F'_i`` of block i and coordinate j in block i:

    - ``g_t,i = F'_i / ‖F'_i‖₂``                       (block-normalized gradient)
    - ``s_t,j = ‖g_{1:t,j}‖₂ = sqrt(Σ_{u≤t} g_u,j²)``  (per coordinate, normalized grads)
    - ``τ_t,j = η · ‖F'_i‖₂ · (δ + s_t,j)^{-1}``
    - ``x ← x − τ_t ∘ g_t``

    Reading implemented, exactly as written: ``‖F'_i‖₂`` is the current step's raw gradient
    norm of the coordinate's block and ``s`` accumulates the *normalized* gradients, so the
    step is ``τ ∘ g = η · F'_i / (δ + s)``: AdaGrad's direction and per-coordinate
    adaptivity, with an accumulator that every block feeds at the same unit rate whatever
    its gradient scale. The code computes this last, algebraically identical form (one
    ``addcdiv``); a test checks it against the literal ``τ ∘ g``. δ sits outside the
    square root, as in the algorithm (torch's Adagrad calls it ``eps``). A block whose
    gradient is zero contributes nothing to ``s`` and does not move.

    Args:
        model: module (or parameter iterable with ``blocks="param"``/``"global"``/dict).
        lr: η.
        delta: δ > 0.
        blocks: ``"layer"`` (default), ``"param"``, ``"global"`` or a dict.
        norm_dtype: the dtype ``‖F'_i‖₂`` accumulates in (see :func:`bng.block_normalize`).

    :func:`bng.block_grad_norms` returns this optimizer's ``‖F'_i‖₂`` of the last step.
    """

    def __init__(
        self,
        model: nn.Module | Iterable[Tensor],
        lr: float = 0.01,
        delta: float = 1e-8,
        blocks: BlockSpec = "layer",
        norm_dtype: torch.dtype | str | None = None,
    ) -> None:
        if not lr >= 0:
            raise ValueError(f"invalid lr {lr}")
        if not delta > 0:
            raise ValueError(f"delta must be > 0, got {delta}")
        if isinstance(model, nn.Module):
            resolved = resolve_blocks(model, blocks)
        else:
            resolved = resolve_blocks(None, blocks, params=list(model))
        plan = BlockPlan(resolved, norm_dtype=norm_dtype)
        super().__init__(plan.params, {"lr": lr, "delta": delta})
        # The normalizer is reused for its block plan and norm bookkeeping only (mode "none").
        setattr(self, _ATTR, BlockNormalizer(plan, "none"))

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        normalizer: BlockNormalizer = getattr(self, _ATTR)
        plan = normalizer.plan
        group_options = self.param_groups[0]
        present = tuple(k for k, p in enumerate(plan.params) if p.grad is not None)
        if not present:
            return loss
        groups = plan.groups(present)
        grads = [[p.grad for p in g.params] for g in groups]
        indexed = [(gs, g.block_index) for gs, g in zip(grads, groups, strict=True)]
        # (B,) ‖F'_i‖₂ over all devices/dtypes of each block
        norms = block_norms(indexed, plan.num_blocks, device=plan.device, dtype=plan.norm_dtype)
        normalizer.last_norms = norms
        inverse = block_scales(norms, "ng")  # (B,) 1/‖F'_i‖, 0 for a zero block
        for group, group_grads in zip(groups, grads, strict=True):
            sums = [self._sum_of_squares(p) for p in group.params]
            normalized = torch._foreach_mul(group_grads, 1.0)  # copies; F' stays untouched
            scale_blocks_([(normalized, group.block_index)], inverse)  # g_t
            torch._foreach_addcmul_(sums, normalized, normalized)  # Σ_u g_u,j²
            denominators = torch._foreach_sqrt(sums)  # s_t,j
            torch._foreach_add_(denominators, group_options["delta"])  # δ + s_t,j
            # τ ∘ g = η ‖F'_i‖ g / (δ + s) = η F'_i / (δ + s)
            torch._foreach_addcdiv_(
                group.params, group_grads, denominators, value=-group_options["lr"]
            )
        return loss

    def _sum_of_squares(self, p: Tensor) -> Tensor:
        state = self.state[p]
        if "sum" not in state:
            state["sum"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state["sum"]
