"""Every experiment sweep: its grid is the paper's, the reports read the grid Hydra runs, and
each distinct cell trains on fixtures.

In the spirit of `experiment=glob(*)`: each experiment config is composed the way Hydra's
multirun composes it, checked against the paper's own grids and searched values
(scripts/reports/paper_results.yaml), and one or two steps of each distinct (dataset, model,
optimizer, extra) cell run through the real engine on tiny fixture files. No grid is restated
here: the sweeps are read from configs/experiment/.
"""

from __future__ import annotations

import functools
import itertools
import json
from pathlib import Path

import pytest
import yaml
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf, open_dict

from conftest import REPO, compose_config, train_in_process
from experiments.config import check_config
from experiments.errors import ConfigError
from experiments.record import Identity, StoredRun, config_identity
from reports.registry import artifacts
from reports.sweeps import config_default, experiment_names, read_sweep

ARTIFACTS = artifacts()

PAPER = yaml.safe_load((REPO / "scripts" / "reports" / "paper_results.yaml").read_text())
# The paper's artifacts first, then the tuning and ablation sweeps (the order cells are tested in).
SWEEPS = sorted((name for name in experiment_names() if not name.endswith("_quick")),
                key=lambda name: (name.startswith(("tune_", "ablation_")), name))
FIXTURE_HOLDOUT = "4"  # of the 10 fixture training images (the real sweeps hold out 5000)


@functools.cache
def sweep_params(experiment: str) -> tuple[DictConfig, dict[str, list[str]]]:
    """(the composed experiment, its sweeper params as value lists), as Hydra sees them."""
    cfg = compose_config([f"experiment={experiment}"])
    assert cfg.hydra.mode.name == "MULTIRUN"           # `python run.py experiment=X` sweeps
    params = cfg.hydra.sweeper.params
    return cfg, {k: str(params[k]).split(",") for k in params}


def sweep_cells(experiment: str, skip: tuple[str, ...] = ()) -> list[list[str]]:
    """The override lists Hydra's basic sweeper makes, less the keys in `skip`."""
    _, params = sweep_params(experiment)
    keys = [k for k in params if k not in skip]
    return [[f"experiment={experiment}", *(f"{k}={v}" for k, v in zip(keys, combo, strict=True))]
            for combo in itertools.product(*(params[k] for k in keys))]


def test_every_sweep_has_a_quick_version_with_its_grid():
    names = set(experiment_names())
    quick = {n for n in names if n.endswith("_quick")}
    assert {n.removesuffix("_quick") for n in quick} == set(SWEEPS) - {"demo"}
    for name in quick:   # the same grid, one seed at most
        small, full = read_sweep(name), read_sweep(name.removesuffix("_quick"))
        assert small.groups == full.groups
        assert {k: v for k, v in small.params.items() if k != "seed"} == \
            {k: v for k, v in full.params.items() if k != "seed"}
        assert len(small.params.get("seed", ("1",))) == 1


@pytest.mark.parametrize("experiment", SWEEPS)
def test_reports_read_the_grid_hydra_runs(experiment: str):
    """scripts/reports/sweeps.py reads the YAML itself; it must see what Hydra composes."""
    cfg, params = sweep_params(experiment)
    sweep = read_sweep(experiment)
    assert {k: list(v) for k, v in sweep.params.items()} == params
    for group in ("dataset", "model", "optim"):
        assert sweep.groups[group] == cfg[group].name, group
    check_config(compose_config(sweep_cells(experiment)[-1]))   # one cell resolves and passes checks


def _floats(values) -> list[float]:
    return [float(v) for v in values]


