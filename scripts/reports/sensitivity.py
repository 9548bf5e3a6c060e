"""Why Table 4 differs: its learning-rate sensitivity and its two readings of Kim's setup.

`table4_lr`: each optimizer's best validation accuracy at its default lr (Table 4's own runs,
x 1) and at x 0.1, 0.3, 3 and 10 (the `table4_lr_*` sweeps), as a table and a figure with one
panel per optimizer family, the NG variant beside its base and a +-1 std band over seeds. The
table also counts the learning rates that "work": those within 1 point of the optimizer's own
best, and those at or above 70%.

`table4_readings`: the six optimizers under Table 4's own protocol, Kim's reading
(`table4_kim`) and the TF port's reading (`table4_tfport`), with the paper's number and, per
reading, each NG variant's paired difference to its base (mean over the seeds that pair, as
the verdicts pair them, with its 95% t interval): a table of readings (.readings)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .aggregate import SeedStats, best_percent, cell_stats  # noqa: E402
from .formatting import format_stats, seeds_text, write_rows  # noqa: E402
from .grids import Artifact, Cell, Grid, find_run, label  # noqa: E402
from .output import save_figure, style  # noqa: E402
from .readings import Reading, readings_table  # noqa: E402
from .runs import Run, is_finite_number  # noqa: E402

METRIC = best_percent("test_acc")
FAMILIES = (("sgdm", "sgdmng"), ("adam", "adamng"), ("adagrad", "adagradng"))
WORKS_WITHIN = 1.0     # points of accuracy below the optimizer's own best that still "work"
WORKS_ABOVE = 70.0     # an absolute bar: the paper's unnormalized baselines sit at 64-74
LAST = "‡"                  # grids.MIXED (†) marks runs of several commits


def _reference(artifact: Artifact) -> Grid:
    return next(g for g in artifact.grids if g.reference)


def lr_cells(artifact: Artifact, optim: str) -> list[tuple[float, Cell]]:
    """(lr multiplier, cell) for `optim`, sorted: x 1 is the reference grid's (Table 4's) cell."""
    reference = _reference(artifact)
    base = reference.cell(reference.datasets[0], reference.models[0], optim)
    default = float(base.value("optim.lr"))
    found = {1.0: base}
    for grid in artifact.grids:
        if grid.reference or optim not in grid.optims:
            continue
        for variant in grid.variants:
            cell = grid.cell(grid.datasets[0], grid.models[0], optim, variant)
            found[round(float(cell.value("optim.lr")) / default, 6)] = cell
    return sorted(found.items())


def _peaked_last(runs: list[Run], cell: Cell, seeds: tuple[int, ...]) -> bool:
    """A completed seed whose best validation accuracy came at its last epoch: more epochs
    might raise it."""
    for seed in seeds:
        run = find_run(runs, cell, seed)
        if run is None or run.status != "completed" or "test_acc" not in run.metrics:
            continue
        accuracy = run.metrics["test_acc"]
        if len(accuracy) > 1 and accuracy.iloc[-1] >= accuracy.max():
            return True
    return False


def _working(points: list[tuple[float, SeedStats]]) -> tuple[str, str]:
    """How many of the learning rates with a result work, as "k/n"; a diverged one does not."""
    finished = [s for _, s in points if s.n or s.n_diverged]
    means = [s.mean for s in finished if s.n]
    best = max(means, default=math.nan)
    within = sum(m >= best - WORKS_WITHIN for m in means)
    above = sum(m >= WORKS_ABOVE for m in means)
    return f"{within}/{len(finished)}", f"{above}/{len(finished)}"


def render_lr(artifact: Artifact, runs: list[Run], out_dir: Path, paper: dict) -> list[Path]:
    optims = [o for family in FAMILIES for o in family if o in artifact.optims]
    multipliers = sorted({m for o in optims for m, _ in lr_cells(artifact, o)})
    header = (["Optimizer", "default lr"] + [f"× {m:g}" for m in multipliers]
              + [f"lrs within {WORKS_WITHIN:g} pt of best", f"lrs ≥ {WORKS_ABOVE:g}%", "paper"])
    rows, curves = [], {}
    values = paper.get("table4", {}).get("values", {})
    for optim in optims:
        cells = dict(lr_cells(artifact, optim))
        points = [(m, cell_stats(runs, cell, artifact.seeds, METRIC)) for m, cell in cells.items()]
        curves[optim] = points
        texts = []
        for multiplier in multipliers:
            cell = cells.get(multiplier)
            stats = dict(points).get(multiplier)
            if cell is None or stats is None:
                texts.append("n/a")
                continue
            last = LAST if _peaked_last(runs, cell, artifact.seeds) else ""
            texts.append(format_stats(stats) + last)
        within, above = _working(points)
        reported = values.get(optim, {}).get("best_val_acc", {}).get("mean")
        rows.append([label(optim), f"{float(cells[1.0].value('optim.lr')):g}", *texts,
                     within, above,
                     "—" if reported is None else f"{reported:.2f}"])
    note = (f"Best validation accuracy (%) over the run's epochs, mean ± sample std (ddof=1) over "
            f"{seeds_text(artifact.seeds)}; × 1 is Table 4's own run. {LAST}: a "
            "seed's best came at its last epoch (more epochs might raise it). A learning rate "
            f"'works' within {WORKS_WITHIN:g} point of the optimizer's own best mean, or at "
            f"{WORKS_ABOVE:g}% and above (k of the n learning rates with a result; a diverged one "
            "does not work). Paper: Table 4 (150 epochs, default settings).")
    return (write_rows(artifact, header, rows, note, out_dir)
            + _lr_figure(artifact, curves, values, out_dir))


def _lr_figure(artifact: Artifact, curves: dict, paper_values: dict, out_dir: Path) -> list[Path]:
    families = [f for f in FAMILIES if any(o in curves for o in f)]
    figure, axes = plt.subplots(1, len(families), figsize=(4.2 * len(families), 3.6),
                                sharey=True, squeeze=False)
    for axis, family in zip(axes[0], families, strict=True):
        for optim in family:
            points = [(m, s) for m, s in curves.get(optim, []) if s.n]
            if not points:
                continue
            x = np.array([m for m, _ in points])
            mean = np.array([s.mean for _, s in points])
            std = np.array([0.0 if math.isnan(s.std) else s.std for _, s in points])
            axis.plot(x, mean, marker="o", label=label(optim), **style(optim))
            axis.fill_between(x, mean - std, mean + std, alpha=0.2,
                              color=style(optim)["color"], linewidth=0)
            reported = paper_values.get(optim, {}).get("best_val_acc", {}).get("mean")
            if is_finite_number(reported):
                axis.axhline(reported, color=style(optim)["color"], linewidth=0.8, alpha=0.6,
                             linestyle=(0, (1, 3)))
        axis.set_xscale("log")
        axis.set_xlabel("lr / default lr")
        axis.set_title(" vs ".join(label(o) for o in family))
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=8)
        else:
            axis.text(0.5, 0.5, "missing", transform=axis.transAxes, ha="center")
    axes[0][0].set_ylabel("best validation accuracy (%)")
    scale = "  [QUICK SCALE]" if artifact.scale == "quick" else ""
    figure.suptitle(f"{artifact.title}{scale}; dotted: the paper's Table 4", fontsize=10)
    figure.tight_layout()
    paths = save_figure(figure, Path(out_dir) / "figures" / artifact.name)
    plt.close(figure)
    return paths


def render_readings(artifact: Artifact, runs: list[Run], out_dir: Path,
                    paper: dict) -> list[Path]:
    """Rows: the six optimizers, then each NG − base difference; columns: the readings."""
    grids = [_reference(artifact)] + [g for g in artifact.grids if not g.reference]
    names = {"table4": "Table 4's protocol", "table4_kim": "Kim's reading",
             "table4_tfport": "the TF port's reading"}
    values = paper.get("table4", {}).get("values", {})
    optims = [o for family in FAMILIES for o in reversed(family)]
    header, rows = readings_table(
        runs, [Reading(names.get(g.sweep, g.sweep), (g,), artifact.seeds) for g in grids],
        [("", METRIC)], optims, [(normalized, base) for base, normalized in FAMILIES],
        {o: values.get(o, {}).get("best_val_acc", {}).get("mean") for o in optims})
    settings = "; ".join(
        f"{names.get(g.sweep, g.sweep)}: "
        + (", ".join(f"{k}={v}" for k, v in g.variants[0]) or "the defaults")
        for g in grids)
    note = (f"Best validation accuracy (%), mean ± sample std (ddof=1) over "
            f"{seeds_text(artifact.seeds)}; the difference rows pair seeds: mean "
            f"[95% t interval] (n). {settings}. docs/PROTOCOL.md names both readings. "
            "Paper: Table 4, one run each.")
    return write_rows(artifact, header, rows, note, out_dir)
