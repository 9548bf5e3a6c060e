"""The published CPU reproduction (docs/reproduction/): its tables are exactly what the report
renders from its committed run files, so a change to the report code, or to a run file, that
would change a published number fails here."""

from __future__ import annotations

import filecmp
from pathlib import Path

import pytest

from reports import cli

REPRO = Path(__file__).resolve().parent.parent / "docs" / "reproduction"

# (folder, [(targets, the --run-args its runs were made with, seeds)]): the Makefile's
# reproduce-cpu and reproduce-table4; None: the seeds the artifact's experiment config fixes.
# The verdicts are slow (permutation and bootstrap columns): `slow`, with a fast golden subset
# of Table 4's in tests/test_verdicts_paper.py.
RENDERS = [("", [(("figure1", "diagnostics"), "grad_norm_every=1", None),
                 (("table4",), "epochs=10", None),
                 (("table4_lr", "table4_readings"), "epochs=10", "1,2,3"),
                 (("figure3",), "grad_norm_every=1 epochs=3", "1,2,3")]),
           ("longer", [(("table4",), "grad_norm_every=1 epochs=20", "1,2,3")])]
VERDICTS = [("figure1", "grad_norm_every=1", None), ("table4", "epochs=10", None),
            ("figure3", "epochs=3", "1,2,3")]


def _render(results: Path, out: Path, renders) -> None:
    for targets, run_args, seeds in renders:
        chosen = ["--seeds", seeds] if seeds else []
        assert cli.main([*targets, "--results", str(results), "--out", str(out), *chosen,
                         "--run-args", run_args]) == 0


@pytest.mark.skipif(not (REPRO / "runs").is_dir(), reason="no published run files")
@pytest.mark.parametrize(("folder", "renders"), RENDERS)
def test_published_tables_re_render_byte_identical(tmp_path, folder, renders):
    results = REPRO / folder
    _render(results, tmp_path, renders)
    published = sorted(p.name for p in (results / "tables").iterdir()
                       if not p.name.startswith("verdicts"))
    rendered = sorted(p.name for p in (tmp_path / "tables").iterdir()
                      if not p.name.startswith("verdicts"))
    assert published == rendered
    match, mismatch, errors = filecmp.cmpfiles(results / "tables", tmp_path / "tables", published,
                                               shallow=False)
    assert not mismatch and not errors, f"re-rendered tables differ: {mismatch + errors}"


@pytest.mark.slow
@pytest.mark.skipif(not (REPRO / "runs").is_dir(), reason="no published run files")
def test_published_verdicts_re_render_byte_identical(tmp_path):
    _render(REPRO, tmp_path, [(("verdicts", artifact), run_args, seeds)
                              for artifact, run_args, seeds in VERDICTS])
    names = sorted(p.name for p in (REPRO / "tables").iterdir() if p.name.startswith("verdicts"))
    assert names == sorted(p.name for p in (tmp_path / "tables").iterdir()
                           if p.name.startswith("verdicts"))
    match, mismatch, errors = filecmp.cmpfiles(REPRO / "tables", tmp_path / "tables", names,
                                               shallow=False)
    assert not mismatch and not errors, f"re-rendered verdicts differ: {mismatch + errors}"