def test_table_sweeps_train_the_papers_rows_and_columns():
    for name in ("table1", "table2", "table3", "table4"):
        table, artifact = PAPER[name], ARTIFACTS[name]
        assert sorted(artifact.optims) == sorted(table["rows"]), name
        # at least the paper's runs (Table 4: 10 seeds against its single run, for the verdicts)
        assert all(len(g.seeds) >= table["runs"] for g in artifact.grids), name
        assert {d for g in artifact.grids for d in g.datasets} == {artifact.datasets[0]}
    for name in ("table1", "table2"):
        assert list(ARTIFACTS[name].models) == PAPER[name]["columns"]
    assert ARTIFACTS["table3"].models == ("preact_resnet34",)
    # Table 3's Adam rows search the paper's learning rates
    adam = read_sweep("table3_adam")
    assert _floats(adam.params["optim.lr"]) == PAPER["tuning"]["imagenet_adam_lr"]["searched"]


def test_figure_sweeps_cover_the_papers_grids():
    for name, spec in PAPER["figures"].items():
        sweep = read_sweep(name)
        for key, values in spec.items():
            key = key.removesuffix("s") if key in ("models", "datasets", "optims") else key
            assert [str(v) for v in values] == list(sweep.values(key)), (name, key)


@pytest.mark.parametrize("sweep,key,entry", [
    ("tune_adam_lr", "optim.lr", "adam_lr"),
    ("tune_clip_threshold", "optim.normalize.threshold", "clip_threshold"),
    ("tune_adap_alpha", "optim.normalize.alpha", "adap_alpha"),
    ("ablation_clip_global", "optim.normalize.threshold", "clip_threshold"),
])
def test_tuning_sweeps_search_the_papers_values_on_the_holdout(sweep, key, entry):
    spec = read_sweep(sweep)
    assert _floats(spec.params[key]) == PAPER["tuning"][entry]["searched"]
    assert spec.params["dataset.holdout"] == ("5000",)
    assert spec.values("model") == ("resnet56",)
    if sweep != "ablation_clip_global":
        assert spec.values("dataset") == ("cifar10", "cifar100")
    # the paper's pick is the configs' default
    for optim in spec.values("optim"):
        assert float(config_default("optim", optim, key.removeprefix("optim."))) == \
            PAPER["tuning"][entry]["best"]


def test_imagenet_decay_readings():
    """Default: the lr decays to about 0.001; the ablation: a total factor of 0.001."""
    gamma = float(config_default("dataset", "imagenet", "train.schedule.gamma"))
    epochs = config_default("dataset", "imagenet", "train.epochs")
    lr = config_default("optim", "sgdm", "lr")
    assert lr * gamma ** epochs == pytest.approx(0.001, rel=1e-3)
    other = float(read_sweep("ablation_imagenet_decay").params["dataset.train.schedule.gamma"][0])
    assert other ** epochs == pytest.approx(0.001, rel=1e-12)


@pytest.mark.parametrize("dataset,nesterov", [
    ("cifar10", True), ("cifar100", True), ("imagenet", True),
    ("mnist", None), ("ptb", None), ("rt", None), ("digits", None)])
def test_sgd_is_fb_resnet_torchs_on_the_resnets_only(dataset, nesterov):
    for optim in ("sgdm", "sgdmng", "sgdmng_adap", "sgdmclip"):
        cfg = compose_config([f"dataset={dataset}", f"optim={optim}"])
        assert cfg.optim.nesterov is nesterov, optim
        assert cfg.optim.get("dampening") is None          # torch's default, 0, as fb.resnet.torch
    assert "nesterov" not in compose_config([f"dataset={dataset}", "optim=adam"]).optim


def _hyperparameter(override: str) -> bool:
    """A numeric optimizer or schedule value: another value trains the same code."""
    key, _, value = override.partition("=")
    try:
        float(value)
    except ValueError:
        return False
    return key.startswith(("optim.", "dataset.train."))


