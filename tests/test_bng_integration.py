"""The returned optimizers are torch's own: round trips, schedulers, GradScaler, build."""

import io

import pytest
import torch
from torch import nn

import bng
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


def test_build_takes_dotted_paths_and_classes() -> None:
    model = nn.Linear(3, 2)
    assert type(bng.build(model, base="torch.optim.SGD", lr=0.1)) is torch.optim.SGD
    assert type(bng.build(model, base="RMSprop", mode="ng", lr=0.1)) is torch.optim.RMSprop
    assert type(bng.build(model, base=torch.optim.AdamW, mode="clip")) is torch.optim.AdamW
    with pytest.raises(ValueError, match="not a torch.optim"):
        bng.build(model, base="torch.nn.Linear")
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


def test_norm_vector_matches_the_named_norms() -> None:
    """`last_block_norms` (one (B,) tensor, for per-step logging) equals `block_grad_norms`."""
    model = mlp18()
    opt = bng.AdamNG(model, lr=1e-3)
    assert bng.last_block_norms(opt) is None and bng.block_grad_norms(opt) == {}
    loss_of(model, 0).backward()
    opt.step()
    named = bng.block_grad_norms(opt)
    assert bng.block_names(opt) == list(named) == list(bng.layer_blocks(model))
    assert torch.equal(bng.last_block_norms(opt), torch.stack(list(named.values())))
    with pytest.raises(ValueError, match="not built by bng"):
        bng.last_block_norms(torch.optim.SGD(model.parameters(), lr=0.1))


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
