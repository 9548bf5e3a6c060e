"""Real Slurm on this machine: munged + slurmctld + slurmd started by the test (tests/slurm_cluster.py).

Nothing is mocked: submitit calls the real sbatch, srun and scontrol. Without Debian's
slurm-wlm and munge the module skips with one line; `make slurm-test` installs them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.slurm_cluster import SlurmCluster, skip_reason

REPO = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or ""),
]


@pytest.fixture(scope="module")
def slurm_cluster():
    """A running single-node cluster; its daemons are stopped even when a test fails."""
    cluster = SlurmCluster()
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture
def slurm_env(slurm_cluster, monkeypatch):
    """Point this process's Slurm clients (submitit's sbatch/scontrol calls) at the cluster."""
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    # Jobs unpickle this module's functions by name (pytest imports it as `test_slurm`).
    pythonpath = [str(REPO / "tests"), str(REPO), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, pythonpath)))
    return {**slurm_cluster.env, "PYTHONPATH": os.environ["PYTHONPATH"]}


def _add(a: int, b: int) -> tuple[int, str]:
    return a + b, os.environ["SLURM_JOB_ID"]


def test_submitit_job_returns_its_result(slurm_cluster, slurm_env, tmp_path):
    import submitit

    executor = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="slurm")
    executor.update_parameters(timeout_min=5, slurm_partition=slurm_cluster.partition)
    job = executor.submit(_add, 2, 3)
    total, slurm_job_id = job.result()
    assert total == 5
    assert slurm_job_id == job.job_id


class _CountAttempts:
    """Checkpointable: the first attempt waits to be preempted, the requeued one returns."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __call__(self) -> int:
        attempts = int(self.marker.read_text()) + 1 if self.marker.exists() else 1
        self.marker.write_text(str(attempts))
        if attempts == 1:
            time.sleep(120)  # interrupted by the test's USR2
        return attempts

    def checkpoint(self):
        import submitit

        return submitit.helpers.DelayedSubmission(self)


def test_preempted_submitit_job_is_requeued(slurm_cluster, slurm_env, tmp_path):
    """USR2 (Slurm's preemption warning) makes submitit checkpoint and `scontrol requeue`."""
    import submitit

    executor = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="slurm")
    executor.update_parameters(timeout_min=5, slurm_partition=slurm_cluster.partition)
    marker = tmp_path / "attempts"
    job = executor.submit(_CountAttempts(marker))
    _wait_for(marker.exists, 60, "the first attempt to start")
    job._interrupt()  # what Slurm does on preemption: SIGTERM, then USR2
    assert job.result() == 2


def _wait_for(ready, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.3)


# -- the suite's own entrypoint through hydra-submitit-launcher ---------------------------------


def _sweep_command(out_dir: Path, partition: str) -> list[str]:
    return [
        sys.executable, "run.py", "-m", "launcher=slurm",
        f"hydra.launcher.partition={partition}",
        "hydra.launcher.timeout_min=10", "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.gpus_per_node=null", "hydra.launcher.mem_gb=null",
        "dataset=digits", "model=mlp6", "epochs=1", "device=cpu", "seed=0,1",
        f"out_dir={out_dir}",
    ]  # fmt: skip


def test_two_cell_sweep_on_slurm(slurm_cluster, slurm_env, tmp_path):
    """`python run.py -m launcher=slurm` submits both cells, waits, and both complete."""
    out_dir = tmp_path / "out"
    result = subprocess.run(
        _sweep_command(out_dir, slurm_cluster.partition),
        cwd=REPO, env=slurm_env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summaries = sorted(out_dir.glob("runs/**/summary.json"))
    assert [p.parent.name for p in summaries] == ["seed0", "seed1"], summaries
    for path in summaries:
        summary = json.loads(path.read_text())
        assert summary["status"] == "completed", summary
    # Both cells really went through Slurm: submitit wrote one log folder per array task.
    assert len(list((out_dir / "runs" / ".submitit").glob("*/*_log.out"))) == 2


# Batch 4: ~400 steps an epoch, so USR2 lands mid-run (tests/test_scaleout.py uses the same).
PREEMPT_ARGS = ("dataset=digits", "model=mlp6", "optim=sgdmng", "epochs=5", "batch_size=4",
                "device=cpu", "seed=1")


def _metrics(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("epoch_seconds", "samples_per_s")}
            for r in rows]


