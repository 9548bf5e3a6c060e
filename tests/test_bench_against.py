"""scripts/bench_against.py: this checkout's bng against another revision's, in whole steps.

Tiny runs (MLP-18, three timed steps a copy): the output's shape and the errors, never the
timings themselves.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import bench_against
from conftest import REPO, cli_env

SCRIPT = REPO / "scripts" / "bench_against.py"
LAST_BEFORE_THE_WORKSPACE_WENT = "7eeed7c"  # the parent of the commit that deleted it


def bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO, env=cli_env(),
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("rev, copies", [("HEAD", "1"), (LAST_BEFORE_THE_WORKSPACE_WENT, "2")])
def test_a_tiny_run_prints_a_parsable_row_per_model(rev: str, copies: str):
    proc = bench("--against", rev, "--models", "MLP-18", "--threads", "1", "--repeats", "3",
                 "--copies", copies)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("this checkout (") and " against " in lines[0]
    header = next(i for i, line in enumerate(lines) if line.startswith("model "))
    assert "this/other throughput" in lines[header] and "noise" in lines[header]
    rows = [line.split() for line in lines[header + 2:] if line.startswith("MLP-18")]
    assert len(rows) == 1
    model, optimizer, this_ms, other_ms, ratio, noise, gap = rows[0]
    assert optimizer == "AdamNG"
    assert float(this_ms) > 0 and float(other_ms) > 0 and float(ratio) > 0
    assert noise == "-" if copies == "1" else float(noise) > 0  # no second copy to compare
    # Same model, seed and batch: both versions' first update gives the same loss, to rounding.
    assert float(gap) < 1e-4
    steps = 2 * int(copies) * (3 + 2)  # both versions' copies, timed and warm-up steps
    assert f"MLP-18: {steps} steps" in proc.stderr


@pytest.mark.parametrize("rev, says", [
    ("no-such-revision-7", "unknown revision 'no-such-revision-7': name a commit"),
    ("HEAD~0:docs", "unknown revision"),                 # a tree, not a commit
])
def test_an_unknown_revision_is_one_line_and_exit_2(rev: str, says: str):
    proc = bench("--against", rev, "--threads", "1")
    assert proc.returncode == 2
    assert proc.stdout == "" and len(proc.stderr.strip().splitlines()) == 1
    assert says in proc.stderr and "Traceback" not in proc.stderr


def test_a_revision_without_bng_is_one_line_and_exit_2():
    first = subprocess.run(["git", "rev-list", "--max-parents=0", "HEAD"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()[-1]
    proc = bench("--against", first)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        f"bench_against: revision {first} has no bng/ package (no bng/__init__.py); pick a "
        "later one: `git log --oneline -- bng/__init__.py` lists those that have it"]


def test_a_bng_without_the_optimizer_names_what_it_lacks(tmp_path: Path):
    (tmp_path / "bng").mkdir()
    (tmp_path / "bng" / "__init__.py").write_text("SGDMNG = None\n")
    with bench_against.Worker(tmp_path, "old", 1, "wall", tmp_path / "worker.log") as worker:
        worker.wait_ready()
        worker.require({"SGDMNG"})
        with pytest.raises(bench_against.BenchError,
                           match=r"^old's bng has no AdamNG \(its names: SGDMNG\); choose other"):
            worker.require({"AdamNG", "SGDMNG"})


def test_a_worker_that_stops_says_why_in_one_line(tmp_path: Path):
    (tmp_path / "bng").mkdir()
    (tmp_path / "bng" / "__init__.py").write_text("raise ImportError('needs a newer torch')\n")
    with pytest.raises(bench_against.BenchError) as caught, \
            bench_against.Worker(tmp_path, "old", 1, "wall", tmp_path / "worker.log") as worker:
        worker.wait_ready()
    assert str(caught.value) == ("the worker with old's bng stopped: "
                                 "ImportError: needs a newer torch")
