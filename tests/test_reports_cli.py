"""Every edge of `report.py`'s command line is one line on stderr and exit 2, with nothing
written: a file given as a folder, seeds that are not numbers, a results folder that does not
exist or cannot be written, and --run-args that are malformed or set a cell's own keys."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, cli_env
from reports import cli, inputs

REPORT = REPO / "scripts" / "report.py"


@pytest.fixture()
def results(tmp_path: Path) -> Path:
    (tmp_path / "results" / "runs").mkdir(parents=True)
    return tmp_path / "results"


def _refused(capsys, *argv: str) -> str:
    assert cli.main(list(argv)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.mark.parametrize(("argv", "says"), [
    (["--seeds", "a,b"], "not a comma list of whole numbers"),
    (["--seeds", ""], "not a comma list of whole numbers"),
    (["--run-args", "epochs"], "'epochs' is not an override"),
    (["--run-args", "epochs='2"], "cannot split it into words"),
    (["--run-args", "epochs=2 optim=adam"], "sets optim, which each cell sets itself"),
    (["--run-args", "seed=2"], "pass --seeds"),
    (["--run-args", "+model=mlp6"], "sets model"),
    (["--only", "table4_lr", "--run-args", "optim.lr=0.1"], "table4_lr's grid varies"),
    (["--only", "figure3", "--run-args", "dataset.bptt=40"], "figure3's grid varies"),
    (["--only", "table9"], "unknown target(s) ['table9']"),
    (["--scale", "huge"], "invalid choice"),
])
def test_bad_arguments_are_one_line_and_exit_2(capsys, results, argv, says):
    line = _refused(capsys, "table1", "--results", str(results), *argv)
    assert says in line
    assert sorted(p.name for p in results.iterdir()) == ["runs"]   # nothing written


def test_files_and_absent_folders_are_refused(capsys, results, tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    assert "is a file, not a folder" in _refused(capsys, "--results", str(a_file))
    assert "is a file, not a folder" in _refused(capsys, "--results", str(results),
                                                 "--out", str(a_file))
    line = _refused(capsys, "table1", "--results", str(tmp_path / "does_not_exist"))
    assert f"no results folder {tmp_path / 'does_not_exist'}" in line
    assert not (tmp_path / "does_not_exist").exists()


def test_a_results_folder_that_cannot_be_written_needs_out(capsys, results, monkeypatch,
                                                           tmp_path):
    real_access = os.access
    monkeypatch.setattr(inputs.os, "access",
                        lambda path, mode: Path(path) != results and real_access(path, mode))
    line = _refused(capsys, "table1", "--results", str(results))
    assert f"cannot write to {results}" in line and "pass --out DIR" in line
    assert cli.main(["table1", "--results", str(results), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "tables" / "table1.md").is_file()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to a read-only folder")
def test_a_read_only_results_folder_is_one_line(capsys, results):
    results.chmod(0o555)
    try:
        assert "cannot write to" in _refused(capsys, "table1", "--results", str(results))
    finally:
        results.chmod(0o755)


def test_a_write_that_fails_midway_is_one_line(capsys, results, monkeypatch):
    def full(*_args, **_kwargs):
        raise OSError(28, "No space left on device", str(results / "tables" / "table1.md"))
    monkeypatch.setattr("reports.writer.os.open", full)
    line = _refused(capsys, "table1", "--results", str(results))
    assert line == f"error: cannot write {results / 'tables' / 'table1.md'}: No space left on device"


def test_the_command_line_itself_exits_2_with_one_line(tmp_path):
    proc = subprocess.run([sys.executable, str(REPORT), "--results", str(tmp_path / "none")],
                          cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