def _status(run_dir: Path) -> str | None:
    try:
        return json.loads((run_dir / "summary.json").read_text())["status"]
    except (OSError, ValueError, KeyError):
        return None


@pytest.mark.slow  # ~45 s each; `make slurm-test` (-m slurm) still runs them
@pytest.mark.parametrize("signals", [("USR2",), ("TERM", "USR2")], ids=["USR2", "TERM+USR2"])
def test_preempted_sweep_cell_is_requeued_and_resumes(signals, slurm_cluster, slurm_env, tmp_path):
    """Signals to a running cell: the engine checkpoints, submitit requeues, the cell resumes and
    finishes with the metrics of an uninterrupted run, and the sweep returns.

    USR2 alone is Slurm's `--signal` warning before the time limit; TERM then USR2 is how
    submitit itself simulates preemption (`SlurmJob._interrupt`): it ignores TERM and acts on USR2.
    """
    out_dir = tmp_path / "slurm"
    run_dir = out_dir / "runs/digits/mlp6/sgdmng/batch_size=4,epochs=5/seed1"
    sweep = subprocess.Popen(
        [sys.executable, "run.py", "-m", "launcher=slurm",
         f"hydra.launcher.partition={slurm_cluster.partition}",
         # 30 min: long enough that submitit reads USR2 as preemption, not as a time-out.
         "hydra.launcher.timeout_min=30", "hydra.launcher.cpus_per_task=1",
         "hydra.launcher.gpus_per_node=null", "hydra.launcher.mem_gb=null",
         *PREEMPT_ARGS, f"out_dir={out_dir}"],
        cwd=REPO, env={**slurm_env, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        _wait_for(lambda: (run_dir / "checkpoint.pt").exists() or sweep.poll() is not None,
                  120, "the cell's first checkpoint")
        assert sweep.poll() is None, sweep.communicate()[0][-3000:]
        (job_id,) = slurm_cluster.run("squeue", "-h", "-o", "%i").stdout.split()
        for name in signals:
            slurm_cluster.run("scancel", f"--signal={name}", job_id)
        # Meanwhile, the reference: the same cell, uninterrupted, on this machine.
        reference = subprocess.run(
            [sys.executable, "run.py", *PREEMPT_ARGS, f"out_dir={tmp_path / 'local'}"],
            cwd=REPO, env={**slurm_env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip
        assert reference.returncode == 0, reference.stderr[-3000:]
        _wait_for(lambda: _status(run_dir) == "completed" or sweep.poll() is not None, 120,
                  "the requeued cell to complete")
        try:
            output, _ = sweep.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            stale = sorted(p.name for p in (out_dir / "runs/.submitit").glob("*/*save_tmp"))
            pytest.fail(f"the cell completed but the sweep still waits 30 s later; stale submitit "
                        f"result dumps: {stale} (an earlier attempt was cut while returning)")
    finally:
        if sweep.poll() is None:
            sweep.kill()
            sweep.wait()
    assert sweep.returncode == 0, output[-3000:]
    logs = "\n".join(p.read_text() for p in (out_dir / "runs/.submitit").glob("*/*_log.*"))
    assert "Requeued job" in logs, logs[-3000:]
    assert "[resume]" in logs, logs[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed", summary
    local_dir = tmp_path / "local" / run_dir.relative_to(out_dir)
    assert _metrics(run_dir) == _metrics(local_dir)
