"""The published CPU reproduction (docs/reproduction/): its tables are exactly what the report
renders from its committed run files, so a change to the report code, or to a run file, that
would change a published number fails here."""

from __future__ import annotations

import filecmp
from pathlib import Path

import pytest

from scripts.reports import cli

REPRO = Path(__file__).resolve().parent.parent / "docs" / "reproduction"

# (folder, [(targets, the --run-args its runs were made with: the Makefile's reproduce-cpu)])
RENDERS = [("", [(("figure1", "diagnostics"), ""), (("table4",), "epochs=10"),
                 (("figure3",), "epochs=3")]),
           ("longer", [(("table4",), "epochs=20")])]


@pytest.mark.skipif(not (REPRO / "runs").is_dir(), reason="no published run files")
@pytest.mark.parametrize(("folder", "renders"), RENDERS)
def test_published_tables_re_render_byte_identical(tmp_path, folder, renders):
    results = REPRO / folder
    for targets, run_args in renders:
        assert cli.main([*targets, "--results", str(results), "--out", str(tmp_path),
                         "--seeds", "1,2,3", "--run-args", run_args]) == 0
    published = sorted(p.name for p in (results / "tables").iterdir())
    rendered = sorted(p.name for p in (tmp_path / "tables").iterdir())
    assert published == rendered
    match, mismatch, errors = filecmp.cmpfiles(results / "tables", tmp_path / "tables", published,
                                               shallow=False)
    assert not mismatch and not errors, f"re-rendered tables differ: {mismatch + errors}"
