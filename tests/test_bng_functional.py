"""The functional core against the plain per-block loop, for every mode and dtype; the
public helpers built on it; and what the hook must leave alone."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import bng
from bng.functional import (
    SMALL_NUMEL,
    block_index,
    block_norms,
    is_small,
    normalize_blocks_,
    processing_order,
)
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
    mixed = [torch.zeros(3), torch.zeros(2, 2), torch.zeros(SMALL_NUMEL + 1), torch.zeros(())]
    assert processing_order(mixed) == [1, 2, 3, 0]  # in a group, small 1-D tensors come last
    with pytest.raises(ValueError, match="processing_order"):
        block_index(mixed, [0, 0, 0, 0], 1, device=torch.device("cpu"), dtype=torch.float32)


def test_small_means_one_dimension_and_at_most_the_threshold() -> None:
    assert is_small(torch.zeros(SMALL_NUMEL)) and is_small(torch.zeros(1))
    assert not is_small(torch.zeros(SMALL_NUMEL + 1))
    assert not is_small(torch.zeros(2, 2)) and not is_small(torch.zeros(()))


def test_a_resnets_batchnorm_tensors_take_the_concatenated_path() -> None:
    """Every 1-D tensor of a CIFAR-style network (BN affines, the classifier's bias) is summed
    through the one cat, so the per-tensor dispatch of the norms is paid by the kernels alone."""
    model = nn.Sequential(nn.Conv2d(3, 16, 3, bias=False), nn.BatchNorm2d(16),
                          nn.Conv2d(16, 64, 3, bias=False), nn.BatchNorm2d(64),
                          nn.Flatten(), nn.Linear(64, 10))
    (group,) = bng.plan_blocks(model, "param").index.groups
    assert (group.split - group.start, group.stop - group.split) == (3, 5)


SHAPES = st.sampled_from([(), (1,), (7,), (SMALL_NUMEL,), (SMALL_NUMEL + 1,), (3, 5), (2, 1, 3)])


@settings(max_examples=60, deadline=None)
@given(tensors=st.lists(st.tuples(SHAPES, st.sampled_from([torch.float32, torch.float64]),
                                  st.integers(0, 3), st.sampled_from([0.0, 1e-3, 1.0, 1e3])),
                        min_size=1, max_size=9),
       mode=st.sampled_from(["ng", "adap", "clip", "none"]), seed=st.integers(0, 2**16))
def test_foreach_matches_the_loop(tensors: list, mode: str, seed: int) -> None:
    """Any mix of shapes (0-d, short and long 1-D, matrices), dtypes, block assignments and
    gradient scales (zero included): the vectorized core gives the per-block loop's norms and
    gradients, as torch's test_foreach_matches_forloop does for its own foreach kernels."""
    g = torch.Generator().manual_seed(seed)
    ours: dict[str, list[nn.Parameter]] = {}
    theirs: dict[str, list[nn.Parameter]] = {}
    for shape, dtype, block, scale in tensors:
        weight = torch.randn(shape, generator=g, dtype=dtype)
        grad = scale * torch.randn(shape, generator=g, dtype=dtype)
        for blocks in (ours, theirs):
            p = nn.Parameter(weight.clone())
            p.grad = grad.clone()
            blocks.setdefault(f"b{block}", []).append(p)
    plan = bng.BlockPlan(ours)
    params, grads, index = plan.gather()
    norms = normalize_blocks_(grads, index, mode, params=params, alpha=0.3, threshold=0.5)
    expected = normalize_blocks_reference_(theirs, mode, alpha=0.3, threshold=0.5)
    tolerance = TOLERANCE[index.dtype]
    torch.testing.assert_close(norms.double(), torch.tensor(list(expected.values()),
                                                            dtype=torch.float64),
                               rtol=tolerance, atol=0.0)
    for name in ours:
        for p, q in zip(ours[name], theirs[name], strict=True):
            torch.testing.assert_close(p.grad, q.grad, rtol=TOLERANCE[p.dtype], atol=0.0)


def test_the_factor_workspace_carries_nothing_between_calls() -> None:
    """One index reused for gradients of another size and sign gives what a fresh index gives:
    the workspace's factors are all rewritten by each call."""
    blocks = _blocks(torch.float32)
    plan = bng.BlockPlan(blocks)
    params, grads, index = plan.gather()
    normalize_blocks_(grads, index, "adap", params=params)
    for p in params:
        p.grad = -7.0 * torch.rand_like(p)
    fresh = [p.grad.clone() for p in params]
    fresh_index = bng.BlockPlan(blocks).index
    reused_norms = normalize_blocks_([p.grad for p in params], index, "adap", params=params)
    fresh_norms = normalize_blocks_(fresh, fresh_index, "adap", params=params)
    assert torch.equal(reused_norms, fresh_norms)
    assert all(torch.equal(p.grad, f) for p, f in zip(params, fresh, strict=True))
    assert torch.equal(block_norms(fresh, index), block_norms(fresh, fresh_index))


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
