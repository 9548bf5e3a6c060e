"""AdaGradBNG (the appendix's Algorithm 2): the literal rule, its pure function, the convex
rate, and the optimizer built over a model as bng.AdamNG is."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import bng
from bng.adagradbng import AdaGradBNGOptimizer
from bng.functional import adagrad_bng_, normalize_blocks_
from bng_helpers import MixedDtype, assert_same_params, loss_of, train, twin


def _adagradbng(model: nn.Module, norm_dtype: str | None = None, **kwargs) -> torch.optim.Optimizer:
    return bng.AdaGradBNG(model, norm_dtype=norm_dtype, **kwargs)


def _literal_algorithm_2(blocks: dict, sums: dict, lr: float, delta: float) -> None:
    """One step written as the algorithm reads: g = F'/‖F'‖, s = ‖g_{1:t}‖, τ = η‖F'‖/(δ+s)."""
    with torch.no_grad():
        for params in blocks.values():
            params = [p for p in params if p.grad is not None]
            raw_norm = sum(p.grad.double().pow(2).sum() for p in params) ** 0.5
            for p in params:
                g = p.grad / raw_norm if raw_norm > 0 else torch.zeros_like(p.grad)
                sums[p] = sums.get(p, torch.zeros_like(p)) + g * g
                tau = lr * raw_norm / (delta + sums[p].sqrt())
                p.sub_(tau * g)


def test_equals_the_literal_algorithm() -> None:
    torch.manual_seed(3)
    model = MixedDtype()
    ours, theirs = twin(model), twin(model)
    opt = _adagradbng(ours, lr=0.05, delta=1e-3)
    blocks, sums = bng.layer_blocks(theirs), {}
    plain = torch.optim.SGD([p for p in theirs.parameters() if p.requires_grad], lr=0.0)
    train(ours, opt, 20)
    train(theirs, plain, 20, before_step=lambda: _literal_algorithm_2(blocks, sums, 0.05, 1e-3))
    assert_same_params(ours, theirs)
    assert set(bng.block_grad_norms(opt)) == set(blocks)


def test_differs_from_plain_adagrad() -> None:
    # Fails if the accumulator were fed raw gradients (that is torch's Adagrad).
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 1))
    ours, theirs = twin(model), twin(model)
    x = torch.randn(16, 4)
    for m, opt in ((ours, _adagradbng(ours, lr=0.1, delta=1e-10)),
                   (theirs, torch.optim.Adagrad(theirs.parameters(), lr=0.1, eps=1e-10))):
        for _ in range(3):
            opt.zero_grad()
            (10 * m(x).square().mean()).backward()
            opt.step()
    assert not torch.allclose(ours[0].weight, theirs[0].weight, atol=1e-4)


