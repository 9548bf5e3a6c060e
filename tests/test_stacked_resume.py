"""A stacked group killed with SIGKILL resumes: each seed's checkpoint is the one its separate run
writes, so the seed can be resumed by the group command or by its own separate command, and
either way its metrics are its uninterrupted separate run's."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from test_stacked import assert_same_metrics

from conftest import REPO, cli_env, run_cli, train_in_process

COMMON = ["model=mlp6", "epochs=2", "dataset.limit=400"]


def wait_for_rows(metrics: Path, count: int, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= count):
        assert proc.poll() is None, f"the group ended before epoch {count}: {proc.communicate()}"
        assert time.monotonic() < deadline, f"no epoch {count} after {timeout} s"
        time.sleep(0.05)


def test_a_killed_group_resumes_by_its_command_or_each_seeds_own(tmp_path: Path):
    out = tmp_path / "out"
    group = [*COMMON, "stack_seeds=2", f"out_dir={out}"]
    folder = out / "runs" / "digits" / "mlp6" / "adamng" / "dataset.limit=400,epochs=2"
    proc = subprocess.Popen([sys.executable, str(REPO / "run.py"), *group], cwd=REPO,
                            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        wait_for_rows(folder / "seed2" / "metrics.jsonl", 1, proc)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for seed in (1, 2):
        assert (folder / f"seed{seed}" / "checkpoint.pt").exists()
    # Seed 2 goes on alone, from the checkpoint the group wrote; then the group's command
    # skips it and resumes seed 1.
    alone = run_cli(*COMMON, "seed=2", f"out_dir={out}")
    assert "[resume] epoch" in alone.stdout
    again = run_cli(*group)
    assert "[skip] completed earlier" in again.stdout and "[resume] epoch" in again.stdout
    for seed in (1, 2):
        summary = json.loads((folder / f"seed{seed}" / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["epochs_done"] == 2
        train_in_process([*COMMON, f"seed={seed}", f"out_dir={tmp_path}"],
                         tmp_path / "separate" / f"seed{seed}")
        assert_same_metrics(folder / f"seed{seed}", tmp_path / "separate" / f"seed{seed}")
