"""The Makefile and README a newcomer meets first: where make installs, what an unknown target
says, which runs of the reproduction turn md5 off, and the list of experiments."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from conftest import REPO

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


def _make(*args: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(REPO)}        # no uv, no PYTHON of the caller's
    return subprocess.run(["make", "--no-print-directory", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)


def test_make_installs_into_the_projects_venv_by_default():
    lines = _make("-n", "-W", "pyproject.toml", "test").stdout.splitlines()
    script = "\n".join(lines[:-1])
    assert "test -x .venv/bin/python || python3 -m venv --system-site-packages .venv" in script
    assert '.venv/bin/python -m pip install -q -e ".[suite,dev]"' in script
    assert "uv venv -q --python python3 .venv" in script       # only without a torch to reuse
    assert lines[-1] == ".venv/bin/python -m pytest -q"


def test_a_python_of_ones_own_is_used_as_it_is():
    lines = _make("-n", "-W", "pyproject.toml", "test", "PYTHON=/opt/env/bin/python").stdout
    assert "venv" not in lines
    assert '/opt/env/bin/python -m pip install -q -e ".[suite,dev]"' in lines.splitlines()


def test_an_unknown_target_is_one_line_and_exit_2():
    proc = _make("table9")
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[0] == "error: there is no target 'table9'; make help lists them"


def test_the_reproduction_turns_md5_off_for_mnist_and_ptb_only():
    out = _make("-n", "reproduce-cpu", "DATA=/data").stdout.splitlines()
    runs = [line for line in out if " run.py " in line]
    assert runs, out
    for line in runs:
        subset = "experiment=figure1" in line or "experiment=figure3" in line
        assert ("dataset.verify_md5=false" in line) == subset, line


def test_the_readme_lists_every_experiment():
    readme = (REPO / "README.md").read_text()
    listed = set(re.findall(r"\b[a-z0-9]+(?:_[a-z0-9]+)+\b|\b(?:figure|table)\d\b|\bdemo\b", readme))
    names = {p.stem for p in (REPO / "configs" / "experiment").glob("*.yaml")
             if not p.stem.endswith("_quick")}
    assert names <= listed, sorted(names - listed)
