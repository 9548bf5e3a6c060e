"""The block-normalizing hook: reference, property, equivalence and edge cases."""

import itertools
import math

import pytest
import torch
from torch import nn

import bng
from bng.reference import normalize_blocks_reference_
from bng_helpers import (
    MixedDtype,
    SmallCNN,
    TinyLM,
    assert_same_params,
    distance,
    loss_of,
    mlp18,
    train,
    twin,
)

BASES = {
    "sgdm": (torch.optim.SGD, {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3}),
    "adam": (torch.optim.Adam, {"lr": 1e-2, "foreach": True}),
    "adagrad": (torch.optim.Adagrad, {"lr": 1e-2, "foreach": True}),
    "rmsprop": (torch.optim.RMSprop, {"lr": 1e-3, "foreach": True}),
}


@pytest.mark.parametrize("base", list(BASES))
def test_mode_none_is_torch_exactly(base: str) -> None:
    cls, kwargs = BASES[base]
    torch.manual_seed(0)
    model = mlp18()
    ours, theirs = twin(model), twin(model)
    opt = bng.block_normalize(cls(ours.parameters(), **kwargs), ours, mode="none")
    assert type(opt) is cls
    train(ours, opt, 5)
    train(theirs, cls(theirs.parameters(), **kwargs), 5)
    assert_same_params(ours, theirs, exact=True)
    norms = bng.block_grad_norms(opt)
    assert len(norms) == 17 and all(float(n) > 0 for n in norms.values())


def test_removed_hook_is_torch_exactly() -> None:
    torch.manual_seed(0)
    model = mlp18()
    ours, theirs = twin(model), twin(model)
    opt = bng.SGDMNG(ours, lr=0.1, momentum=0.9)
    opt.block_normalizer.handle.remove()
    train(ours, opt, 3)
    train(theirs, torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.9), 3)
    assert_same_params(ours, theirs, exact=True)


@pytest.mark.parametrize("make", [mlp18, SmallCNN, TinyLM], ids=["mlp", "cnn", "lstm"])
def test_plain_sgd_ng_moves_every_block_by_lr(make: type) -> None:
    torch.manual_seed(0)
    model, lr = make(), 0.037
    opt = bng.SGDMNG(model, lr=lr, momentum=0.0)
    blocks = bng.layer_blocks(model)
    for step in range(2):
        before = {n: [p.detach().clone() for p in ps] for n, ps in blocks.items()}
        train(model, opt, 1, first_step=step)
        for name, params in blocks.items():
            moved = distance(params, before[name])
            assert moved == pytest.approx(lr, abs=1e-6), name


def test_ng_moves_by_lr_not_grad_norm() -> None:
    # Fails if the normalization is skipped: grads are scaled up 1000x here.
    torch.manual_seed(0)
    model = mlp18()
    opt = bng.SGDMNG(model, lr=0.01, momentum=0.0, blocks="global")
    before = [p.detach().clone() for p in model.parameters()]
    opt.zero_grad()
    (1000 * loss_of(model, 0)).backward()
    opt.step()
    moved = distance(list(model.parameters()), before)
    assert moved == pytest.approx(0.01, rel=1e-5)


@pytest.mark.parametrize(
    ("mode", "base"), list(itertools.product(["ng", "adap", "clip", "none"], list(BASES)))
)
def test_vectorized_equals_per_block_loop(mode: str, base: str) -> None:
    cls, kwargs = BASES[base]
    torch.manual_seed(1)
    model = MixedDtype()
    ours, theirs = twin(model), twin(model)
    options = {"alpha": 0.3, "threshold": 0.05}
    trainable = [p for p in ours.parameters() if p.requires_grad]
    opt = bng.block_normalize(cls(trainable, **kwargs), ours, mode=mode, **options)
    reference = cls([p for p in theirs.parameters() if p.requires_grad], **kwargs)
    blocks = bng.layer_blocks(theirs)
    assert "root" in blocks and {p.dtype for p in blocks["root"]} == {torch.float32, torch.float64}
    train(ours, opt, 20)
    train(theirs, reference, 20, before_step=lambda: normalize_blocks_reference_(blocks, mode, **options))
    assert_same_params(ours, theirs)
    assert ours.unused.weight.grad is None and torch.equal(ours.unused.weight, theirs.unused.weight)


def test_clip_only_shrinks_large_blocks() -> None:
    torch.manual_seed(0)
    model = mlp18()
    opt = bng.SGDMNG(model, lr=0.1, mode="clip", threshold=0.02, blocks="param")
    loss_of(model, 0).backward()
    raw = {n: p.grad.norm().item() for n, p in model.named_parameters()}
    opt.step()
    for name, p in model.named_parameters():
        assert p.grad.norm().item() == pytest.approx(min(raw[name], 0.02), rel=1e-5)


