"""The returned optimizers are torch's own: round trips, schedulers, GradScaler, param groups."""

import io

import pytest
import torch
from torch import nn

import bng
from bng.reference import normalize_blocks_reference_
from bng_helpers import TinyLM, assert_same_params, distance, loss_of, mlp18, train, twin

FACTORIES = {
    "sgdmng": lambda m: bng.SGDMNG(m, lr=0.05, momentum=0.9, weight_decay=1e-4, mode="adap"),
    "adamng": lambda m: bng.AdamNG(m, lr=1e-2),
    "adagradng": lambda m: bng.AdaGradNG(m, lr=1e-2, mode="clip", threshold=0.1),
    "adagradbng": lambda m: bng.AdaGradBNG(m, lr=1e-2),
}


@pytest.mark.parametrize("name", list(FACTORIES))
def test_state_dict_round_trip_equals_never_stopping(name: str) -> None:
    torch.manual_seed(0)
    model = TinyLM()
    straight, resumed = twin(model), twin(model)
    train(straight, FACTORIES[name](straight), 6)

    first = FACTORIES[name](resumed)
    train(resumed, first, 3)
    buffer = io.BytesIO()
    torch.save({"model": resumed.state_dict(), "optim": first.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer)
    fresh = twin(model)
    fresh.load_state_dict(saved["model"])
    second = FACTORIES[name](fresh)
    second.load_state_dict(saved["optim"])
    train(fresh, second, 3, first_step=3)
    assert_same_params(straight, fresh, exact=True)


def test_scheduler_changes_the_effective_step() -> None:
    torch.manual_seed(0)
    model = mlp18()
    opt = bng.SGDMNG(model, lr=0.1, momentum=0.0, blocks="global")
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.1)
    for expected in (0.1, 0.01):
        before = [p.detach().clone() for p in model.parameters()]
        train(model, opt, 1)
        scheduler.step()
        assert distance(list(model.parameters()), before) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("fused", [False, True], ids=["unscale_first", "fused_grad_scale"])
@pytest.mark.parametrize("mode", ["ng", "clip"])
def test_grad_scaler_on_cpu_matches_unscaled_training(fused: bool, mode: str) -> None:
    # Fused Adam gets still-scaled gradients plus `optimizer.grad_scale`; the result must
    # equal training without any scaler.
    torch.manual_seed(0)
    model = mlp18()
    scaled, plain = twin(model), twin(model)
    kwargs = {"lr": 1e-2, "mode": mode, "threshold": 0.05, "fused": fused or None}
    opt = bng.AdamNG(scaled, **kwargs)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    for step in range(3):
        opt.zero_grad()
        scaler.scale(loss_of(scaled, step)).backward()
        scaler.step(opt)
        scaler.update()
    train(plain, bng.AdamNG(plain, **kwargs), 3)
    assert_same_params(scaled, plain)
    norms, reference = bng.block_grad_norms(opt), bng.layer_blocks(scaled)
    assert norms["0"].item() < 100  # unscaled norms are recorded
    assert set(norms) == set(reference)


def test_block_normalize_returns_the_users_own_optimizer() -> None:
    model = nn.Linear(3, 2)
    for cls in (torch.optim.RMSprop, torch.optim.AdamW):
        optimizer = cls(model.parameters(), lr=0.1)
        assert bng.block_normalize(optimizer, model, mode="clip") is optimizer
    with pytest.raises(ValueError, match="twice"):
        bng.block_normalize(bng.AdamNG(model), model)


def test_block_normalize_wraps_a_user_optimizer_with_param_groups() -> None:
    torch.manual_seed(0)
    model = mlp18()
    groups = [{"params": model[0].parameters(), "lr": 0.0}, {"params": model[2:].parameters()}]
    opt = bng.block_normalize(torch.optim.SGD(groups, lr=0.1), model, mode="ng")
    first = model[0].weight.detach().clone()
    before = [p.detach().clone() for p in model[2].parameters()]
    train(model, opt, 1)
    assert torch.equal(model[0].weight, first)  # lr 0 group untouched
    assert distance(list(model[2].parameters()), before) == pytest.approx(0.1, rel=1e-5)


