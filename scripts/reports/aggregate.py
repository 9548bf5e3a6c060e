"""Seed aggregation. `seed_stats` is the one place mean ± std over seeds is computed; table cells
(`cell_stats`) and figure curves (`curve_stats`) both go through it."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import pandas as pd

from .grids import Artifact, Cell, find_run
from .runs import Run, is_finite_number


@dataclass(frozen=True)
class SeedStats:
    """mean and sample std (ddof=1; NaN when n < 2) over `n` finished seeds.

    `n_diverged` seeds diverged and are not in the mean; `n_expected` seeds were asked for;
    `n_mixed` of the counted seeds were trained by more than one commit."""

    mean: float
    std: float
    n: int
    n_diverged: int = 0
    n_expected: int = 0
    n_mixed: int = 0

    @property
    def all_diverged(self) -> bool:
        return self.n == 0 and self.n_diverged > 0

    @property
    def missing(self) -> bool:
        return self.n == 0 and self.n_diverged == 0


def seed_stats(values: Iterable[float], n_diverged: int = 0, n_expected: int = 0,
               n_mixed: int = 0) -> SeedStats:
    finite = [float(v) for v in values if is_finite_number(v)]
    n = len(finite)
    mean = sum(finite) / n if n else math.nan
    std = math.sqrt(sum((v - mean) ** 2 for v in finite) / (n - 1)) if n > 1 else math.nan
    return SeedStats(mean, std, n, n_diverged, n_expected or n + n_diverged, n_mixed)


Metric = Callable[[Run], float | None]


def final_error(key: str) -> Metric:
    """Error in % from the last epoch's accuracy fraction `key` (test_acc, test_top1, ...)."""
    def metric(run: Run) -> float | None:
        value = run.final.get(key)
        return 100.0 * (1.0 - value) if is_finite_number(value) else None
    return metric


def best_percent(key: str) -> Metric:
    """The best (max) accuracy fraction `key` in %, from summary.json `best`, else the curve."""
    def metric(run: Run) -> float | None:
        value = run.best.get(key)
        if not is_finite_number(value) and key in run.metrics:
            value = run.metrics[key].max()
        return 100.0 * value if is_finite_number(value) else None
    return metric


def final_value(key: str) -> Metric:
    def metric(run: Run) -> float | None:
        value = run.final.get(key)
        return float(value) if is_finite_number(value) else None
    return metric


def cell_stats(runs: list[Run], cell: Cell, seeds: Iterable[int], metric: Metric) -> SeedStats:
    """A table cell: `metric` of each completed seed; diverged seeds are counted, not averaged.

    (A completed run whose final loss is not finite has status "diverged", see Run.status.)
    Running, failed and missing seeds, and a completed run without the metric, are left out;
    the first three show up in the missing-runs list."""
    seeds = list(seeds)
    values, n_diverged, n_mixed = [], 0, 0
    for seed in seeds:
        run = find_run(runs, cell, seed)
        if run is None or run.status not in ("completed", "diverged"):
            continue
        n_mixed += run.mixed_commits
        if run.status == "diverged":
            n_diverged += 1
            continue
        value = metric(run)
        if value is not None:
            values.append(value)
    return seed_stats(values, n_diverged, len(seeds), n_mixed)


def cell_runs(runs: list[Run], cell: Cell, seeds: Iterable[int]) -> list[Run]:
    """The runs of a cell that have any curve to draw, in seed order (a damaged one has none:
    its history is partial)."""
    found = [find_run(runs, cell, seed) for seed in seeds]
    return [run for run in found
            if run is not None and run.status != "damaged" and not run.metrics.empty]


def curve_stats(runs: list[Run], column: str, transform: Callable | None = None) -> pd.DataFrame:
    """Per-epoch mean ± std of `column` over `runs` (the seeds): columns epoch, mean, std, n.

    Non-finite points (a run blowing up) are left out of that epoch's mean."""
    frames = [run.metrics[["epoch", column]] for run in runs if column in run.metrics]
    if not frames:
        return pd.DataFrame(columns=["epoch", "mean", "std", "n"])
    stacked = pd.concat(frames)
    if transform is not None:
        stacked[column] = transform(stacked[column])
    rows = []
    for epoch, group in stacked.groupby("epoch", sort=True):
        stats = seed_stats(group[column].tolist())
        if stats.n:
            rows.append({"epoch": epoch, "mean": stats.mean, "std": stats.std, "n": stats.n})
    return pd.DataFrame(rows, columns=["epoch", "mean", "std", "n"])


def artifact_stats(artifact: Artifact, runs: list[Run], metric: Metric) -> dict[Cell, SeedStats]:
    return {cell: cell_stats(runs, cell, artifact.seeds, metric) for cell in artifact.cells()}
