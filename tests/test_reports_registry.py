"""The artifact registry keeps the CLI and the Makefile in step, every renderer it names
exists, and the reports read in three floors: no renderer imports another renderer."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, cli_env
from reports import cli
from reports.inputs import InputError
from reports.registry import ENTRIES, KINDS, REGISTRY, TARGETS, artifacts, names, renderers

REPORTS = REPO / "scripts" / "reports"
# What make's lists hold: the kinds a `make <name>` target runs and renders.
MAKE_LISTS = {"ARTIFACTS": ("figure", "table"), "TUNING": ("tuning",), "ABLATIONS": ("ablation",)}


def _make_variables() -> dict[str, list[str]]:
    """make's own values of its lists, from its database (`make -pn`)."""
    proc = subprocess.run(["make", "-pn", "help"], cwd=REPO, env=cli_env(), capture_output=True,
                          text=True, timeout=120, check=True)
    found = {}
    for line in proc.stdout.splitlines():
        match = re.match(r"^(\w+) :?= (.*)$", line)
        if match and match.group(1) in MAKE_LISTS:
            found[match.group(1)] = match.group(2).split()
    return found


def test_the_makefile_lists_are_the_registry_s():
    found = _make_variables()
    for variable, kinds in MAKE_LISTS.items():
        assert found[variable] == names(*kinds), variable
    made = {name for values in found.values() for name in values}
    assert made == {e.name for e in ENTRIES if e.kind not in ("diagnostics", "demo")}


def test_every_make_target_renders_its_own_artifact():
    for name in names("figure", "table", "tuning", "ablation"):
        proc = subprocess.run(["make", "-n", name, "SCALE=quick"], cwd=REPO, env=cli_env(),
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert f"--only {name} " in proc.stdout, proc.stdout


def test_the_cli_takes_its_targets_and_list_from_the_registry(capsys):
    assert cli.parse_args(TARGETS).targets == TARGETS
    with pytest.raises(InputError, match="unknown target"):
        cli.parse_args(["no_such_artifact"])
    assert cli.main(["--list"]) == 0
    listed = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines())
    assert list(listed) == list(KINDS)
    assert {kind: names.split() for kind, names in listed.items()} == {
        kind: [e.name for e in ENTRIES if e.kind == kind] for kind in KINDS}
    assert set(artifacts()) == set(TARGETS) == {e.name for e in ENTRIES if e.kind != "demo"}


def test_each_entry_builds_and_names_renderers_that_exist():
    for entry in ENTRIES:
        assert entry.kind in KINDS
        assert all(callable(draw) for draw in renderers(entry.name)), entry.name
    for name, artifact in artifacts().items():
        assert artifact.name == name and artifact.title == REGISTRY[name].title
        assert artifact.sweeps  # `make <name>` has something to run


def test_list_needs_the_standard_library_alone():
    code = ("import sys; from reports import cli; cli.main(['--list', 'table']); "
            "heavy = {'yaml', 'pandas', 'numpy', 'matplotlib'} & set(sys.modules); "
            "sys.exit(f'imported {sorted(heavy)}' if heavy else 0)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=cli_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == names("table")


def _imports(path: Path) -> set[str]:
    """The package modules `path` imports (`from .x import`, `from . import x`), anywhere."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("reports."):
            found.add(node.module.split(".")[1])
    return found


def test_no_renderer_imports_another_renderer():
    renderer_modules = {spec.partition(":")[0] for e in ENTRIES for spec in e.render}
    assert renderer_modules <= {p.stem for p in REPORTS.glob("*.py")}
    for module in sorted(renderer_modules):
        others = _imports(REPORTS / f"{module}.py") & (renderer_modules - {module})
        assert not others, f"renderer {module} imports renderer(s) {sorted(others)}"


def test_the_layer_check_sees_a_renderer_importing_a_renderer(tmp_path):
    sample = tmp_path / "bad.py"
    sample.write_text("def f():\n    from .tables import render_table\n")
    assert _imports(sample) == {"tables"}
