"""Table 4's learning-rate and readings tables: the right runs in the right cells, the counts of
learning rates that work, the last-epoch mark, and the paired NG − base rows; the readings table
that Table 4's readings and the ablations share (reports.readings), and its seed pairs, the
verdicts' own."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from test_reports import write_run

from reports.aggregate import best_percent
from reports.formatting import load_paper
from reports.readings import Reading, readings_table
from reports.registry import artifacts
from reports.runs import load_runs
from reports.sensitivity import render_lr, render_readings
from reports.verdicts import evaluate, load_claims

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
    artifact = artifacts()["table4_lr"].adapt(seeds=SEEDS)
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
    render_lr(artifacts()["table4_lr"].adapt(seeds=SEEDS), load_runs(tmp_path), tmp_path,
              load_paper())
    assert _rows(tmp_path / "tables" / "table4_lr.md")["Adam"][4] == "—"


def test_readings_table_pairs_seeds_for_the_ng_rows(tmp_path: Path):
    for seed, (plain, normalized) in zip(SEEDS, [(0.70, 0.72), (0.71, 0.74), (0.69, 0.73)],
                                         strict=True):
        write_run(tmp_path, "rt", "kimcnn", "adam", seed, accs=[plain],
                  extra="model.net.max_norm=3.0", experiment="table4_kim")
        write_run(tmp_path, "rt", "kimcnn", "adamng", seed, accs=[normalized],
                  extra="model.net.max_norm=3.0", experiment="table4_kim")
    render_readings(artifacts()["table4_readings"].adapt(seeds=SEEDS), load_runs(tmp_path),
                    tmp_path, load_paper())
    rows = _rows(tmp_path / "tables" / "table4_readings.md")
    assert rows["Adam"][:3] == ["—", "70.00 ± 1.00", "—"]
    difference = rows["AdamNG − Adam"]
    assert difference[1].startswith("+3.00 [") and difference[1].endswith("(n=3)")
    assert difference[0] == "— (n=0)" and difference[3] == "+3.09"


def test_difference_rows_pair_seeds_as_the_verdicts_do(tmp_path: Path):
    """Seed 2's AdamNG diverged and seed 4's Adam is still running: both the readings table and
    the verdict pair seeds 1, 3 and 5, and give the same interval."""
    ng, base = [0.80, 0.70, 0.78, 0.79, 0.81], [0.76, 0.75, 0.77, 0.74, 0.75]
    for seed in range(1, 6):
        write_run(tmp_path, "rt", "kimcnn", "adamng", seed, accs=[0.5, ng[seed - 1]],
                  status="diverged" if seed == 2 else "completed")
        write_run(tmp_path, "rt", "kimcnn", "adam", seed, accs=[0.5, base[seed - 1]],
                  status="running" if seed == 4 else "completed")
    seeds = tuple(range(1, 6))
    runs = load_runs(tmp_path)
    render_readings(artifacts()["table4_readings"].adapt(seeds=seeds), runs, tmp_path,
                    load_paper())
    shown = _rows(tmp_path / "tables" / "table4_readings.md")["AdamNG − Adam"][0]
    data = load_claims()
    data["claims"] = [{"id": "ng-beats-base", "artifact": "table4", "quote": "q", "compare": [
        {"kind": "above", "a": "adamng", "b": "adam", "metric": "best_val_acc"}]}]
    [claim] = evaluate({"table4": artifacts()["table4"].adapt(seeds=seeds)}, runs, data)
    effect = claim.results[0].effect
    assert effect.n == 3 and round(effect.mean, 6) == round(100 * (0.04 + 0.01 + 0.06) / 3, 6)
    assert shown == f"{effect.mean:+.2f} [{effect.low:+.2f}, {effect.high:+.2f}] (n=3)"


def test_readings_table_marks_a_reading_without_the_optimizer_na():
    """No runs: every cell empty ("—"), a difference over no seeds "(n=0)"; a reading whose grids
    lack the optimizer "n/a"; a missing paper number "—", and so its gap."""
    table4 = artifacts()["table4"].grids[0]
    readings = [Reading("all", (table4,), (1, 2)),
                Reading("Adam only", (replace(table4, optims=("adam",)),), (1, 2))]
    header, rows = readings_table([], readings, [("Accuracy", best_percent("test_acc"))],
                                  ["adam", "adamng"], [("adamng", "adam")],
                                  {"adam": 74.02, "adamng": None})
    assert header == ["Optimizer", "Accuracy (all)", "Accuracy (Adam only)", "paper"]
    assert rows == [["Adam", "—", "—", "74.02"], ["AdamNG", "—", "n/a", "—"],
                    ["AdamNG − Adam", "— (n=0)", "n/a", "—"]]
