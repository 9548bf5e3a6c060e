"""The engine's optimizer: any `_target_`, block-normalized by its `normalize` node, and
per-layer gradient-norm diagnostics for every optimizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import get_object
from omegaconf import OmegaConf

import bng
from conftest import REPO, run_cli
from experiments.config import ConfigError
from experiments.optim import build_optimizer
from models import mlp

OPTIM_CONFIGS = sorted(p.stem for p in (REPO / "configs" / "optim").glob("*.yaml"))


def _optim_cfg(name: str, *overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base=None):
        cfg = compose("config", overrides=[f"optim={name}", *overrides])
    return cfg.optim


@pytest.mark.parametrize("name", OPTIM_CONFIGS)
def test_every_optim_config_builds_with_a_plan_of_the_models_layers(name: str) -> None:
    net = mlp(6, in_features=64)
    optimizer, plan = build_optimizer(_optim_cfg(name), net)
    net(torch.randn(4, 64)).sum().backward()
    assert bng.grad_norms(plan).shape == (5,)
    optimizer.step()
    assert plan.names == list(bng.layer_blocks(net))
    normalizer = getattr(optimizer, "block_normalizer", None)
    target = get_object(_optim_cfg(name)._target_)   # a torch class, or a bng factory's result
    assert type(optimizer) is (target if isinstance(target, type) else type(target(net)))
    if normalizer is None:             # a baseline: torch's optimizer alone, never a hook
        assert not optimizer._optimizer_step_pre_hooks
        assert _optim_cfg(name).normalize.mode == "none"
    else:                              # NG: the diagnostics use the blocks it normalizes
        assert normalizer.mode != "none" and normalizer.plan is plan


def test_a_torch_target_gets_parameters_and_keeps_its_own_alpha() -> None:
    net = mlp(6, in_features=64)
    optimizer, plan = build_optimizer(_optim_cfg("rmsprop", "optim.alpha=0.9"), net)
    assert type(optimizer) is torch.optim.RMSprop
    assert optimizer.param_groups[0]["alpha"] == 0.9          # RMSprop's, not NG_adap's
    assert not hasattr(optimizer, "block_normalizer")
    assert plan.norm_dtype == torch.float64                    # mlp18 asks for it


def test_a_blocks_line_without_mode_sets_the_diagnostics_blocks_only() -> None:
    net = mlp(6, in_features=64)
    optimizer, plan = build_optimizer(_optim_cfg("rmsprop", "+optim.normalize.blocks=global"),
                                      net)
    assert type(optimizer) is torch.optim.RMSprop and not hasattr(optimizer, "block_normalizer")
    assert plan.names == ["global"]


def test_one_mode_line_block_normalizes_any_optimizer() -> None:
    torch.manual_seed(0)
    net = mlp(6, in_features=64)
    cfg = OmegaConf.create({"_target_": "torch.optim.SGD", "name": "sgd", "lr": 0.05,
                            "normalize": {"mode": "ng", "blocks": "global"}})
    optimizer, plan = build_optimizer(cfg, net)
    assert type(optimizer) is torch.optim.SGD and optimizer.block_normalizer.mode == "ng"
    assert plan.names == ["global"]
    before = torch.cat([p.detach().flatten().clone() for p in net.parameters()])
    (1000 * net(torch.randn(8, 64)).square().mean()).backward()
    optimizer.step()
    after = torch.cat([p.detach().flatten() for p in net.parameters()])
    assert float((after - before).norm()) == pytest.approx(0.05, rel=1e-5)


def test_bad_optimizer_configs_are_one_line_errors() -> None:
    net = mlp(6, in_features=64)
    with pytest.raises(ConfigError, match="cannot be imported"):
        build_optimizer(OmegaConf.create({"_target_": "torch.optim.Nope", "name": "x"}), net)
    with pytest.raises(ConfigError, match="mode must be one of"):
        build_optimizer(_optim_cfg("adamng", "optim.normalize.mode=unit"), net)
    with pytest.raises(ConfigError, match="mode must be one of"):
        build_optimizer(_optim_cfg("rmsprop", "optim.normalize.mode=unit"), net)
    with pytest.raises(ConfigError, match="no key treshold"):   # a typo never means "none"
        build_optimizer(_optim_cfg("sgdm", "+optim.normalize.treshold=0.1"), net)


def test_run_py_trains_a_plain_torch_optimizer_with_diagnostics(tmp_path: Path) -> None:
    """`python run.py optim=rmsprop`: torch.optim.RMSprop, per-layer norms in metrics.jsonl."""
    run_cli("optim=rmsprop", "epochs=1", f"out_dir={tmp_path}")
    run_dir = tmp_path / "runs" / "digits" / "mlp18" / "rmsprop" / "epochs=1" / "seed1"
    row = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert list(row["grad_norms"]) == list(bng.layer_blocks(mlp(18, in_features=64)))
    assert all(value > 0 for value in row["grad_norms"].values())


def test_a_null_argument_takes_the_optimizers_default():
    # sgdm.yaml resolves nesterov to null outside the ResNets; fused SGD rejects nesterov=None.
    cfg = OmegaConf.create({"_target_": "torch.optim.SGD", "name": "sgdm", "lr": 0.1,
                            "momentum": 0.9, "nesterov": None, "fused": True})
    optimizer, _ = build_optimizer(cfg, torch.nn.Linear(3, 2))
    assert optimizer.param_groups[0]["nesterov"] is False


@pytest.mark.parametrize("every", [1, 7])
def test_grad_norms_are_the_mean_over_every_kth_step(tmp_path: Path, every: int) -> None:
    """metrics.jsonl's grad_norms against a hand-written replay of the same training: the
    mean of each layer's float64 gradient norm over the epoch's steps 0, k, 2k, ..."""
    from conftest import compose_config, train_in_process
    from data import build_dataset

    overrides = ["optim=adam", "model=mlp6", "epochs=1", f"grad_norm_every={every}"]
    train_in_process(overrides, tmp_path)
    row = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])

    cfg = compose_config(overrides)
    data = build_dataset(cfg.dataset, device="cpu", seed=cfg.seed)
    torch.manual_seed(cfg.seed)
    net = mlp(6, in_features=64)
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.optim.lr)
    blocks = bng.layer_blocks(net)
    sums, samples = dict.fromkeys(blocks, 0.0), 0
    for step, (x, y) in enumerate(data.train_batches(1, cfg.batch_size)):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        if step % every == 0:
            samples += 1
            for name, params in blocks.items():
                flat = torch.cat([p.grad.double().flatten() for p in params])
                sums[name] += float(torch.linalg.vector_norm(flat))
        optimizer.step()
    assert samples == -(-data.num_train_batches(cfg.batch_size) // every)
    assert row["grad_norm_steps"] == samples
    assert list(row["grad_norms"]) == list(blocks)
    for name, total in sums.items():
        assert row["grad_norms"][name] == pytest.approx(total / samples, rel=1e-6), name