@pytest.mark.parametrize("mode", ["ng", "adap", "clip", "none"])
def test_zero_gradients_and_zero_weights_stay_finite(mode: str) -> None:
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2))
    nn.init.zeros_(model[0].weight), nn.init.zeros_(model[0].bias)
    opt = bng.SGDMNG(model, lr=0.1, mode=mode)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    model[0].bias.grad = torch.ones(3)  # zero weights, nonzero gradient
    opt.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert all(torch.isfinite(n) for n in bng.block_grad_norms(opt).values())
    assert torch.equal(model[1].weight.grad, torch.zeros(2, 3))  # zero block stays zero
    if mode in ("ng", "adap"):
        # adap with all-zero weights takes ‖x‖ = 1: a step of α·g/‖g‖, so the layer moves
        expected = 1.0 if mode == "ng" else 0.02
        assert model[0].bias.grad.norm().item() == pytest.approx(expected, rel=1e-6)
        assert model[0].bias.abs().sum() > 0


def test_grad_none_parameters_are_skipped() -> None:
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2))
    opt = bng.AdamNG(model, lr=0.1)
    model[1].weight.grad = torch.ones(2, 3)
    opt.step()
    assert model[0].weight.grad is None and model[1].bias.grad is None
    assert model[1].weight.grad.norm().item() == pytest.approx(1.0)
    norms = bng.block_grad_norms(opt)
    assert norms["0"].item() == 0.0 and norms["1"].item() == pytest.approx(math.sqrt(6))


def test_changing_grad_none_pattern_matches_reference() -> None:
    # The plan caches its index per grad-None pattern; switching patterns between steps must
    # not reuse a stale one.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 2000), nn.BatchNorm1d(2000), nn.Linear(2000, 3))
    ours, theirs = twin(model), twin(model)
    opt = bng.SGDMNG(ours, lr=0.05, momentum=0.9)
    reference = torch.optim.SGD(theirs.parameters(), lr=0.05, momentum=0.9)
    blocks = bng.layer_blocks(theirs)
    patterns = [None, {"1.weight", "2.bias"}, None, {"0.weight", "0.bias"}, {"1.weight", "2.bias"}]
    for step, dropped in enumerate(patterns):
        for model_, optimizer in ((ours, opt), (theirs, reference)):
            optimizer.zero_grad()
            torch.manual_seed(step)
            model_(torch.randn(8, 4)).square().mean().backward()
            for name, p in model_.named_parameters():
                if dropped and name in dropped:
                    p.grad = None
        expected = normalize_blocks_reference_(blocks, "ng")
        reference.step()
        opt.step()
        got = bng.block_grad_norms(opt)
        assert list(got) == list(expected)
        for name, norm in expected.items():
            assert got[name].item() == pytest.approx(norm, rel=1e-5)
        assert_same_params(ours, theirs)


def test_vanishing_gradients_need_float64_norms() -> None:
    """Entries of 1e-30 square to 0 in float32: the block norm reads 0 and the layer is not
    moved. With norm_dtype="float64" the block is normalized like any other; entries of 1e-42
    (float32 subnormals) still give a finite step no longer than lr."""

    def steps(norm_dtype, value: float) -> float:
        torch.manual_seed(0)
        model = nn.Linear(10, 10)
        before = [p.detach().clone() for p in model.parameters()]
        opt = bng.SGDMNG(model, lr=0.1, momentum=0.0, norm_dtype=norm_dtype)
        for p in model.parameters():
            p.grad = torch.full_like(p, value)
        for _ in range(3):
            for p in model.parameters():
                p.grad.fill_(value)
            opt.step()
        assert all(torch.isfinite(p).all() for p in model.parameters())
        pairs = zip(model.parameters(), before, strict=True)
        moved = torch.cat([(p.detach() - b).flatten() for p, b in pairs])
        return float(moved.norm())

    assert steps(None, 1e-30) == 0.0                                 # the float32 limit
    assert steps("float64", 1e-30) == pytest.approx(0.3, rel=1e-5)   # 3 steps of lr 0.1
    assert 0.0 < steps(torch.float64, 1e-42) <= 0.3 * (1 + 1e-5)


def test_norm_dtype_must_be_a_wide_enough_float() -> None:
    with pytest.raises(ValueError, match="floating dtype"):
        bng.AdamNG(nn.Linear(2, 2), norm_dtype="int64")
    with pytest.raises(ValueError, match="narrower"):
        bng.AdamNG(nn.Linear(2, 2).double(), norm_dtype=torch.float32)