def _distinct_cells() -> list:
    """One cell per distinct (dataset, model, optimizer, extra): seeds train the same code.

    The default run trains every optimizer with the sweep's first values, and the first
    optimizer with each other value of one key at a time; a cell that differs from one already
    in the default run only by numeric optimizer or schedule values (a learning rate, a
    threshold, a decay) trains the same code, so it is marked slow like the rest of the grid.
    """
    seen, lean_code, cells = set(), set(), []
    for experiment in SWEEPS:
        cfg, params = sweep_params(experiment)
        firsts = {f"{k}={v[0]}" for k, v in params.items()}
        found = []
        for cell in sweep_cells(experiment, skip=("seed",)):
            given = dict(o.split("=", 1) for o in cell[1:])
            dataset = given.pop("dataset", cfg.dataset.name)
            model = given.pop("model", cfg.model.name)
            key = (dataset, model, *sorted(f"{k}={v}" for k, v in given.items()))
            if key in seen:
                continue
            seen.add(key)
            code = tuple(o for o in key if not _hyperparameter(o))
            others = [o for o in cell[1:] if not o.startswith("optim=") and o not in firsts]
            first_optim = f"optim={params['optim'][0]}" in cell
            lean = (not others or (first_optim and len(others) == 1
                                   and not _hyperparameter(others[0])))
            lean = lean and code not in lean_code
            if lean:
                lean_code.add(code)
            found.append([cell, lean])
        if found and not any(lean for _, lean in found):
            found[0][1] = True       # every sweep trains at least one cell in the default run
        for cell, lean in found:
            marks = [] if lean else [pytest.mark.slow]
            cells.append(pytest.param(cell, marks=marks, id=",".join(cell)))
    return cells


@pytest.mark.parametrize("dataset", sorted(p.stem for p in (REPO / "configs" / "dataset").glob("*.yaml")))
def test_every_dataset_config_names_its_loader(dataset: str):
    """Datasets load through `_target_`, as models and optimizers do: no registry in data/."""
    import data

    target = compose_config([f"dataset={dataset}"]).dataset._target_
    assert callable(get_object(target)) and target.startswith("data.")
    assert not hasattr(data, "LOADERS")


def test_the_loader_target_keeps_committed_runs_recognised():
    """A run stored before datasets named their loader (docs/reproduction) has the identity of
    the config that made it now: `dataset._target_` is identity-exempt."""
    run = REPO / "docs/reproduction/runs/mnist/mlp6/adam/default/seed1"
    stored = StoredRun.read(run)
    assert "_target_" not in stored.config["dataset"]
    cfg = compose_config(["model=mlp6", "optim=adam", "experiment=figure1", "seed=1",
                          "dataset.verify_md5=False"])
    with open_dict(cfg):
        del cfg["hydra"]
    new = config_identity(OmegaConf.to_container(cfg, resolve=True))
    assert "dataset._target_" not in new and not stored.identity().differences(Identity(new))


def test_an_optimizer_that_checks_its_mode_refuses_another_one_when_built():
    from experiments.optim import build_optimizer
    from models import mlp

    cfg = compose_config(["optim=adagradbng", "optim.normalize.mode=none"])
    with pytest.raises(ConfigError, match=r"optim \(adagradbng\): .*its mode is 'ng'"):
        build_optimizer(cfg.optim, mlp(2, in_features=4))


@pytest.mark.parametrize("cell", _distinct_cells())
def test_each_distinct_cell_trains_a_step(cell: list[str], fixture_root: Path, tmp_path: Path):
    cell = [f"dataset.holdout={FIXTURE_HOLDOUT}" if o.startswith("dataset.holdout=") else o
            for o in cell]
    overrides = [*cell, f"data_root={fixture_root}", "epochs=1", "batch_size=4",
                 "dataset.limit=8", "++dataset.verify_md5=false", "++dataset.workers=0",
                 f"out_dir={tmp_path}"]
    summary = train_in_process(overrides, tmp_path / "run")
    assert summary["status"] == "completed", summary
    rows = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 1 and "train_loss" in json.loads(rows[0])
