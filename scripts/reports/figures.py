"""Figures 1-3 as PNG and PDF: curves against epoch, the mean over seeds with a ±1 std band.

Diverged seeds are left out of the mean; a cell whose every seed diverged is drawn from those
seeds, dotted, with "(div.)" in the legend. A panel without any run says "missing"."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .aggregate import cell_runs, curve_stats  # noqa: E402
from .grids import MIXED, Artifact, Cell, label  # noqa: E402
from .output import finish, style  # noqa: E402
from .runs import Run  # noqa: E402


def error_percent(series):
    return 100.0 * (1.0 - series)


@dataclass(frozen=True)
class Series:
    column: str               # metrics.jsonl key
    ylabel: str
    transform: object = None  # e.g. accuracy -> error %
    linewidth: float = 1.6
    suffix: str = ""


def draw_cell(ax, runs: list[Run], cell: Cell, seeds, series: Series, log: bool) -> bool:
    """One optimizer's curve on `ax`; False if the cell has nothing to draw."""
    found = cell_runs(runs, cell, seeds)
    healthy = [run for run in found if run.status != "diverged"]
    diverged = not healthy and bool(found)
    stats = curve_stats(healthy or found, series.column, series.transform)
    if stats.empty:
        return False
    line_style = style(cell.optim)
    if diverged:
        line_style["linestyle"] = ":"
    name = label(cell.optim) + series.suffix + (" (div.)" if diverged else "")
    epoch, mean, std = (stats[key].to_numpy(dtype=float) for key in ("epoch", "mean", "std"))
    if log:
        mean = np.where(mean > 0, mean, np.nan)
    ax.plot(epoch, mean, label=name, linewidth=series.linewidth, **line_style)
    if np.isfinite(std).any():
        lower = mean - std
        if log:
            lower = np.where(lower > 0, lower, np.nan)
        ax.fill_between(epoch, lower, mean + std, color=line_style["color"], alpha=0.18,
                        linewidth=0)
    return True


def note_missing(ax, missing: list[str], total: int) -> None:
    if len(missing) == total:
        ax.text(0.5, 0.5, "missing", transform=ax.transAxes, ha="center", va="center",
                fontsize=14, color="0.5")
    elif missing:
        ax.text(0.01, 0.01, "missing: " + ", ".join(missing), transform=ax.transAxes,
                fontsize=6, color="0.4", va="bottom")


def panel(ax, artifact, runs, cells: list[Cell], series_list: list[Series], log: bool) -> None:
    missing, mixed = [], []
    for cell in cells:
        drawn = [draw_cell(ax, runs, cell, artifact.plot_seeds, series, log)
                 for series in series_list]
        if not any(drawn):
            missing.append(label(cell.optim))
        if any(run.mixed_commits for run in cell_runs(runs, cell, artifact.plot_seeds)):
            mixed.append(label(cell.optim))
    note_missing(ax, missing, len(cells))
    if mixed:
        ax.text(0.01, 0.99, f"{MIXED} trained by more than one commit: " + ", ".join(mixed),
                transform=ax.transAxes, fontsize=6, color="0.3", va="top")
    if log and len(missing) < len(cells):
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))   # epochs are whole numbers
    ax.set_ylabel(series_list[0].ylabel)


def curve_grid(artifact: Artifact, runs: list[Run], out_dir: Path, columns: list[tuple],
               log: bool) -> list[Path]:
    """Columns `(title, dataset, model, overrides)`; top row training, bottom row test objective;
    one line per optimizer. Figures 1 and 3 (and the demo) are this layout."""
    fig, axes = plt.subplots(2, len(columns), figsize=(4.2 * len(columns), 7), squeeze=False)
    rows = [Series("train_loss", "training objective"), Series("test_loss", "test objective")]
    for j, (title, dataset, model, overrides) in enumerate(columns):
        cells = [artifact.grid_of(optim).cell(dataset, model, optim, overrides)
                 for optim in artifact.optims]
        for i, series in enumerate(rows):
            panel(axes[i][j], artifact, runs, cells, [series], log)
            axes[i][j].set_title(f"{title}: {series.ylabel}", fontsize=9)
    handles = [Line2D([], [], label=label(o), **style(o)) for o in artifact.optims]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8)
    return finish(fig, artifact, out_dir)


def figure1(artifact: Artifact, runs: list[Run], out_dir: Path,
            paper: dict | None = None) -> list[Path]:
    dataset = artifact.datasets[0]
    columns = [(f"{label(m)} ({label(dataset)})", dataset, m, artifact.variants[0])
               for m in artifact.models]
    return curve_grid(artifact, runs, out_dir, columns, log=True)


def figure3(artifact: Artifact, runs: list[Run], out_dir: Path,
            paper: dict | None = None) -> list[Path]:
    dataset, model = artifact.datasets[0], artifact.models[0]
    columns = [(f"BPTT {dict(v).get('dataset.bptt', '?')}", dataset, model, v)
               for v in artifact.variants]
    return curve_grid(artifact, runs, out_dir, columns, log=False)


FAMILIES = {"SGD family": ("sgdm", "sgdmclip", "sgdmng", "sgdmng_adap"),
            "Adam family": ("adam", "adamclip", "adamng", "adamng_adap")}


def figure2(artifact: Artifact, runs: list[Run], out_dir: Path,
            paper: dict | None = None) -> list[Path]:
    """Rows: datasets; columns: optimizer families; error % with training thick, test thin."""
    model = artifact.models[0]
    fig, axes = plt.subplots(len(artifact.datasets), 2, figsize=(10, 4 * len(artifact.datasets)),
                             squeeze=False)
    series = [Series("train_acc", "error (%)", error_percent, 2.4, " train"),
              Series("test_acc", "error (%)", error_percent, 0.9, " test")]
    for i, dataset in enumerate(artifact.datasets):
        for j, (family, optims) in enumerate(FAMILIES.items()):
            ax = axes[i][j]
            cells = [artifact.grid_of(o).cell(dataset, model, o, artifact.variants[0])
                     for o in optims if o in artifact.optims]
            panel(ax, artifact, runs, cells, series, log=False)
            ax.set_title(f"{label(dataset)} {label(model)}: {family}", fontsize=9)
            handles = [Line2D([], [], label=label(c.optim), **style(c.optim)) for c in cells]
            handles += [Line2D([], [], color="0.3", linewidth=2.4, label="train"),
                        Line2D([], [], color="0.3", linewidth=0.9, label="test")]
            ax.legend(handles=handles, fontsize=7)
    return finish(fig, artifact, out_dir)


FIGURES = {"figure1": figure1, "figure2": figure2, "figure3": figure3}


def render_figure(artifact: Artifact, runs: list[Run], out_dir: Path,
                  kind: str | None = None) -> list[Path]:
    return FIGURES[kind or artifact.name](artifact, runs, out_dir)