def test_block_grad_norms_are_the_raw_gradients_norms_by_name() -> None:
    """What the hook records: each layer's norm of the gradient before the normalization,
    held to the plain per-block loop on a twin, under the layer's name."""
    torch.manual_seed(0)
    model = mlp18()
    theirs = twin(model)
    opt = bng.AdamNG(model, lr=1e-3)
    assert bng.block_grad_norms(opt) == {}
    loss_of(model, 0).backward()
    loss_of(theirs, 0).backward()
    opt.step()
    expected = normalize_blocks_reference_(bng.layer_blocks(theirs), "none")
    named = bng.block_grad_norms(opt)
    assert list(named) == list(expected)
    for name, norm in expected.items():
        assert named[name].item() == pytest.approx(norm, rel=1e-6), name
    assert max(expected.values()) > 1.5 * min(expected.values())   # the names matter
    with pytest.raises(ValueError, match="not built by bng"):
        bng.block_grad_norms(torch.optim.SGD(model.parameters(), lr=0.1))


def test_a_param_group_added_later_is_normalized_too() -> None:
    """add_param_group after block_normalize: the new layer joins the plan as its own block,
    so plain SGD moves it by exactly lr, like the others."""
    torch.manual_seed(0)
    model = mlp18()
    first_two = torch.optim.SGD(model[:4].parameters(), lr=0.1)
    opt = bng.block_normalize(first_two, model)        # the model defines the layers
    assert opt.block_normalizer.plan.names == ["0", "2"]
    opt.add_param_group({"params": list(model[4:].parameters()), "lr": 0.05})
    before = {name: [p.detach().clone() for p in params]
              for name, params in bng.layer_blocks(model).items()}
    train(model, opt, 1)
    assert opt.block_normalizer.plan.names == list(before)
    for name, params in bng.layer_blocks(model).items():
        lr = 0.1 if name in ("0", "2") else 0.05
        assert distance(params, before[name]) == pytest.approx(lr, rel=1e-5), name


def test_a_param_group_the_plan_cannot_cover_is_an_error() -> None:
    model = mlp18()
    plan = bng.plan_blocks(model[:2])
    opt = bng.block_normalize(torch.optim.SGD(model[:2].parameters(), lr=0.1), blocks=plan)
    opt.add_param_group({"params": list(model[2:].parameters())})
    loss_of(model, 0).backward()
    with pytest.raises(ValueError, match="not the block plan's"):
        opt.step()
    other = bng.SGDMNG(model[:2], lr=0.1)            # its model does not own the new layer
    other.add_param_group({"params": list(model[2:].parameters())})
    with pytest.raises(ValueError, match="belong to no block"):
        other.step()


@pytest.mark.slow  # ~5 s of Inductor compilation per mode on CPU
@pytest.mark.parametrize("mode", ["ng", "adap", "clip"])
def test_hook_compiles_without_graph_breaks_and_matches_eager(mode: str) -> None:
    """The hot path is one graph: `fullgraph=True` raises on any host sync or graph break."""

    def net() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4))

    eager_model, compiled_model = net(), net()
    eager = bng.SGDMNG(eager_model, lr=0.1, momentum=0.9, mode=mode)
    compiled = bng.SGDMNG(compiled_model, lr=0.1, momentum=0.9, mode=mode)
    normalizer = compiled.block_normalizer
    normalizer.handle.remove()
    normalize = torch.compile(normalizer.normalize_, fullgraph=True)

    def hook(optimizer: torch.optim.Optimizer, args: object, kwargs: object) -> None:
        normalize()

    compiled.register_step_pre_hook(hook)
    x = torch.randn(32, 8)
    for _ in range(3):
        for model, opt in ((eager_model, eager), (compiled_model, compiled)):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
    assert_same_params(eager_model, compiled_model)
