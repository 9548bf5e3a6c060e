"""`make gpu-check` on a machine without a GPU: the one line, the sweep grids it projects from,
the projection's arithmetic, and the worker that a step kills when an item overruns."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import gpu_check
import gpu_report
import gpu_workers
from conftest import REPO, cli_env

SCRIPT = REPO / "scripts" / "gpu_check.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_it_says_so_in_one_line(tmp_path: Path):
    started = time.monotonic()
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "out")],
                          cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [gpu_check.no_cuda_line()]
    assert proc.stdout.startswith("gpu-check: no CUDA device here (torch ")
    assert not (tmp_path / "out").exists()
    assert time.monotonic() - started < 60


def test_unknown_step_is_one_clear_line(tmp_path: Path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--steps", "env,warp"], cwd=REPO,
                          env=cli_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "unknown step(s) warp" in proc.stderr and "Traceback" not in proc.stderr


def test_cells_are_the_sweep_grids():
    counts = {a: len(gpu_report.artifact_cells(a)) for a in gpu_report.ARTIFACTS}
    # Table 3: SGDM and SGDMNG, plus Adam and AdamNG at the paper's four searched lrs.
    # Table 4 and Figure 1: 6 and 18 configs at the 10 seeds their experiment configs fix.
    assert counts == {"table1": 200, "table2": 200, "table3": 10, "table4": 60, "figure1": 180,
                      "figure2": 16, "figure3": 18}
    table1 = gpu_report.artifact_cells("table1")
    assert {c["epochs"] for c in table1} == {160} and {c["dataset"] for c in table1} == {"cifar10"}
    assert {gpu_report.bench_name(c) for c in gpu_report.artifact_cells("figure3")} == {
        "lstm_bptt40", "lstm_bptt400", "lstm_bptt1000"}
    assert {c["epochs"] for c in gpu_report.artifact_cells("table3")} == {50}


def _entry(name: str, train: float, evaluate: float, mode: str = "fp32") -> dict:
    return {"name": name, "mode": mode, "status": "ok", "train_per_s": train,
            "eval_per_s": evaluate}


def test_projection_arithmetic():
    rates = {"resnet20": 8000.0, "resnet56": 4000.0, "resnet110": 2000.0}
    results = [_entry(n, r, 4 * r) for n, r in rates.items()]
    results.append(_entry("resnet110", 3000.0, 12000.0, mode="bf16"))
    projection = gpu_report.project(results, data_rate=100_000.0, gpus=(1, 8))
    rows = {r["artifact"]: r for r in projection["artifacts"]}

    def epoch(train: float) -> float:   # 50k images at the train rate, 10k at 4x that, data layer
        return 50_000 / train + 10_000 / (4 * train) + 50_000 / 100_000

    resnet32 = 8000 * 4000 / (4000 + (32 - 20) / 36 * (8000 - 4000))   # 1/rate is interpolated
    resnet44 = 8000 * 4000 / (4000 + (44 - 20) / 36 * (8000 - 4000))
    per_seed = sum(epoch(r) for r in (8000, resnet32, resnet44, 4000, 2000))
    expected = 8 * 5 * per_seed * 160 / 3600          # 8 optimizers x 5 seeds
    assert rows["table1"]["fp32"]["gpu_hours"] == pytest.approx(expected, rel=1e-9)
    assert any("interpolated" in note for note in rows["table1"]["fp32"]["estimated"])
    # the fastest mode uses ResNet-110's bf16 rate
    faster = expected - 8 * 5 * (epoch(2000) - epoch(3000)) * 160 / 3600
    assert rows["table1"]["best"]["gpu_hours"] == pytest.approx(faster, rel=1e-9)
    # Figure 2's cells are Tables 1-2's ResNet-110 seed-1 runs
    assert rows["figure2"]["shared_cells"] == 16
    assert rows["figure2"]["fp32"]["new_gpu_hours"] == 0
    # eight GPUs: 200 runs of five lengths, longest first, no GPU idles much
    wall = rows["table1"]["fp32"]["wall_hours"]
    assert wall["1"] == pytest.approx(expected)
    assert expected / 8 * (1 - 1e-9) <= wall["8"] <= expected / 8 + epoch(2000) * 160 / 3600
    # no throughput for ImageNet, PTB, RT or MNIST: those rows say so instead of a number
    assert rows["table3"]["fp32"]["gpu_hours"] is None
    assert rows["table3"]["fp32"]["missing"] == ["preact_resnet34"]
    markdown = "\n".join(gpu_report.render_markdown(projection))
    assert "no throughput for preact_resnet34" in markdown and "unmeasured" in markdown


def test_concurrency_divides_the_hours_of_its_model_and_mode_only():
    results = [_entry(f"resnet{d}", 1000.0, 4000.0) for d in (20, 56, 110)]
    plain = gpu_report.project(results)["artifacts"][0]["fp32"]["gpu_hours"]
    faster = gpu_report.project(results, concurrency={
        "resnet20": {"speedup": 2.0, "best": 4, "mode": "fp32"}})["artifacts"][0]["fp32"]
    # ResNet-20 is one of five depths of equal cost here: its fifth of the hours halves
    assert faster["gpu_hours_concurrent"] == pytest.approx(plain * (1 - 0.5 / 5))
    bf16 = gpu_report.project(results, concurrency={
        "resnet20": {"speedup": 2.0, "best": 4, "mode": "bf16"}})["artifacts"][0]["fp32"]
    assert bf16["gpu_hours_concurrent"] == pytest.approx(plain)


def test_render_with_nothing_measured():
    state = {"device": "cuda", "budget_s": 460, "steps": {}, "throughput": [], "env": {}}
    text = gpu_report.render(state)
    assert "nothing to project from" in text and "NOT FINISHED" in text


def test_an_item_over_its_cap_is_killed_and_the_next_one_runs(tmp_path: Path):
    quick = {"kind": "train", "name": "mlp6", "batch": 4, "amp": "off", "compile": False,
             "mode": "fp32", "window_s": 0.01, "windows": 1}
    items = [{**quick, "id": "first"}, {**quick, "id": "slow", "window_s": 120.0, "windows": 50},
             {**quick, "id": "third"}]
    kept: list[dict] = []
    # A 30 s cap: a quick item's worker (torch's import included) fits it on a loaded 2-core
    # machine, and the slow one (50 windows of 120 s) cannot.
    results = gpu_workers.run_items(items, "cpu", time.monotonic() + 240, 30.0, tmp_path,
                                  kept.append)
    assert [(r["id"], r["status"]) for r in results] == [
        ("first", "ok"), ("slow", "timeout"), ("third", "ok")]
    assert kept == results
    assert "cap of one item" in results[1]["message"]
    assert results[0]["train_per_s"] > 0 and results[2]["eval_per_s"] > 0
