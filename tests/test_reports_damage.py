"""Damaged or foreign input never reaches a number: a completed run whose metrics.jsonl was cut
short is listed as damaged and neither counted nor drawn, a bare NaN is damage, and a cell never
pools runs made on different data bytes (`identity.data.content`)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from test_reports import write_run

from reports import cli
from reports.aggregate import cell_runs, cell_stats, final_error
from reports.grids import OTHER_DATA, pending_runs
from reports.registry import demo_artifacts
from reports.runs import load_runs

METRIC = final_error("test_acc")


def _demo_cell():
    artifact = demo_artifacts(seeds=(1, 2, 3, 4))["demo_table"]
    return artifact, artifact.grids[0].cell("digits", "mlp6", "adam")


def _write(root: Path, seed: int, accs=(0.5, 0.9), content: str | None = None) -> Path:
    run_dir = write_run(root, "digits", "mlp6", "adam", seed, accs=list(accs), experiment="demo")
    if content is not None:
        summary = json.loads((run_dir / "summary.json").read_text())
        summary["identity"] = {"fingerprint": "f" * 16, "data": {"content": content}}
        (run_dir / "summary.json").write_text(json.dumps(summary))
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        config["meta"]["identity"] = summary["identity"]
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    return run_dir


def test_a_completed_run_cut_short_is_damaged_not_counted_nor_drawn(tmp_path, capsys):
    artifact, cell = _demo_cell()
    cut = _write(tmp_path, 1, accs=(0.5, 0.9))
    _write(tmp_path, 2, accs=(0.5, 0.8))
    lines = (cut / "metrics.jsonl").read_text().splitlines()
    (cut / "metrics.jsonl").write_text(lines[0] + "\n")         # 1 of 2 epochs
    runs = load_runs(tmp_path)
    stats = cell_stats(runs, cell, (1, 2), METRIC)
    assert (stats.n, round(stats.mean, 6)) == (1, 20.0)          # seed 2 alone: 100 * (1 - 0.8)
    assert [run.seed for run in cell_runs(runs, cell, (1, 2))] == [2]
    assert any(path.endswith("seed1/metrics.jsonl") and "holds 1 of the 2 epochs" in why
               for path, why in runs.damaged)
    pending = pending_runs(artifact, runs)
    assert [(p.seed, p.state) for p in pending if p.cell == cell and p.seed < 3] == [(1, "damaged")]
    assert cli.main(["demo", "--results", str(tmp_path), "--seeds", "1,2"]) == 0
    assert "holds 1 of the 2 epochs its completed summary.json claims" in capsys.readouterr().out


def test_a_bare_nan_is_damage_not_a_number(tmp_path):
    _, cell = _demo_cell()
    run_dir = _write(tmp_path, 1)
    text = (run_dir / "metrics.jsonl").read_text().replace('"test_acc": 0.9', '"test_acc": NaN')
    (run_dir / "metrics.jsonl").write_text(text)
    runs = load_runs(tmp_path)
    assert runs[0].status == "damaged"
    assert cell_stats(runs, cell, (1,), METRIC).n == 0


def test_a_cell_never_pools_runs_made_on_other_data(tmp_path, capsys):
    artifact, cell = _demo_cell()
    for seed, content in ((1, "aaaa1111"), (2, "aaaa1111"), (3, "bbbb2222")):
        _write(tmp_path, seed, accs=(0.5, 0.9 if seed < 3 else 0.1), content=content)
    _write(tmp_path, 4, accs=(0.5, 0.7))          # an older run: no fingerprint, goes with any
    runs = load_runs(tmp_path)
    stats = cell_stats(runs, cell, (1, 2, 3, 4), METRIC)
    assert stats.n == 3 and round(stats.mean, 6) == round((10 + 10 + 30) / 3, 6)
    other = [p for p in pending_runs(artifact, runs) if p.cell == cell]
    assert [(p.seed, p.state) for p in other] == [(3, OTHER_DATA)]
    assert "data bbbb2222, the cell's other runs aaaa1111" in other[0].detail
    assert cli.main(["demo", "--results", str(tmp_path), "--seeds", "1,2,3,4"]) == 0
    assert OTHER_DATA in capsys.readouterr().out


def test_a_tie_goes_to_the_lowest_seed_s_data(tmp_path):
    _, cell = _demo_cell()
    _write(tmp_path, 1, accs=(0.5, 0.9), content="cccc")
    _write(tmp_path, 2, accs=(0.5, 0.1), content="dddd")
    stats = cell_stats(load_runs(tmp_path), cell, (1, 2), METRIC)
    assert stats.n == 1 and round(stats.mean, 6) == 10.0