def _logistic_problem() -> tuple[torch.Tensor, torch.Tensor, float]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 5, generator=g, dtype=torch.float64)
    w_true = torch.randn(5, generator=g, dtype=torch.float64)
    y = (torch.rand(200, generator=g, dtype=torch.float64) < torch.sigmoid(x @ w_true)).double()
    w = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    solver = torch.optim.LBFGS([w], lr=1, max_iter=500, tolerance_grad=1e-14,
                               tolerance_change=1e-16, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        solver.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(x @ w, y)
        loss.backward()
        return loss

    solver.step(closure)
    return x, y, float(closure().detach())


def _averaged_gap(x: torch.Tensor, y: torch.Tensor, optimum: float, steps: int) -> float:
    model = nn.Linear(5, 1).double()
    nn.init.zeros_(model.weight), nn.init.zeros_(model.bias)
    opt = _adagradbng(model, lr=0.5)
    average = [torch.zeros_like(p) for p in model.parameters()]
    g = torch.Generator().manual_seed(1)
    for t in range(steps):
        batch = torch.randint(0, len(x), (20,), generator=g)  # stochastic gradients
        opt.zero_grad()
        nn.functional.binary_cross_entropy_with_logits(model(x[batch]).squeeze(1), y[batch]).backward()
        opt.step()
        with torch.no_grad():
            for a, p in zip(average, model.parameters(), strict=True):
                a.add_(p - a, alpha=1 / (t + 1))
    logits = x @ average[0].squeeze(0) + average[1]
    return float(nn.functional.binary_cross_entropy_with_logits(logits, y)) - optimum


def test_convex_averaged_iterate_rate_is_at_least_one_over_sqrt_t() -> None:
    x, y, optimum = _logistic_problem()
    short, long = _averaged_gap(x, y, optimum, 100), _averaged_gap(x, y, optimum, 1600)
    assert 0 <= long < short
    # O(1/√T): 16x the steps must at least quarter the gap
    assert long <= short * (100 / 1600) ** 0.5, (short, long)


def test_rejects_bad_arguments_when_built() -> None:
    with pytest.raises(ValueError, match="delta"):
        bng.AdaGradBNG(nn.Linear(2, 2), delta=0.0)
    with pytest.raises(ValueError, match="empty"):
        bng.AdaGradBNG(nn.ReLU())
    for mode in ("none", "clip", "adap"):       # Algorithm 2 is defined on normalized gradients
        with pytest.raises(ValueError, match="its mode is 'ng'"):
            bng.AdaGradBNG(nn.Linear(2, 2), mode=mode)
    with pytest.raises(TypeError, match="bng.AdaGradBNG"):
        AdaGradBNGOptimizer(nn.Linear(2, 2))
    model = nn.Linear(2, 2)
    model(torch.ones(1, 2)).sum().backward()
    for opt in (AdaGradBNGOptimizer(model.parameters()),   # no normalization: not Algorithm 2
                bng.block_normalize(AdaGradBNGOptimizer(model.parameters()), model, mode="clip")):
        with pytest.raises(ValueError, match="mode 'ng'"):
            opt.step()


def test_is_built_as_adamng_is() -> None:
    """A torch optimizer over the model's trainable parameters, hooked in mode ng on its layers."""
    model = MixedDtype()
    opt = bng.AdaGradBNG(model, lr=0.02, delta=1e-6)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert isinstance(opt, torch.optim.Optimizer)
    assert [id(p) for p in opt.param_groups[0]["params"]] == [id(p) for p in trainable]
    assert (opt.defaults["lr"], opt.defaults["delta"]) == (0.02, 1e-6)
    assert opt.block_normalizer.mode == "ng"
    assert opt.block_normalizer.plan.names == bng.plan_blocks(model).names


def test_every_param_group_steps_with_its_own_lr_and_delta() -> None:
    """Two groups with different lr and delta equal two optimizers, one per group."""
    torch.manual_seed(0)
    model = MixedDtype()
    ours, theirs = twin(model), twin(model)
    first = [*ours.first.parameters(), *ours.last.parameters()]   # whole layers: same blocks
    rest = [p for p in ours.parameters() if p.requires_grad and all(p is not q for q in first)]
    grouped = bng.block_normalize(AdaGradBNGOptimizer(
        [{"params": first}, {"params": rest, "lr": 0.2, "delta": 1e-2}], lr=0.05, delta=1e-3),
        ours)
    names = {id(p): n for n, p in theirs.named_parameters()}
    firsts = {"first.weight", "first.bias", "last.weight", "last.bias"}
    split = [[p for p in theirs.parameters() if p.requires_grad and (names[id(p)] in firsts) == f]
             for f in (True, False)]
    singles = [bng.block_normalize(AdaGradBNGOptimizer(split[0], lr=0.05, delta=1e-3), theirs),
               bng.block_normalize(AdaGradBNGOptimizer(split[1], lr=0.2, delta=1e-2), theirs)]

    train(ours, grouped, 5)
    for step in range(5):
        theirs.zero_grad()
        loss_of(theirs, step).backward()
        for opt in singles:
            opt.step()
    assert_same_params(ours, theirs)


def test_norm_dtype_float64_keeps_tiny_gradients_in_the_accumulator() -> None:
    """Entries of 1e-30: in float32 the block norm reads 0, g_t = 0 and s_t stays 0; with
    float64 norms g_t is the unit-norm direction and s_t grows by its squares."""
    sums = {}
    for norm_dtype in (None, "float64"):
        torch.manual_seed(0)
        model = nn.Linear(4, 3)
        opt = _adagradbng(model, lr=0.1, norm_dtype=norm_dtype)
        for p in model.parameters():
            p.grad = torch.full_like(p, 1e-30)
        opt.step()
        sums[norm_dtype] = sum(float(opt.state[p]["sum"].sum()) for p in model.parameters())
    assert sums[None] == 0.0
    assert sums["float64"] == pytest.approx(1.0, rel=1e-5)  # Σ g² over one unit-norm block


def _literal_steps(blocks: list[list[torch.Tensor]], grads: list[list[list[torch.Tensor]]],
                   lr: float, delta: float) -> None:
    """Algorithm 2 written out entry by entry in float64 (lines 3-7), over several steps."""
    sums = [[torch.zeros_like(p) for p in block] for block in blocks]
    for step in grads:
        for b, block in enumerate(blocks):
            raw = sum(float(g.double().square().sum()) for g in step[b]) ** 0.5   # ‖F'_i‖₂
            for k, p in enumerate(block):
                g = step[b][k] / raw if raw > 0 else torch.zeros_like(step[b][k])  # g_t^i
                sums[b][k] += g * g                                              # (s_t,j)²
                tau = lr * raw / (delta + sums[b][k].sqrt())                     # τ_t^i
                p -= tau * g                                                     # line 7


@settings(max_examples=25, deadline=None)
@given(shapes=st.lists(st.lists(st.integers(1, 4), min_size=1, max_size=3), min_size=1,
                       max_size=3),
       steps=st.integers(1, 4), lr=st.floats(1e-3, 1.0), delta=st.floats(1e-8, 1e-1),
       seed=st.integers(0, 2**16))
def test_the_pure_function_equals_algorithm_2_as_written(shapes, steps, lr, delta, seed):
    """adagrad_bng_ on the ng-normalized gradients equals the literal loop, block by block."""
    generator = torch.Generator().manual_seed(seed)
    blocks = [[torch.randn(n, generator=generator, dtype=torch.float64).requires_grad_()
               for n in block] for block in shapes]
    grads = [[[torch.randn(n, generator=generator, dtype=torch.float64) for n in block]
              for block in shapes] for _ in range(steps)]
    expected = [[p.detach().clone() for p in block] for block in blocks]
    _literal_steps(expected, grads, lr, delta)
    plan = bng.plan_blocks(None, {f"b{i}": block for i, block in enumerate(blocks)})
    params = plan.params
    sums = [torch.zeros_like(p) for p in params]
    where = {id(p): (b, k) for b, block in enumerate(blocks) for k, p in enumerate(block)}
    for step in grads:
        current = [step[where[id(p)][0]][where[id(p)][1]].clone() for p in params]
        with torch.no_grad():
            norms = normalize_blocks_(current, plan.index, "ng")
            adagrad_bng_(params, current, sums, norms, plan.index, lr=[lr] * len(params),
                         delta=[delta] * len(params))
    for block, wanted in zip(blocks, expected, strict=True):
        for p, q in zip(block, wanted, strict=True):
            torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12)
