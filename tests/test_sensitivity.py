"""Table 4's learning-rate and readings tables: the right runs in the right cells, the counts of
learning rates that work, the last-epoch mark, and the paired NG − base rows."""

from __future__ import annotations

from pathlib import Path

from test_reports import write_run

from reports.grids import ARTIFACTS
from reports.runs import load_runs
from reports.sensitivity import render_lr, render_readings
from reports.tables import load_paper

SEEDS = (1, 2, 3)


def _rows(path: Path) -> dict[str, list[str]]:
    rows = [line.strip("|").split(" | ") for line in path.read_text().splitlines()
            if line.startswith("| ") and not line.startswith("| Optimizer")]
    return {row[0].strip(): [c.strip() for c in row[1:]] for row in rows}


def _adam_family(root: Path) -> None:
    """Adam peaks at its default lr; AdamNG is flat across the two learning rates present."""
    for seed in SEEDS:
        write_run(root, "rt", "kimcnn", "adam", seed, accs=[0.70, 0.80, 0.79])
        write_run(root, "rt", "kimcnn", "adamng", seed, accs=[0.70, 0.78, 0.77])
        write_run(root, "rt", "kimcnn", "adam", seed, accs=[0.50, 0.55, 0.60],
                  extra="optim.lr=1e-4", experiment="table4_lr_adam")
        write_run(root, "rt", "kimcnn", "adamng", seed, accs=[0.70, 0.775, 0.77],
                  extra="optim.lr=1e-4", experiment="table4_lr_adam")


def test_lr_table_cells_counts_and_last_epoch_mark(tmp_path: Path):
    _adam_family(tmp_path)
    artifact = ARTIFACTS["table4_lr"].adapt(seeds=SEEDS)
    paths = render_lr(artifact, load_runs(tmp_path), tmp_path, load_paper())
    rows = _rows(tmp_path / "tables" / "table4_lr.md")
    adam, adamng = rows["Adam"], rows["AdamNG"]
    assert adam[0] == "0.001" and adam[1] == "60.00 ± 0.00‡"   # x 0.1: best at the last epoch
    assert adam[3] == "80.00 ± 0.00" and adam[2] == "—"         # x 1; x 0.3 has no runs
    assert adamng[1] == "77.50 ± 0.00" and adamng[3] == "78.00 ± 0.00"
    # within 1 point of its own best, of the 2 lrs with runs: Adam 1 (only x 1), AdamNG 2
    assert adam[-3:] == ["1/2", "1/2", "74.02"] and adamng[-3:] == ["2/2", "2/2", "77.11"]
    assert rows["SGDM"][1:6] == ["—"] * 5                      # no runs: empty, not zero
    assert {p.name for p in paths} >= {"table4_lr.png", "table4_lr.pdf", "table4_lr.md"}


def test_lr_table_ignores_runs_of_another_config(tmp_path: Path):
    _adam_family(tmp_path)
    for seed in SEEDS:    # a 2-epoch Adam run at x 3 is not the x 3 cell's (150 epochs)
        write_run(tmp_path, "rt", "kimcnn", "adam", seed, accs=[0.9, 0.9],
                  extra="epochs=2,optim.lr=3e-3", experiment="table4_lr_adam")
    render_lr(ARTIFACTS["table4_lr"].adapt(seeds=SEEDS), load_runs(tmp_path), tmp_path,
              load_paper())
    assert _rows(tmp_path / "tables" / "table4_lr.md")["Adam"][4] == "—"


def test_readings_table_pairs_seeds_for_the_ng_rows(tmp_path: Path):
    for seed, (plain, normalized) in zip(SEEDS, [(0.70, 0.72), (0.71, 0.74), (0.69, 0.73)],
                                         strict=True):
        write_run(tmp_path, "rt", "kimcnn", "adam", seed, accs=[plain],
                  extra="model.net.max_norm=3.0", experiment="table4_kim")
        write_run(tmp_path, "rt", "kimcnn", "adamng", seed, accs=[normalized],
                  extra="model.net.max_norm=3.0", experiment="table4_kim")
    render_readings(ARTIFACTS["table4_readings"].adapt(seeds=SEEDS), load_runs(tmp_path),
                    tmp_path, load_paper())
    rows = _rows(tmp_path / "tables" / "table4_readings.md")
    assert rows["Adam"][:3] == ["—", "70.00 ± 1.00", "—"]
    difference = rows["AdamNG − Adam"]
    assert difference[1].startswith("+3.00 [") and difference[1].endswith("(n=3)")
    assert difference[0] == "— (n=0)" and difference[3] == "+3.09"
