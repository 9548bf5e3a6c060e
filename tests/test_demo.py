"""`make demo` and the artifact targets end to end, at a reduced size: the sweeps train, the
report renders their files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, cli_env
from data.fixtures import make_cifar, make_rt

# The Python running the tests, with nothing installed: make would otherwise build .venv/.
NO_INSTALL = (f"PYTHON={sys.executable}", "-o", ".install.stamp")


def test_make_demo_renders_figure_table_and_diagnostics(tmp_path: Path):
    out = tmp_path / "demo"
    proc = subprocess.run(
        ["make", "-s", "demo", *NO_INSTALL, f"DEMO_OUT={out}", "ARGS=epochs=2 dataset.limit=300"],
        cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summaries = list(out.glob("runs/digits/mlp*/*/*/seed1/summary.json"))
    assert len(summaries) == 12                              # MLP-6/12/18 x 4 optimizers
    for name in ("figures/demo_figure1.png", "figures/demo_diagnostics.png",
                 "tables/demo_table.md", "tables/demo_table.csv"):
        assert (out / name).stat().st_size > 0, name
    table = (out / "tables/demo_table.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and "Optimizer" not in line]
    assert len(rows) == 4
    assert all("—" not in row for row in rows), table        # every cell has a finished run
    assert "SGDMNG" in table and "AdamNG" in table


def _make(target: str, out: Path, args: str) -> subprocess.CompletedProcess:
    """`make <target> SCALE=quick` on fixture data into `out` (its sweeps, then its table)."""
    proc = subprocess.run(
        ["make", "-s", target, *NO_INSTALL, "SCALE=quick", f"RESULTS={out}",
         f"ARGS=out_dir={out} epochs=1 batch_size=4 ++dataset.verify_md5=false {args}"],
        cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _rows(markdown: str) -> dict[str, list[str]]:
    rows = [line.strip("|").split(" | ") for line in markdown.splitlines() if line.startswith("| ")]
    return {row[0].strip(): [c.strip() for c in row[1:]] for row in rows}


@pytest.mark.slow
def test_make_ablation_trains_its_sweep_and_renders_its_table(tmp_path: Path):
    make_rt(tmp_path / "data", repeat=4)
    out = tmp_path / "results"
    proc = _make("ablation_adagrad_rt", out, f"data_root={tmp_path / 'data'} dataset.limit=24")
    rows = _rows((out / "tables" / "ablation_adagrad_rt.md").read_text())
    assert rows["AdaGradBNG"][0] not in ("—", "")             # its own sweep's run
    assert rows["AdaGrad"] == ["—"] and rows["AdaGradNG"] == ["—"]   # Table 4's, not run here
    assert "optim=adagradng seed=1" in proc.stdout and "experiment=table4_quick" in proc.stdout


@pytest.mark.slow
def test_make_tuning_sweep_trains_and_renders_its_table(tmp_path: Path):
    """The paper's Adam lr search on a 5,010-image fixture CIFAR (5,000 held out, as the real
    sweep does), 8 ResNet-56 runs of one step, then the tuning table."""
    for which in ("cifar10", "cifar100"):
        make_cifar(tmp_path / "data", which, n_train=5010, n_test=4)
    out = tmp_path / "results"
    _make("tune_adam_lr", out, f"data_root={tmp_path / 'data'} dataset.limit=8")
    rows = _rows((out / "tables" / "tune_adam_lr.md").read_text())
    assert rows["Run"] == ["lr=0.0005", "lr=0.001", "lr=0.005", "lr=0.01", "our pick",
                           "paper's pick"]
    for name in ("CIFAR-10 ResNet-56 Adam", "CIFAR-100 ResNet-56 Adam"):
        assert "—" not in rows[name][:4] and rows[name][4] in ("0.0005", "0.001", "0.005", "0.01")
        assert rows[name][5] == "0.001"
