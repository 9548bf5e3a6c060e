"""The stacked-seeds benchmark (scripts/bench_stack.py) and its place in `make gpu-check`: rows
of the right shape on a tiny CPU run, the projection divided by the measured speedup of its
model alone, and the report's lines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import gpu_check
import gpu_report
from conftest import REPO, cli_env


def test_the_bench_gives_one_row_per_model_and_k():
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_stack.py"), "--models",
                           "MLP-6", "KimCNN", "--seeds", "1", "2", "--batches", "1", "--repeats",
                           "1", "--batch-size", "4", "--json"], cwd=REPO, env=cli_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [(r["model"], r["seeds"]) for r in rows] == [("MLP-6", 1), ("MLP-6", 2),
                                                        ("KimCNN", 1), ("KimCNN", 2)]
    for row in rows:
        assert row["separate"] > 0 and row["stacked"] > 0 and row["speedup"] > 0
        assert 0 < row["noise"]


def test_a_cuda_request_without_cuda_is_one_line():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_stack.py"), "--device",
                           "cuda"], cwd=REPO, env=cli_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: --device cuda, and no CUDA device is visible; use --device cpu"]


def test_the_best_k_is_the_largest_speedup():
    rows = [{"seeds": 1, "speedup": 0.98}, {"seeds": 4, "speedup": 2.5},
            {"seeds": 8, "speedup": 2.2}]
    entry = gpu_check.stacked_entry(rows)
    assert entry["best"] == 4 and entry["speedup"] == 2.5 and set(entry["rows"]) == {"1", "4",
                                                                                      "8"}


def _entry(name: str, train: float) -> dict:
    return {"name": name, "mode": "fp32", "status": "ok", "train_per_s": train,
            "eval_per_s": 4 * train, "batch": 128, "size": 32}


def test_stacking_divides_the_hours_of_its_model_only():
    results = [_entry(f"resnet{d}", 1000.0) for d in (20, 56, 110)]
    plain = gpu_report.project(results)["artifacts"][0]["fp32"]["gpu_hours"]
    stacked = {"resnet20": {"speedup": 4.0, "best": 8, "mode": "fp32"}}
    row = gpu_report.project(results, stacked=stacked)["artifacts"][0]["fp32"]
    # ResNet-20 is one of Table 1's five depths of equal cost here: its fifth takes a quarter
    assert row["gpu_hours_stacked"] == pytest.approx(plain * (1 - 0.75 / 5))
    assert row["gpu_hours"] == pytest.approx(plain)        # the one-seed-a-process column stays


def test_the_report_shows_both_ways(tmp_path: Path):
    state = {"device": "cuda", "budget_s": 460, "steps": {}, "env": {},
             "throughput": [_entry(f"resnet{d}", 1000.0) for d in (20, 56, 110)],
             "stacked": {"resnet20": gpu_check.stacked_entry([
                 {"model": "ResNet-20", "seeds": 4, "batches": 4, "separate": 10.0,
                  "stacked": 30.0, "speedup": 3.0, "noise": 1.01}])}}
    text = gpu_report.render(state)
    assert "- resnet20: K=4: 10.00 -> 30.00 seeds x epochs/s (x3.00, noise 1.010)" in text
    assert "stacked seeds: GPU-hours" in text
    table1 = next(line for line in text.splitlines() if line.startswith("| table1 |"))
    assert "not measured" in table1 and table1.count("|") >= 9


def test_the_gpu_check_step_runs_tiny_on_a_cpu(tmp_path: Path):
    code = gpu_check.main(["--device", "cpu", "--steps", "stacked", "--out", str(tmp_path),
                           "--budget", "4000"])
    assert code == 0
    state = json.loads((tmp_path / "gpu_check.json").read_text())
    assert state["steps"]["stacked"]["status"] == "ok", state["steps"]["stacked"]
    assert set(state["stacked"]) == {"mlp18", "resnet20"}
    assert set(state["stacked"]["resnet20"]["rows"]) == {"1", "2"}
    assert "## Stacked seeds in one process" in (tmp_path / "gpu_check.md").read_text()
