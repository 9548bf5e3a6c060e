"""Where things live: the suite's packages install and import by name from any folder, so no
tool edits sys.path (but bench_against.py, which loads another revision on purpose); the reports
are one package imported by one name; the tools never import the tests; the paper's numbers sit
beside the code that reads them; the engine's error types live in one module."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

from conftest import REPO, cli_env

SOURCES = sorted(p for folder in ("bng", "models", "data", "experiments", "scripts", "tests")
                 for p in (REPO / folder).rglob("*.py")) + [REPO / "run.py"]


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def test_the_reports_are_imported_by_one_name():
    other = [p.relative_to(REPO) for p in SOURCES
             if re.search(r"^\s*(from|import) scripts\.reports\b", _text(p), re.M)]
    assert not other, f"import the reports as `reports`, not `scripts.reports`: {other}"


TOOLS = sorted((REPO / "scripts").glob("*.py")) + [REPO / "run.py"]
PACKAGES = ("bng", "models", "data", "experiments", "reports")
DELIBERATE_INSERT = REPO / "scripts" / "bench_against.py"   # imports another revision's bng


def _edits_sys_path(path: Path) -> bool:
    return any(isinstance(node, ast.Call) and re.fullmatch(
                   r"sys\.path\.(insert|append|extend)|site\.addsitedir", ast.unparse(node.func))
               for node in ast.walk(ast.parse(_text(path))))


def test_no_code_edits_sys_path_but_bench_against():
    editing = [p.relative_to(REPO) for p in SOURCES if p != DELIBERATE_INSERT and _edits_sys_path(p)]
    assert not editing, f"sys.path edited in {editing}: the suite's packages are installed"
    assert _edits_sys_path(DELIBERATE_INSERT)          # the check itself can see an edit


def _imported(path: Path) -> set[str]:
    """The top-level modules `path` imports, at any depth (a function's late import too)."""
    names = set()
    for node in ast.walk(ast.parse(_text(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_every_tool_finds_the_suites_packages_from_any_folder(tmp_path):
    """Each tool's imports of the suite resolve to this checkout in a Python started elsewhere,
    with no PYTHONPATH: the editable install (`make install`) is what finds them."""
    wanted = sorted({name for tool in TOOLS for name in _imported(tool) if name in PACKAGES})
    assert set(wanted) >= {"bng", "data", "experiments", "reports"}
    probe = f"import importlib; print(*(importlib.import_module(n).__file__ for n in {wanted!r}))"
    env = {key: value for key, value in cli_env().items() if key != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = [Path(name).resolve() for name in proc.stdout.split()]
    assert all(REPO in path.parents for path in found), found


def test_tools_do_not_import_the_tests():
    tools = [p for p in SOURCES if "tests" not in p.relative_to(REPO).parts]
    reaching = [p.relative_to(REPO) for p in tools if re.search(
        r"^\s*(from|import) (tests|conftest|data_fixtures|bng_helpers)\b", _text(p), re.M)]
    assert not reaching, f"tools importing test modules: {reaching}"


def test_the_papers_numbers_sit_beside_the_reports():
    from reports.formatting import PAPER_FILE

    assert PAPER_FILE == REPO / "scripts" / "reports" / "paper_results.yaml"
    assert PAPER_FILE.is_file() and not (REPO / "experiments" / "paper_results.yaml").exists()


def test_the_engines_error_types_live_in_one_module():
    """Every exception class of the engine is defined in experiments/errors.py (the data layer's
    DataError sits below the engine, in data/common.py)."""
    def exceptions(path: Path) -> list[str]:
        return [node.name for node in ast.walk(ast.parse(_text(path)))
                if isinstance(node, ast.ClassDef) and any(
                    re.search(r"(Error|Exception|Mismatch|Busy|Diverged|Failed)$", ast.unparse(b))
                    for b in node.bases)]

    elsewhere = {str(p.relative_to(REPO)): names
                 for p in sorted((REPO / "experiments").glob("*.py")) + [REPO / "run.py"]
                 if p.name != "errors.py" and (names := exceptions(p))}
    assert not elsewhere, f"error types outside experiments/errors.py: {elsewhere}"
    assert {"RunError", "CellFailed", "Diverged"} <= set(exceptions(REPO / "experiments" / "errors.py"))


def test_one_function_writes_every_summary_json():
    """A run's summary has one writer (experiments/train.py's _write_summary): a function that
    names summary.json and calls a writer anywhere else in the engine is a second one."""
    writers = []
    for path in sorted((REPO / "experiments").glob("*.py")):
        text = _text(path)
        for node in ast.walk(ast.parse(text)):
            body = ast.get_source_segment(text, node) if isinstance(node, ast.FunctionDef) else ""
            if '"summary.json"' in (body or "") and re.search(r"\bwrite_(json|status|text)\b",
                                                               body or ""):
                writers.append(f"{path.name}:{node.name}")
    assert writers == ["train.py:_write_summary"], writers
