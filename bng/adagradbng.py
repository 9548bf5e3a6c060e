"""AdaGradBNG: AdaGrad with block-normalized gradient (the paper's appendix, Algorithm 2).

Paper: Yu et al., "Block-normalized gradient method: an empirical study for training deep
neural network", arXiv:1707.04822, Algorithm 2 and its convex O(1/√T) theorem.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from bng.blocks import BlockSpec, plan_blocks
from bng.functional import tensor_factors
from bng.normalize import block_normalize


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
    test checks it against the literal ``τ ∘ g``. δ sits outside the
    square root, as in the algorithm (torch's Adagrad calls it ``eps``). A block whose
    gradient is zero contributes nothing to ``s`` and does not move.

    Built by composition: the same normalizing hook as every ``bng`` optimizer (mode
    ``"ng"``) turns ``p.grad`` into ``g_t`` and records ``‖F'_i‖₂``, then this step applies
    the rule above. A ``closure`` passed to :meth:`step` is evaluated first and its fresh
    gradients are normalized then.

    Args:
        model: module (or parameter iterable with ``blocks="param"``/``"global"``/dict).
        lr: η.
        delta: δ > 0.
        blocks: ``"layer"`` (default), ``"param"``, ``"global"`` or a dict.
        norm_dtype: the dtype ``‖F'_i‖₂`` accumulates in (see :func:`bng.block_normalize`).

    :func:`bng.block_grad_norms` and :func:`bng.last_block_norms` return this optimizer's
    ``‖F'_i‖₂`` of the last step, as for every ``bng`` optimizer.
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
        plan = plan_blocks(model, blocks, norm_dtype=norm_dtype)
        super().__init__([p for block in plan.blocks.values() for p in block],
                         {"lr": lr, "delta": delta})
        block_normalize(self, mode="ng", blocks=plan)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        normalizer = self.block_normalizer
        if closure is not None:  # the pre-hook saw the gradients from before the closure
            with torch.enable_grad():
                loss = closure()
            normalizer.normalize_()
        gathered = normalizer.plan.gather()
        if gathered is None:
            return loss
        params, grads, index = gathered  # grads hold g_t = F'_i / ‖F'_i‖ (the hook's work)
        raw_norms = normalizer.last_norms  # (B,) ‖F'_i‖₂
        options = self.param_groups[0]
        for group in index.groups:
            here = slice(group.start, group.stop)
            normalized, weights = grads[here], params[here]
            sums = [self._sum_of_squares(p) for p in weights]
            torch._foreach_addcmul_(sums, normalized, normalized)  # Σ_u g_u,j²
            denominators = torch._foreach_sqrt(sums)  # s_t,j
            torch._foreach_add_(denominators, options["delta"])  # δ + s_t,j
            # τ ∘ g = η ‖F'_i‖ g / (δ + s)
            steps = torch._foreach_mul(normalized, tensor_factors(raw_norms, group))
            torch._foreach_addcdiv_(weights, steps, denominators, value=-options["lr"])
        return loss

    def _sum_of_squares(self, p: Tensor) -> Tensor:
        state = self.state[p]
        if "sum" not in state:
            state["sum"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state["sum"]
