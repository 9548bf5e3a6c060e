"""The functional core against the plain per-block loop, for every mode and dtype; the
public helpers built on it; and what the hook must leave alone."""

import pytest
import torch
from torch import nn

import bng
from bng.functional import block_index, normalize_blocks_, processing_order
from bng.reference import normalize_blocks_reference_
from bng_helpers import SmallCNN, TinyLM, loss_of, mlp18, train

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
TOLERANCE = {torch.float16: 2e-3, torch.bfloat16: 1.6e-2, torch.float32: 1e-6,
             torch.float64: 1e-12}


def _blocks(dtype: torch.dtype) -> dict[str, list[nn.Parameter]]:
    """2-D, long 1-D and short 1-D tensors, a zero block, and a block that spans two dtypes."""
    g = torch.Generator().manual_seed(0)

    def param(*shape: int, scale: float = 1.0, kind: torch.dtype = dtype) -> nn.Parameter:
        p = nn.Parameter(torch.randn(*shape, generator=g).to(kind))
        p.grad = (scale * torch.randn(*shape, generator=g)).to(kind)
        return p

    zero = param(3, 4)
    zero.grad.zero_()
    return {
        "dense": [param(16, 8), param(8)],
        "wide": [param(3000, scale=0.01), param(5, 5)],
        "affine": [param(7), param(7, scale=100.0)],
        "zero": [zero],
        "mixed": [param(4, 4), param(4, kind=torch.float32)],
    }


@pytest.mark.parametrize("mode", ["ng", "adap", "clip", "none"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_functional_core_equals_the_per_block_loop(mode: str, dtype: torch.dtype) -> None:
    ours, theirs = _blocks(dtype), _blocks(dtype)
    options = {"alpha": 0.3, "threshold": 0.5}
    plan = bng.BlockPlan(ours)
    params, grads, index = plan.gather()
    norms = normalize_blocks_(grads, index, mode, params=params, **options)
    expected = normalize_blocks_reference_(theirs, mode, **options)
    assert norms.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    torch.testing.assert_close(norms.double(), torch.tensor(list(expected.values()), dtype=torch.float64),
                               rtol=TOLERANCE[dtype], atol=0.0)
    assert norms[plan.names.index("zero")] == 0
    for name in ours:
        for p, q in zip(ours[name], theirs[name], strict=True):
            assert p.grad.dtype == p.dtype
            torch.testing.assert_close(p.grad, q.grad, rtol=TOLERANCE[p.dtype], atol=0.0,
                                       msg=name)


def test_block_index_needs_the_processing_order() -> None:
    tensors = [torch.zeros(3), torch.zeros(4, 4, dtype=torch.float64), torch.zeros(2)]
    assert processing_order(tensors) == [0, 2, 1]  # one group per dtype, first seen first
    with pytest.raises(ValueError, match="processing_order"):
        block_index(tensors, [0, 1, 1], 2, device=torch.device("cpu"), dtype=torch.float64)


@pytest.mark.parametrize("make", [mlp18, SmallCNN, TinyLM], ids=["mlp", "cnn", "lstm"])
def test_gradient_tensors_stay_the_callers(make: type) -> None:
    """No public default replaces p.grad: the hook rescales the caller's own tensors."""
    torch.manual_seed(0)
    model = make()
    opt = bng.AdamNG(model, lr=1e-3)
    train(model, opt, 1, set_to_none=False)
    grads = [(p.grad, p.grad.data_ptr()) for p in model.parameters()]
    train(model, opt, 3, first_step=1, set_to_none=False)
    for p, (grad, address) in zip(model.parameters(), grads, strict=True):
        assert p.grad is grad and p.grad.data_ptr() == address


def test_grad_norms_measures_any_optimizer() -> None:
    """The per-layer diagnostics without a bng optimizer: a plan over the model's blocks."""
    torch.manual_seed(0)
    model = TinyLM()
    plan = bng.plan_blocks(model)
    assert plan.names == list(bng.layer_blocks(model))
    assert torch.equal(bng.grad_norms(plan), torch.zeros(len(plan.names)))  # no grads yet
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-3)
    opt.zero_grad()
    loss_of(model, 0).backward()
    measured = bng.grad_norms(plan)
    expected = normalize_blocks_reference_(bng.layer_blocks(model), "none")
    torch.testing.assert_close(measured.double(), torch.tensor(list(expected.values()), dtype=torch.float64))
    before = [p.grad.clone() for p in model.parameters()]
    opt.step()
    assert all(torch.equal(p.grad, b) for p, b in zip(model.parameters(), before, strict=True))


def test_a_plain_optimizer_records_norms_with_mode_none() -> None:
    torch.manual_seed(0)
    model = mlp18()
    opt = bng.block_normalize(torch.optim.RMSprop(model.parameters(), lr=1e-3), model,
                              mode="none")
    loss_of(model, 0).backward()
    expected = bng.grad_norms(opt.block_normalizer.plan)
    opt.step()
    assert torch.equal(opt.block_normalizer.last_norms, expected)
    with pytest.raises(TypeError, match="torch.optim.Optimizer"):
        bng.block_normalize(object(), model)


def test_adagradbng_reports_through_the_public_accessor() -> None:
    torch.manual_seed(0)
    model = mlp18()
    opt = bng.AdaGradBNG(model, lr=0.01)
    assert bng.block_grad_norms(opt) == {}
    loss_of(model, 0).backward()
    raw = bng.grad_norms(opt.block_normalizer.plan)
    opt.step()
    named = bng.block_grad_norms(opt)
    assert list(named) == list(bng.layer_blocks(model))
    assert torch.equal(torch.stack(list(named.values())), raw)


def test_adagradbng_closure_equals_a_plain_step() -> None:
    torch.manual_seed(0)
    plain, closured = mlp18(), mlp18()
    closured.load_state_dict(plain.state_dict())
    first, second = (bng.AdaGradBNG(m, lr=0.05)
                     for m in (plain, closured))
    for step in range(3):
        first.zero_grad()
        loss_of(plain, step).backward()
        first.step()

        def closure(step: int = step) -> torch.Tensor:
            second.zero_grad()
            loss = loss_of(closured, step)
            loss.backward()
            return loss

        second.step(closure)
    for p, q in zip(plain.parameters(), closured.parameters(), strict=True):
        torch.testing.assert_close(p, q)
