"""The entrypoint end to end: files, skip, crash-resume, divergence, bad input, multirun."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

import bng
from conftest import REPO, cli_env, run_cli
from models import mlp

RUN = ("dataset=digits", "model=mlp6", "epochs=2")


def _run_dir(out_dir: Path, optim: str = "adamng", model: str = "mlp6", seed: int = 1,
             extra: str = "default") -> Path:
    return out_dir / "runs" / "digits" / model / optim / extra / f"seed{seed}"


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _comparable(rows: list[dict]) -> list[dict]:
    """The metrics a resumed run must reproduce exactly (timings naturally differ)."""
    drop = {"epoch_seconds", "samples_per_s"}
    return [{k: v for k, v in row.items() if k not in drop} for row in rows]


def test_run_writes_results_and_skips_when_done(out_dir: Path):
    proc = run_cli(*RUN, f"out_dir={out_dir}")
    run_dir = _run_dir(out_dir, extra="epochs=2")   # overrides that change the result name it
    assert str(run_dir) in proc.stdout                      # the folder is printed at the end
    rows = _metrics(run_dir)
    assert [r["epoch"] for r in rows] == [1, 2]
    for key in ("train_loss", "test_loss", "test_acc", "lr", "epoch_seconds", "samples_per_s"):
        assert all(key in r for r in rows), key
    assert len(rows[0]["grad_norms"]) == 5                  # MLP-6: 5 Linear blocks
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_done"] == 2
    assert summary["best"]["test_acc"] == max(r["test_acc"] for r in rows)
    assert summary["command"].startswith("python run.py ")
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["meta"]["optim"] == "adamng" and config["meta"]["torch"]
    assert config["meta"]["git_commit"]
    assert not (run_dir / "checkpoint.pt").exists()          # removed once completed
    before = (run_dir / "metrics.jsonl").read_text()

    again = run_cli(*RUN, f"out_dir={out_dir}")
    assert "[skip]" in again.stdout
    assert (run_dir / "metrics.jsonl").read_text() == before


def test_crash_then_rerun_resumes_to_identical_metrics(tmp_path: Path):
    """SIGKILL (no chance to clean up) after the first epoch's checkpoint; rerun resumes."""
    args = ("dataset=digits", "model=mlp6", "optim=sgdmng", "epochs=4")
    run_cli(*args, f"out_dir={tmp_path / 'straight'}")
    crashed = tmp_path / "crashed"
    cmd = [sys.executable, str(REPO / "run.py"), *args, f"out_dir={crashed}"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=cli_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    run_dir = _run_dir(crashed, optim="sgdmng", extra="epochs=4")
    deadline = time.time() + 120
    while not (run_dir / "metrics.jsonl").exists() or not (run_dir / "metrics.jsonl").read_text():
        assert proc.poll() is None and time.time() < deadline, "the run ended before a checkpoint"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "running"                   # what a crash leaves behind
    resumed = run_cli(*args, f"out_dir={crashed}")
    assert "[resume]" in resumed.stdout
    assert _comparable(_metrics(run_dir)) == _comparable(
        _metrics(_run_dir(tmp_path / "straight", optim="sgdmng", extra="epochs=4")))


class NaNAfterMLP(torch.nn.Module):
    """A classifier whose logits turn NaN after 30 training steps: a run that blew up."""

    def __init__(self, in_features: int, num_classes: int, **_: object):
        super().__init__()
        self.fc = torch.nn.Linear(in_features, num_classes)
        self.steps = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.steps += self.training
        logits = self.fc(x)
        return logits * float("nan") if self.steps > 30 else logits


def test_planted_nan_gives_diverged(out_dir: Path):
    proc = run_cli("dataset=digits", "model=mlp6", "optim=sgdmng", "epochs=3",
                   "model.net._target_=test_run.NaNAfterMLP", f"out_dir={out_dir}",
                   env=cli_env(PYTHONPATH=str(REPO / "tests")))
    run_dir = _run_dir(out_dir, optim="sgdmng", extra="epochs=3,model.net._target_=test_run.NaNAfterMLP")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "diverged", proc.stdout
    assert "nan" in summary["message"].lower() or "inf" in summary["message"].lower()
    assert "[diverged]" in proc.stdout
    assert not (run_dir / "checkpoint.pt").exists()         # no NaN weights were ever saved


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("optim=adamx", "Could not find 'optim/adamx'"),
        ("model=lstm", "Compatible datasets: ptb"),
        ("epochs=0", "epochs must be a positive integer"),
        ("batch_size=-4", "batch_size must be a positive integer"),
        ("optim.lr=0", "optim.lr must be a positive number"),
        ("dataset=mnist", "download=true"),
    ],
)
def test_bad_input_gives_one_clear_line(override: str, expected: str, tmp_path: Path):
    proc = run_cli("dataset=digits", override, f"out_dir={tmp_path}",
                   f"data_root={tmp_path / 'nodata'}", check=False)
    assert proc.returncode != 0
    assert expected in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    if override.startswith("optim="):
        assert "adamng" in proc.stderr                       # lists the valid choices


def test_multirun_writes_distinct_run_dirs(out_dir: Path):
    run_cli("dataset=digits", "model=mlp6", "epochs=1", "optim=adam,sgdmng", "seed=1,2",
            f"out_dir={out_dir}", multirun=True)
    summaries = sorted(out_dir.glob("runs/digits/mlp6/*/epochs=1/seed*/summary.json"))
    assert len(summaries) == 4
    assert all(json.loads(p.read_text())["status"] == "completed" for p in summaries)


def test_extra_overrides_name_the_run_dir(out_dir: Path):
    run_cli("dataset=digits", "model=mlp6", "epochs=1", "batch_size=50", f"out_dir={out_dir}",
            "device=cpu", "seed=3")
    # device and seed pick where and which; batch size and epochs change the result
    assert (_run_dir(out_dir, seed=3, extra="batch_size=50,epochs=1") / "summary.json").exists()


def test_default_run_needs_no_arguments(out_dir: Path):
    """`python run.py` with no arguments (digits, MLP-18, AdamNG) trains to completion."""
    env = cli_env()
    proc = subprocess.run([sys.executable, "run.py", f"out_dir={out_dir}"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out_dir / "runs/digits/mlp18/adamng/default/seed1/summary.json")
                         .read_text())
    assert summary["status"] == "completed"
    # The plateau of a deep sigmoid net is ln(10) = 2.30; AdamNG leaves it within the budget.
    assert summary["final"]["train_loss"] < 2.1


def test_zero_gradient_layer_is_reported(out_dir: Path):
    env = cli_env(PYTHONPATH=str(REPO / "tests"))
    proc = run_cli("dataset=digits", "model=mlp6", "epochs=1", "model.net._target_=conftest.DeadLayerMLP",
                   f"out_dir={out_dir}", env=env)
    assert "zero gradient all epoch in unused;" in proc.stdout, proc.stdout
    line = next(x for x in proc.stdout.splitlines() if "zero gradient" in x)
    assert len(line) <= 150 and "fc" not in line.split(";")[0]


def test_grad_norms_keep_the_model_order(out_dir: Path):
    """MLP-12 has blocks layers.0 ... layers.20: a sorted file would put layers.10 second."""
    run_cli("dataset=digits", "model=mlp12", "epochs=1", f"out_dir={out_dir}")
    run_dir = _run_dir(out_dir, model="mlp12", extra="epochs=1")
    names = list(_metrics(run_dir)[0]["grad_norms"])
    assert names == list(bng.layer_blocks(mlp(12, in_features=64)))
