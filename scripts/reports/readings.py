"""A table of readings: one setup's optimizers under several readings of the paper's protocol,
side by side (Table 4 under Kim's and the TF port's readings, .sensitivity; the ablations'
default and other reading, .tuning).

Rows: the optimizers, then any paired difference rows (one optimizer minus another, seed by
seed: .pairs); columns: each reading's metrics, mean ± sample std over seeds, then the paper's
number where one is given. The callers add the wording (column names, note) and write it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .aggregate import Metric, cell_stats
from .formatting import format_stats
from .grids import Cell, Grid, label
from .pairs import pair_seeds
from .runs import Run, is_finite_number
from .stats import paired_effect

MIN_PAIRS = 2  # a paired interval needs two seeds


@dataclass(frozen=True)
class Reading:
    """One reading, a group of columns: its name in the header and the grids whose runs hold it
    (an optimizer's cell is the first of them that has the optimizer). `seeds`: the seeds read;
    () reads each grid's own."""

    name: str
    grids: tuple[Grid, ...]
    seeds: tuple[int, ...] = ()

    def cell(self, optim: str) -> tuple[Cell, tuple[int, ...]] | None:
        """(optim's cell, its seeds), or None where no grid of this reading runs `optim`."""
        grid = next((g for g in self.grids if optim in g.optims), None)
        if grid is None:
            return None
        return (grid.cell(grid.datasets[0], grid.models[0], optim, grid.variants[0]),
                self.seeds or grid.seeds)

    def stats(self, runs: list[Run], optim: str, metric: Metric) -> str:
        """`optim` under this reading: mean ± std over its seeds; n/a where it has no cell."""
        found = self.cell(optim)
        return "n/a" if found is None else format_stats(cell_stats(runs, *found, metric))

    def difference(self, runs: list[Run], first: str, second: str, metric: Metric) -> str:
        """first − second over the seeds that pair (of the first's seeds): mean [95% t
        interval] (n); n/a where either has no cell."""
        ours, theirs = self.cell(first), self.cell(second)
        if ours is None or theirs is None:
            return "n/a"
        pairs = pair_seeds(runs, [ours[0], theirs[0]], ours[1], metric)
        if len(pairs.seeds) < MIN_PAIRS:
            return f"— (n={len(pairs.seeds)})"
        effect = paired_effect([np.asarray(column) for column in pairs.columns], [1.0, -1.0])
        return f"{effect.mean:+.2f} [{effect.low:+.2f}, {effect.high:+.2f}] (n={effect.n})"


def readings_table(runs: list[Run], readings: Sequence[Reading],
                   metrics: Sequence[tuple[str, Metric]], optims: Sequence[str],
                   differences: Sequence[tuple[str, str]] = (),
                   paper: dict[str, float | None] | None = None
                   ) -> tuple[list[str], list[list[str]]]:
    """(header, rows). A column per (reading, metric), headed "metric (reading)", or the
    reading's name alone for an unnamed metric; `differences`: (first, second) optimizers, a row
    of first − second each; `paper`: each optimizer's paper number, a last column "paper"."""
    header = ["Optimizer"] + [f"{name} ({reading.name})" if name else reading.name
                              for reading in readings for name, _ in metrics]
    header += [] if paper is None else ["paper"]
    rows = []
    for optim in optims:
        cells = [reading.stats(runs, optim, metric)
                 for reading in readings for _, metric in metrics]
        rows.append([label(optim), *cells] + ([] if paper is None else [_number(paper, optim)]))
    for first, second in differences:
        cells = [reading.difference(runs, first, second, metric)
                 for reading in readings for _, metric in metrics]
        rows.append([f"{label(first)} − {label(second)}", *cells]
                    + ([] if paper is None else [_gap(paper, first, second)]))
    return header, rows


def _number(paper: dict[str, float | None], optim: str) -> str:
    reported = paper.get(optim)
    return "—" if reported is None else f"{reported:.2f}"


def _gap(paper: dict[str, float | None], first: str, second: str) -> str:
    reported = [paper.get(first), paper.get(second)]
    return (f"{reported[0] - reported[1]:+.2f}" if all(map(is_finite_number, reported))
            else "—")
