"""Every paper-artifact sweep: its grid is the paper's, and each distinct cell trains on fixtures.

In the spirit of `experiment=glob(*)`: each experiment config is composed the way Hydra's
multirun composes it, every cell's config is checked, and one or two steps of each distinct
(dataset, model, optimizer, extra) cell run through the real engine on tiny fixture files.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from conftest import REPO
from data_fixtures import make_cifar, make_imagenet, make_mnist, make_ptb, make_rt
from experiments.config import check_config
from experiments.train import run

EXPERIMENTS = {  # artifact -> number of cells in the paper's grid
    "figure1": 3 * 6, "figure2": 2 * 8, "figure3": 3 * 6, "table1": 5 * 8 * 5,
    "table2": 5 * 8 * 5, "table3": 4, "table4": 6, "demo": 3 * 4,
}
ALL_OPTIMS = {"adam", "adamclip", "adamng", "adamng_adap", "sgdm", "sgdmclip", "sgdmng",
              "sgdmng_adap"}
SIX = {"sgdm", "sgdmng", "adagrad", "adagradng", "adam", "adamng"}


def _compose(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(str(REPO / "configs"), version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=True)


def sweep_params(experiment: str) -> tuple[str, dict[str, list[str]]]:
    """(the experiment's own dataset, its sweeper params as value lists)."""
    cfg = _compose([f"experiment={experiment}"])
    assert cfg.hydra.mode.name == "MULTIRUN"           # `python run.py experiment=X` sweeps
    params = cfg.hydra.sweeper.params
    return cfg.dataset.name, {k: str(params[k]).split(",") for k in params}


def sweep_cells(experiment: str, skip: tuple[str, ...] = ()) -> list[list[str]]:
    """The override lists Hydra's basic sweeper makes, less the keys in `skip`."""
    _, params = sweep_params(experiment)
    keys = [k for k in params if k not in skip]
    return [[f"experiment={experiment}", *(f"{k}={v}" for k, v in zip(keys, combo, strict=True))]
            for combo in itertools.product(*(params[k] for k in keys))]


def test_experiment_files_are_the_tested_ones():
    on_disk = {p.stem for p in (REPO / "configs/experiment").glob("*.yaml")}
    assert on_disk - {f"{name}_quick" for name in EXPERIMENTS} == set(EXPERIMENTS)


@pytest.mark.parametrize("experiment", sorted(EXPERIMENTS))
def test_grid_matches_the_paper(experiment: str):
    dataset, params = sweep_params(experiment)
    assert len(sweep_cells(experiment)) == EXPERIMENTS[experiment]
    optims = set(params["optim"])
    if experiment in ("table1", "table2", "figure2"):
        assert optims == ALL_OPTIMS
    if experiment in ("table1", "table2"):
        assert params["seed"] == ["1", "2", "3", "4", "5"]
        assert params["model"] == ["resnet20", "resnet32", "resnet44", "resnet56", "resnet110"]
    if experiment in ("figure1", "figure3", "table4"):
        assert optims == SIX
    if experiment == "table3":
        assert optims == {"adam", "adamng", "sgdm", "sgdmng"} and dataset == "imagenet"
    if experiment == "figure3":
        assert params["dataset.bptt"] == ["40", "400", "1000"] and dataset == "ptb"
    # one composed cell: the overrides resolve to a config that passes the engine's checks
    check_config(_compose(sweep_cells(experiment)[-1]))


@pytest.fixture(scope="module")
def fixture_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    make_mnist(root, n_train=10, n_test=4)
    make_cifar(root, "cifar10", n_train=10, n_test=4)
    make_cifar(root, "cifar100", n_train=10, n_test=4)
    make_ptb(root)
    make_rt(root, repeat=2)
    make_imagenet(root, classes=2, per_class=2, size=40)
    return root


def _distinct_cells() -> list:
    """One cell per distinct (dataset, model, optimizer, extra): seeds train the same code.

    The default run trains every optimizer with the sweep's first model (or BPTT, ...) and the
    first optimizer with every other value; the rest of the grid is marked slow.
    """
    seen, cells = set(), []
    for experiment in sorted(EXPERIMENTS):
        dataset, params = sweep_params(experiment)
        firsts = {f"{k}={v[0]}" for k, v in params.items()}
        for cell in sweep_cells(experiment, skip=("seed",)):
            key = tuple(sorted(o for o in cell[1:] if not o.startswith("dataset=")))
            key = (next((o[8:] for o in cell if o.startswith("dataset=")), dataset), *key)
            if key in seen:
                continue
            seen.add(key)
            others = [o for o in cell[1:] if not o.startswith("optim=")]
            lean = all(o in firsts for o in others) or f"optim={params['optim'][0]}" in cell
            marks = () if lean else (pytest.mark.slow,)
            cells.append(pytest.param(cell, marks=marks, id=",".join(cell)))
    return cells


def train_in_process(overrides: list[str], run_dir: Path) -> dict:
    """What Hydra's launcher does for one cell, without a new Python process."""
    cfg = _compose(overrides)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return run(cfg)


@pytest.mark.parametrize("cell", _distinct_cells())
def test_each_distinct_cell_trains_a_step(cell: list[str], fixture_root: Path, tmp_path: Path):
    overrides = [*cell, f"data_root={fixture_root}", "epochs=1", "batch_size=4",
                 "dataset.limit=8", "++dataset.verify_md5=false", "++dataset.workers=0",
                 f"out_dir={tmp_path}"]
    summary = train_in_process(overrides, tmp_path / "run")
    assert summary["status"] == "completed", summary
    rows = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 1 and "train_loss" in json.loads(rows[0])
