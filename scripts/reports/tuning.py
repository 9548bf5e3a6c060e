"""The tuning tables (the paper's holdout searches) and the two-reading ablation tables, as
Markdown, LaTeX (booktabs) and CSV.

Tuning (`tune_*`, `ablation_clip_global`): one row per (dataset, optimizer, fixed overrides),
one column per searched value: the holdout error (%) of that value's run, then our pick (the
value with the lowest holdout error among the finished, non-diverged runs) and the paper's pick
(scripts/reports/paper_results.yaml `tuning`). Readings (`ablation_bn_blocks`,
`ablation_imagenet_decay`): one row per optimizer, the default reading's result (the reference
grids: another artifact's runs) next to the other reading's (the ablation's own sweep), a table
of readings (.readings) as Table 4's are."""

from __future__ import annotations

from pathlib import Path

from .aggregate import SeedStats, cell_stats, final_error
from .formatting import (
    best_finished,
    format_stats,
    key_label,
    plain_note,
    seeds_text,
    write_rows,
)
from .grids import Artifact, Cell, Grid, label
from .readings import Reading, readings_table
from .runs import Run

HOLDOUT = "dataset.holdout"


def _fixed(variant, key: str) -> tuple:
    return tuple((k, v) for k, v in variant if k != key)


def pick(stats: dict[str, SeedStats]) -> tuple[str, str]:
    """(our pick, its text): the lowest mean among finished runs; ties go to the first value."""
    value = best_finished(stats)
    if value is None:
        return "", "—"
    done = sum(1 for s in stats.values() if s.n or s.n_diverged)
    return value, value + ("" if done == len(stats) else f" ({done}/{len(stats)} done)")


def render_tuning(artifact: Artifact, runs: list[Run], out_dir: Path, paper: dict) -> list[Path]:
    key, entry = artifact.tune_key, artifact.tune[1]
    tuning = ((paper.get("tuning") or {}).get(entry)) or {}
    values = list(dict.fromkeys(dict(v)[key] for g in artifact.grids for v in g.variants))
    header = ["Run"] + [f"{key_label(key)}={v}" for v in values] + ["our pick", "paper's pick"]
    metric = final_error("test_acc")
    rows = []
    for grid in artifact.grids:
        fixed_sets = list(dict.fromkeys(_fixed(v, key) for v in grid.variants))
        for dataset in grid.datasets:
            for model in grid.models:
                for optim in grid.optims:
                    for fixed in fixed_sets:
                        stats = {v: cell_stats(runs, grid.cell(dataset, model, optim,
                                                               _with(fixed, key, v, grid)),
                                               grid.seeds, metric) for v in values}
                        ours, text = pick(stats)
                        shown = [f"{key_label(k)}={v}" for k, v in fixed if k != HOLDOUT]
                        name = " ".join([label(dataset), label(model), label(optim), *shown])
                        cells = [f"**{format_stats(s)}**" if v == ours else format_stats(s)
                                 for v, s in stats.items()]
                        best = tuning.get("best")
                        rows.append([name, *cells, text, "n/a" if best is None else str(best)])
    searched = tuning.get("searched")
    note = plain_note(artifact, (
        "Error (%) on the 5,000 held-out CIFAR training images (dataset.holdout=5000; trained on "
        f"the other 45,000) at the last epoch, {seeds_text(artifact.seeds)}; bold "
        "and 'our pick': the lowest. The paper's pick and searched values "
        f"({searched}): the paper (arXiv 1707.04822), section 4.2"
        + ("; it searched per-layer clipping only." if any(
            name.endswith("blocks") and value == "global"
            for g in artifact.grids for v in g.variants for name, value in v)
           else ".")))
    return write_rows(artifact, header, rows, note, out_dir)


def _with(fixed: tuple, key: str, value: str, grid: Grid) -> tuple:
    """The variant of `grid` with `fixed` overrides and key=value, in the grid's key order."""
    wanted = dict(fixed) | {key: value}
    order = [k for k, _ in grid.variants[0]]
    return tuple((k, wanted[k]) for k in order if k in wanted)


def render_readings(artifact: Artifact, runs: list[Run], out_dir: Path, paper: dict) -> list[Path]:
    """Rows: optimizers; columns: each metric under the default reading, then the other."""
    ablation = next(g for g in artifact.grids if not g.reference)
    keys = [k for k, _ in ablation.variants[0]]
    first = Cell(ablation.datasets[0], ablation.models[0], ablation.optims[-1])
    default_text = ", ".join(f"{key_label(k)}={first.value(k)}" for k in keys)
    other_text = ", ".join(f"{key_label(k)}={v}" for k, v in ablation.variants[0])
    topk = ablation.datasets[0] == "imagenet"
    metrics = ([("Top-1 error", final_error("test_top1")), ("Top-5 error", final_error("test_top5"))]
               if topk else [("Test error", final_error("test_acc"))])
    readings = [Reading(default_text, tuple(g for g in artifact.grids if g.reference)),
                Reading(other_text, (ablation,))]
    header, rows = readings_table(runs, readings, metrics, ablation.optims)
    sources = ", ".join(dict.fromkeys(g.sweep for g in artifact.grids if g.reference))
    note = plain_note(artifact, (
        f"Mean ± sample std (ddof=1) over {seeds_text(ablation.seeds)} at the last "
        f"epoch. Default reading ({default_text}): the runs of {sources}; other reading "
        f"({other_text}): the runs of {ablation.sweep}. docs/PROTOCOL.md gives both readings."))
    return write_rows(artifact, header, rows, note, out_dir)
