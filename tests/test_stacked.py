"""Stacked seeds: a seed trained in a stack is its separate run (same initial weights, batches,
metrics within float tolerance, identity and files), and the engine's promises hold per seed
(skip, resume, divergence, memory refusal, fallback)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from omegaconf import open_dict

from conftest import compose_config, train_in_process
from data.fixtures import make_cifar, make_rt
from experiments import stacked, train
from experiments.errors import ConfigError

# One epoch of K seeds stacked against their separate runs: float32 sums in another order
# (batched matmuls, grouped convolutions, per-seed norms) move the metrics by ~1e-7.
TOLERANCE = 1e-5
METRICS = ("train_loss", "train_acc", "test_loss", "test_acc")


@pytest.fixture(scope="module")
def noisy_root(tmp_path_factory) -> Path:
    """CIFAR-10 with random pixels (not conftest.fixture_root's constant images) and RT."""
    root = tmp_path_factory.mktemp("data")
    noisy_cifar(make_cifar(root, "cifar10", n_train=10, n_test=4))
    make_rt(root, repeat=3)
    return root


def noisy_cifar(folder: Path) -> None:
    """The fixture's images with random pixels: its own are constant per image, and a batch of
    two constant images leaves BatchNorm so ill-conditioned that the grouped convolution's other
    float32 summation order (~1e-7) grows to 1e-3 in three steps."""
    generator = np.random.default_rng(0)
    for path in sorted(folder.iterdir()):
        if path.is_file() and "batch" in path.name:
            entry = pickle.loads(path.read_bytes(), encoding="latin1")
            entry["data"] = generator.integers(0, 256, entry["data"].shape, dtype=np.uint8)
            path.write_bytes(pickle.dumps(entry))


def stacked_in_process(overrides: list[str], run_dir: Path) -> dict:
    cfg = compose_config(overrides)
    with open_dict(cfg):
        del cfg["hydra"]
    return stacked.run_group(cfg, run_dir, list(overrides))


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def assert_same_metrics(one: Path, other: Path) -> None:
    first, second = rows(one), rows(other)
    assert len(first) == len(second) > 0
    for a, b in zip(first, second, strict=True):
        for key in METRICS:
            assert a[key] == pytest.approx(b[key], abs=TOLERANCE), (one, key)
        for name, norm in a["grad_norms"].items():
            assert norm == pytest.approx(b["grad_norms"][name], rel=TOLERANCE), (one, name)


def train_both(common: list[str], tmp_path: Path, seeds: int = 2) -> tuple[Path, Path]:
    """The group's folders and the separate runs' folders (parents of seed<k>)."""
    stacked_in_process([*common, f"stack_seeds={seeds}", f"out_dir={tmp_path}"],
                       tmp_path / "stacked" / "seed1")
    for seed in range(1, seeds + 1):
        train_in_process([*common, f"seed={seed}", f"out_dir={tmp_path}"],
                         tmp_path / "separate" / f"seed{seed}")
    return tmp_path / "stacked", tmp_path / "separate"


def test_an_mlp_seed_is_its_separate_run(tmp_path: Path):
    group, separate = train_both(["model=mlp6", "epochs=1", "keep_checkpoint=true"], tmp_path)
    for seed in (1, 2):
        one, other = group / f"seed{seed}", separate / f"seed{seed}"
        assert_same_metrics(one, other)
        a = json.loads((one / "summary.json").read_text())
        b = json.loads((other / "summary.json").read_text())
        assert a["status"] == b["status"] == "completed"
        assert a["identity"] == b["identity"]
        mine, theirs = (torch.load(d / "checkpoint.pt", weights_only=True) for d in (one, other))
        for name, tensor in theirs["model"].items():
            torch.testing.assert_close(mine["model"][name], tensor, atol=TOLERANCE, rtol=0)
        assert mine["ranks"][0]["rng"]["torch"].equal(theirs["ranks"][0]["rng"]["torch"])
        config = yaml.safe_load((one / "config.yaml").read_text())
        assert config["stack_seeds"] == 1 and config["meta"]["stacked_seeds"] == [1, 2]
        assert config["meta"]["command"].endswith("seed=2") == (seed == 2)
        assert "stack_seeds" not in config["meta"]["command"]


def test_the_initial_weights_are_bitwise_the_separate_runs():
    from experiments.stacked_model import StackedNet
    from models import resnet20

    nets = []
    for seed in (3, 4):
        torch.manual_seed(seed)
        nets.append(resnet20())
    net = StackedNet(nets, [torch.Generator(), torch.Generator()])
    torch.manual_seed(4)
    alone = resnet20()
    for name, tensor in alone.named_parameters():
        assert net.params[name][1].equal(tensor)


def test_kims_cnn_seed_is_its_separate_run(tmp_path: Path, noisy_root: Path):
    common = ["dataset=rt", "model=kimcnn", "optim=adamng", f"data_root={noisy_root}",
              "++dataset.verify_md5=false", "epochs=2", "batch_size=4", "model.net.emb=16",
              "model.net.maps=8"]
    group, separate = train_both(common, tmp_path)
    for seed in (1, 2):
        assert_same_metrics(group / f"seed{seed}", separate / f"seed{seed}")


def test_a_resnet20_seed_is_its_separate_run(tmp_path: Path, noisy_root: Path):
    common = ["dataset=cifar10", "model=resnet20", "optim=sgdmng", f"data_root={noisy_root}",
              "++dataset.verify_md5=false", "epochs=1", "batch_size=4"]
    group, separate = train_both(common, tmp_path)
    for seed in (1, 2):
        assert_same_metrics(group / f"seed{seed}", separate / f"seed{seed}")


def test_a_group_partly_done_trains_only_the_missing_seeds(tmp_path: Path, capsys):
    common = ["model=mlp6", "epochs=1", f"out_dir={tmp_path}"]
    train_in_process([*common, "seed=2"], tmp_path / "g" / "seed2")
    before = (tmp_path / "g" / "seed2" / "summary.json").read_bytes()
    capsys.readouterr()
    stacked_in_process([*common, "stack_seeds=3"], tmp_path / "g" / "seed1")
    out = capsys.readouterr().out
    assert "[skip] completed earlier" in out and "seeds 1, 3 train together" in out
    assert (tmp_path / "g" / "seed2" / "summary.json").read_bytes() == before
    for seed in (1, 3):
        status = json.loads((tmp_path / "g" / f"seed{seed}" / "summary.json").read_text())
        assert status["status"] == "completed"


def test_a_diverging_seed_ends_diverged_and_the_others_go_on(tmp_path: Path, monkeypatch):
    start = train._start

    def poisoned(ctx, data, stored):        # seed 2's weights are NaN from its first step
        task, scheduler, progress = start(ctx, data, stored)
        if ctx.cfg.seed == 2:
            with torch.no_grad():
                next(task.net.parameters()).fill_(float("nan"))
        return task, scheduler, progress

    monkeypatch.setattr(train, "_start", poisoned)
    common = ["model=mlp6", "epochs=2", f"out_dir={tmp_path}"]
    stacked_in_process([*common, "stack_seeds=3"], tmp_path / "g" / "seed1")
    monkeypatch.setattr(train, "_start", start)
    summaries = {seed: json.loads((tmp_path / "g" / f"seed{seed}" / "summary.json").read_text())
                 for seed in (1, 2, 3)}
    assert summaries[2]["status"] == "diverged"
    assert "the training loss became nan at epoch 1" in summaries[2]["message"]
    assert summaries[1]["status"] == summaries[3]["status"] == "completed"
    train_in_process([*common, "seed=3"], tmp_path / "alone" / "seed3")
    assert_same_metrics(tmp_path / "g" / "seed3", tmp_path / "alone" / "seed3")


def test_a_group_that_cannot_fit_is_refused_before_training(tmp_path: Path, monkeypatch):
    monkeypatch.setattr("experiments.stacked_memory.free_bytes", lambda device: 2**20)
    with pytest.raises(ConfigError, match=r"stack_seeds=4 needs about .* use stack_seeds="):
        stacked_in_process(["model=mlp18", "stack_seeds=4", f"out_dir={tmp_path}"],
                           tmp_path / "g" / "seed1")
    assert not (tmp_path / "g").exists()


def test_an_optimizer_that_is_not_elementwise_trains_the_seeds_one_by_one(tmp_path, capsys):
    stacked_in_process(["model=mlp6", "optim=adagradbng", "epochs=1", "stack_seeds=2",
                        f"out_dir={tmp_path}"], tmp_path / "g" / "seed1")
    out = capsys.readouterr().out
    assert "[stack] AdaGradBNG does not step elementwise: its 2 seeds train one after" in out
    for seed in (1, 2):
        status = json.loads((tmp_path / "g" / f"seed{seed}" / "summary.json").read_text())
        assert status["status"] == "completed"


def test_a_seed_sweep_whose_groups_overlap_is_refused():
    stacked.check_sweep(["-m", "seed=1,11", "stack_seeds=10"], 10)
    stacked.check_sweep(["seed=1"], 10)
    with pytest.raises(ConfigError, match=r"these groups overlap. .*: seed=1,11\.$"):
        stacked.check_sweep(["-m", "seed=1,2,3,4,5,6,7,8,9,10,11,12", "stack_seeds=10"], 10)


@pytest.mark.parametrize(("overrides", "reason"), [
    (["dataset=ptb", "model=lstm", "optim=sgdm"], "the language model is not stacked"),
    (["dataset=imagenet", "model=preact_resnet34", "optim=sgdm"], "ImageNet ResNet"),
    (["amp=bf16"], "exact fp32"), (["compile=true"], "without torch.compile"),
    (["optim=adagradbng"], "AdaGradBNG does not step elementwise"),
    (["model=mlp18", "optim=sgdmng"], None), (["optim=adagradng"], None)])
def test_what_falls_back_to_one_seed_at_a_time(overrides, reason):
    found = stacked.fallback_reason(compose_config(overrides))
    assert (found is None) if reason is None else (reason in found)
