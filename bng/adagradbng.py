"""AdaGradBNG: AdaGrad with block-normalized gradient (the paper's appendix, Algorithm 2).

Paper: Yu et al., "Block-normalized gradient method: an empirical study for training deep
neural network", arXiv:1707.04822, Algorithm 2 and its convex O(1/√T) theorem.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from bng.functional import adagrad_bng_
from bng.optimizers import ModelOrParams, _compose


def AdaGradBNG(model: ModelOrParams, lr: float = 0.01, delta: float = 1e-8,  # noqa: N802
               **kwargs: Any) -> AdaGradBNGOptimizer:
    r"""AdaGrad with block-normalized gradient (Algorithm 2 of arXiv:1707.04822): a torch
    optimizer over the model's trainable parameters, with the normalizing hook in mode ``"ng"``.

    At step t, with raw gradient ``F'_i`` of block i and coordinate j in block i:

    - ``g_t,i = F'_i / ‖F'_i‖₂``                       (block-normalized gradient)
    - ``s_t,j = ‖g_{1:t,j}‖₂ = sqrt(Σ_{u≤t} g_u,j²)``  (per coordinate, normalized grads)
    - ``τ_t,j = η · ‖F'_i‖₂ · (δ + s_t,j)^{-1}``
    - ``x ← x − τ_t ∘ g_t``

    Read exactly as written: ``‖F'_i‖₂`` is the current step's raw gradient norm of the
    coordinate's block and ``s`` accumulates the *normalized* gradients, so the step is
    ``τ ∘ g = η · F'_i / (δ + s)``: AdaGrad's direction and per-coordinate adaptivity, with an
    accumulator that every block feeds at the same unit rate whatever its gradient scale. δ
    sits outside the square root, as in the algorithm (torch's Adagrad calls it ``eps``). A
    block whose gradient is zero contributes nothing to ``s`` and does not move. The math is
    :func:`bng.functional.adagrad_bng_`.

    Built as :func:`bng.AdamNG` is: ``bng.AdaGradBNG(model, lr=0.01)``. The hook of
    :func:`bng.block_normalize` turns ``p.grad`` into ``g_t`` and records ``‖F'_i‖₂``
    (``bng.block_grad_norms(opt)``); the optimizer's step applies the rule above with each
    param group's ``lr`` and ``delta``.

    Args:
        model: a module (its layers are Algorithm 2's blocks), or parameters with
            ``blocks="param"``/``"global"``/a dict.
        lr: η.
        delta: δ > 0.
        **kwargs: the normalization's settings but ``mode`` (``blocks``, ``norm_dtype``);
            ``mode`` may only be ``"ng"``, since the step is defined on normalized gradients.
    """
    mode = kwargs.pop("mode", "ng")
    if mode != "ng":
        raise ValueError(f"AdaGradBNG steps on block-normalized gradients: its mode is 'ng', "
                         f"got {mode!r}")
    return _compose(AdaGradBNGOptimizer, model, dict(kwargs, lr=lr, delta=delta, mode="ng"))


class AdaGradBNGOptimizer(torch.optim.Optimizer):
    """The torch optimizer that :func:`AdaGradBNG` returns: Algorithm 2's step on the gradients
    that its ``block_normalizer`` hook (mode ``"ng"``) has normalized. Build it through
    :func:`AdaGradBNG`; a step without that hook raises.

    A ``closure`` passed to :meth:`step` is evaluated first and its fresh gradients are
    normalized then.
    """

    def __init__(self, params: Iterable[Tensor] | Iterable[dict[str, Any]], lr: float = 0.01,
                 delta: float = 1e-8) -> None:
        if isinstance(params, nn.Module):
            raise TypeError("AdaGradBNGOptimizer takes parameters; build it over a model with "
                            "bng.AdaGradBNG(model, lr=...)")
        if not lr >= 0:
            raise ValueError(f"invalid lr {lr}")
        if not delta > 0:
            raise ValueError(f"delta must be > 0, got {delta}")
        super().__init__(params, {"lr": lr, "delta": delta})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        normalizer = getattr(self, "block_normalizer", None)
        if normalizer is None or normalizer.mode != "ng":
            raise ValueError("AdaGradBNG steps on block-normalized gradients (mode 'ng'): build "
                             "it with bng.AdaGradBNG(model, lr=...)")
        loss = None
        if closure is not None:  # the pre-hook saw the gradients from before the closure
            with torch.enable_grad():
                loss = closure()
            normalizer.normalize_()
        gathered = normalizer.plan.gather()
        if gathered is None:
            return loss
        params, grads, index = gathered  # grads hold g_t = F'_i / ‖F'_i‖ (the hook's work)
        group_of = {id(p): group for group in self.param_groups for p in group["params"]}
        options = [group_of[id(p)] for p in params]
        adagrad_bng_(params, grads, [self._sum_of_squares(p) for p in params],
                     normalizer.last_norms, index, lr=[o["lr"] for o in options],
                     delta=[o["delta"] for o in options])
        return loss

    def _sum_of_squares(self, p: Tensor) -> Tensor:
        state = self.state[p]
        if "sum" not in state:
            state["sum"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state["sum"]
