"""AdaGradBNG: AdaGrad with block-normalized gradient (the paper's appendix, Algorithm 2).

Paper: Yu et al., "Block-normalized gradient method: an empirical study for training deep
neural network", arXiv:1707.04822, Algorithm 2 and its convex O(1/√T) theorem.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from bng.functional import tensor_factors


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
    its gradient scale. The code computes ``η · ‖F'_i‖ · g / (δ + s)`` (one ``addcdiv``); a
    test checks it against the literal ``τ ∘ g``. δ sits outside the square root, as in the
    algorithm (torch's Adagrad calls it ``eps``). A block whose gradient is zero contributes
    nothing to ``s`` and does not move.

    Built by composition, as every ``bng`` optimizer: the normalizing hook of
    :func:`bng.block_normalize` (mode ``"ng"``, its blocks being Algorithm 2's) turns
    ``p.grad`` into ``g_t`` and records ``‖F'_i‖₂``; this step applies the rule above, with
    each param group's ``lr`` and ``delta``::

        opt = bng.block_normalize(bng.AdaGradBNG(model.parameters(), lr=0.01), model)

    A step without that hook raises. A ``closure`` passed to :meth:`step` is evaluated first
    and its fresh gradients are normalized then. ``bng.block_grad_norms(opt)`` returns the
    ``‖F'_i‖₂`` of the last step.

    Args:
        params: parameters or param groups, as for any torch optimizer.
        lr: η.
        delta: δ > 0.
    """

    def __init__(self, params: Iterable[Tensor] | Iterable[dict[str, Any]], lr: float = 0.01,
                 delta: float = 1e-8) -> None:
        if isinstance(params, nn.Module):
            raise TypeError("AdaGradBNG takes parameters, as any torch optimizer: "
                            "bng.block_normalize(bng.AdaGradBNG(model.parameters()), model)")
        if not lr >= 0:
            raise ValueError(f"invalid lr {lr}")
        if not delta > 0:
            raise ValueError(f"delta must be > 0, got {delta}")
        super().__init__(params, {"lr": lr, "delta": delta})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        normalizer = getattr(self, "block_normalizer", None)
        if normalizer is None or normalizer.mode != "ng":
            raise ValueError("AdaGradBNG steps on block-normalized gradients: apply "
                             "bng.block_normalize(optimizer, model) with mode 'ng' first")
        loss = None
        if closure is not None:  # the pre-hook saw the gradients from before the closure
            with torch.enable_grad():
                loss = closure()
            normalizer.normalize_()
        gathered = normalizer.plan.gather()
        if gathered is None:
            return loss
        params, grads, index = gathered  # grads hold g_t = F'_i / ‖F'_i‖ (the hook's work)
        raw_norms = normalizer.last_norms  # (B,) ‖F'_i‖₂
        group_of = {id(p): group for group in self.param_groups for p in group["params"]}
        for group in index.groups:
            here = slice(group.start, group.stop)
            normalized, weights = grads[here], params[here]
            options = [group_of[id(p)] for p in weights]
            sums = [self._sum_of_squares(p) for p in weights]
            torch._foreach_addcmul_(sums, normalized, normalized)  # Σ_u g_u,j²
            denominators = torch._foreach_sqrt(sums)  # s_t,j
            torch._foreach_add_(denominators, [o["delta"] for o in options])  # δ + s_t,j
            # τ ∘ g = η ‖F'_i‖ g / (δ + s)
            steps = torch._foreach_mul(normalized,
                                       tensor_factors(raw_norms, group, weights[0].dtype))
            torch._foreach_addcdiv_(weights, steps, denominators, [-o["lr"] for o in options])
        return loss

    def _sum_of_squares(self, p: Tensor) -> Tensor:
        state = self.state[p]
        if "sum" not in state:
            state["sum"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state["sum"]
