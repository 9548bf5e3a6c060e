"""Where things live: the reports are one package imported by one name, without sys.path
edits; the tools never import the tests; the paper's numbers sit beside the code that reads
them; the engine's error types live in one module."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from conftest import REPO

SOURCES = sorted(p for folder in ("bng", "models", "data", "experiments", "scripts", "tests")
                 for p in (REPO / folder).rglob("*.py")) + [REPO / "run.py"]


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def test_the_reports_are_imported_by_one_name():
    other = [p.relative_to(REPO) for p in SOURCES
             if re.search(r"^\s*(from|import) scripts\.reports\b", _text(p), re.M)]
    assert not other, f"import the reports as `reports`, not `scripts.reports`: {other}"


def test_the_reports_edit_no_sys_path():
    report_code = [REPO / "scripts" / "report.py", REPO / "scripts" / "gpu_report.py",
                   *sorted((REPO / "scripts" / "reports").glob("*.py"))]
    editing = [p.relative_to(REPO) for p in report_code
               if re.search(r"sys\.path\.(insert|append)", _text(p))]
    assert not editing, f"sys.path edited in {editing}"


def test_tools_do_not_import_the_tests():
    tools = [p for p in SOURCES if "tests" not in p.relative_to(REPO).parts]
    reaching = [p.relative_to(REPO) for p in tools if re.search(
        r"^\s*(from|import) (tests|conftest|data_fixtures|bng_helpers)\b", _text(p), re.M)]
    assert not reaching, f"tools importing test modules: {reaching}"


def test_the_papers_numbers_sit_beside_the_reports():
    from reports.tables import PAPER_FILE

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
