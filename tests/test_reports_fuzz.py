"""The report on a damaged results tree: tiny real runs, made once, then damaged at random
(cut short, bytes flipped, files deleted or duplicated, NaN written into the metrics). Neither
the report nor `report.py verdicts` crashes, both exit 0 or 2, and no number comes from damaged
bytes: every seed the report counts reads exactly as it did before the damage."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import train
from reports import cli
from reports.aggregate import final_error
from reports.grids import find_run
from reports.registry import artifacts
from reports.runs import load_runs

RUN_ARGS = "epochs=2"
OPTIMS = ("adagrad", "adagradng")
SEEDS = (1, 2)
ARTIFACT = "ablation_adagrad_mlp"   # a table of the digits runs, no figure: fast to render
REPORT = [ARTIFACT, "--dataset", "digits", "--seeds", "1,2", "--run-args", RUN_ARGS]
METRIC = final_error("test_acc")
FILES = ("metrics.jsonl", "summary.json", "config.yaml")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """results/runs/digits/mlp6/<optim>/default/seed<k>: four completed two-epoch runs."""
    root = tmp_path_factory.mktemp("fuzz") / "results"
    for optim in OPTIMS:
        for seed in SEEDS:
            run_dir = root / "runs" / "digits" / "mlp6" / optim / "default" / f"seed{seed}"
            assert train(run_dir, f"optim={optim}", f"seed={seed}")["status"] == "completed"
    return root


def counted(results: Path) -> dict:
    """(optimizer, seed) -> (the value the table counts for it, the run folder it comes from);
    absent: not counted."""
    artifact = artifacts()[ARTIFACT].adapt("digits", SEEDS, run_args=RUN_ARGS)
    runs = load_runs(results)
    found = {}
    for optim in OPTIMS:
        grid = artifact.grid_of(optim)
        for seed in SEEDS:
            run = find_run(runs, grid.cell("digits", "mlp6", optim, grid.variants[0]), seed)
            if run is not None and run.status == "completed" and METRIC(run) is not None:
                found[optim, seed] = (METRIC(run), run.path)
    return found


def intact(run_dir: Path, original: Path) -> bool:
    """The run's history and summary are the bytes it was written with (a cut final newline
    aside)."""
    for name in ("metrics.jsonl", "summary.json"):
        now, then = run_dir / name, original / name
        if not now.exists() or now.read_bytes() not in (then.read_bytes(),
                                                         then.read_bytes().rstrip(b"\n")):
            return False
    return True


def test_the_pristine_runs_are_all_counted(pristine):
    assert set(counted(pristine)) == {(o, s) for o in OPTIMS for s in SEEDS}


def _damage(path: Path, how: str, where: float) -> None:
    data = path.read_bytes() if path.exists() else b""
    at = int(where * len(data))
    if how == "truncate":
        path.write_bytes(data[:at])
    elif how == "flip" and data:           # a high bit set: never valid UTF-8 in this text
        path.write_bytes(data[:at] + bytes([data[min(at, len(data) - 1)] | 0x80])
                         + data[at + 1:])
    elif how == "delete":
        path.unlink(missing_ok=True)
    elif how == "nan" and path.name == "metrics.jsonl":
        path.write_text(path.read_text().replace('"test_acc": ', '"test_acc": NaN, "x": ', 1))
    elif how == "duplicate":                # the whole folder again, as another seed's
        twin = path.parent.with_name("seed9")
        if not twin.exists():
            shutil.copytree(path.parent, twin)


DAMAGE = st.tuples(st.sampled_from(OPTIMS), st.sampled_from(SEEDS), st.sampled_from(FILES),
                   st.sampled_from(("truncate", "flip", "delete", "nan", "duplicate")),
                   st.floats(0, 1))


@settings(max_examples=10, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(damages=st.lists(DAMAGE, min_size=1, max_size=3))
def test_damage_never_crashes_and_never_counts(pristine, tmp_path_factory, damages):
    before = counted(pristine)
    results = tmp_path_factory.mktemp("damaged") / "results"
    shutil.copytree(pristine, results)
    for optim, seed, name, how, where in damages:
        _damage(results / "runs" / "digits" / "mlp6" / optim / "default" / f"seed{seed}" / name,
                how, where)
    after = counted(results)
    for (optim, seed), (value, run_dir) in after.items():
        assert value == before[optim, seed][0], (damages, before, after)
        original = pristine / "runs" / "digits" / "mlp6" / optim / "default" / f"seed{seed}"
        assert intact(run_dir, original), (damages, run_dir)
    out = results.parent / "out"
    assert cli.main([*REPORT, "--results", str(results), "--out", str(out)]) in (0, 2)
    assert cli.main(["verdicts", *REPORT[1:], "--results", str(results),
                     "--out", str(out)]) in (0, 2)
