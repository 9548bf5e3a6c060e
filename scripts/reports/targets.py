"""Time to target, in the spirit of AlgoPerf: how soon each optimizer reaches what its base
optimizer reaches by the end of its run.

For each group of an artifact (dataset, model and sweep variant, e.g. one BPTT length) and each
base optimizer present (SGDM, Adam, AdaGrad), two targets are set from the base's own runs:
- training loss: the base's training loss at its last epoch, mean over its completed seeds;
- test metric: the base's best test accuracy (classification; max) or best test loss
  (language models; min), mean over seeds of each seed's best epoch.
Every optimizer of that family (the base itself, NG, NG_adap, CLIP, BNG) is then timed per seed to
the first epoch at which it reaches the target, and to the wall-clock seconds summed over its
epochs up to that one. A seed that never reaches it counts in `reached` and not in the mean.
The base reaches its own training-loss target only at, or near, its last epoch by construction:
its row is the yardstick, and `speed-up` is the base's mean epochs over the variant's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from .aggregate import SeedStats, seed_stats
from .grids import Artifact, Cell, find_run, label
from .output import write_atomic
from .runs import Run, is_finite_number

BASES = ("sgdm", "adam", "adagrad")


def base_of(optim: str) -> str | None:
    """The base optimizer an optimizer config builds on: adamng_adap -> adam, adagradbng ->
    adagrad, sgdmclip -> sgdm; None for an optimizer outside the three families."""
    for base in sorted(BASES, key=len, reverse=True):
        if optim.startswith(base):
            return base
    return None


@dataclass(frozen=True)
class Target:
    column: str      # metrics.jsonl key
    maximize: bool
    value: float     # the base's level to reach
    how: str         # how the value was set, for the table header


@dataclass(frozen=True)
class Reach:
    """One optimizer's time to one target over its seeds."""

    epochs: SeedStats
    seconds: SeedStats
    reached: int
    seeds: int


def _finished(runs: list[Run], cell: Cell, seeds: tuple[int, ...]) -> list[Run]:
    found = [find_run(runs, cell, seed) for seed in seeds]
    return [run for run in found if run is not None and run.status == "completed"
            and not run.metrics.empty]


def eval_column(runs: list[Run]) -> tuple[str, bool] | None:
    """test_acc (max) for classifiers, test_loss (min) for language models, else None."""
    for column, maximize in (("test_acc", True), ("test_loss", False)):
        if runs and all(column in run.metrics for run in runs):
            return column, maximize
    return None


def targets_for(base_runs: list[Run]) -> list[Target]:
    """The training-loss and test-metric targets set by the base optimizer's completed seeds."""
    targets = []
    finals = [run.metrics["train_loss"].iloc[-1] for run in base_runs
              if "train_loss" in run.metrics]
    stats = seed_stats(finals)
    if stats.n:
        targets.append(Target("train_loss", False, stats.mean,
                              "base's final training loss"))
    found = eval_column(base_runs)
    if found:
        column, maximize = found
        bests = [run.metrics[column].max() if maximize else run.metrics[column].min()
                 for run in base_runs]
        stats = seed_stats(bests)
        if stats.n:
            targets.append(Target(column, maximize, stats.mean,
                                  f"base's best {column}"))
    return targets


def time_to(run: Run, target: Target) -> tuple[int, float] | None:
    """(first epoch reaching the target, wall seconds summed up to it), or None if never."""
    frame = run.metrics
    if target.column not in frame:
        return None
    seconds = 0.0
    for _, row in frame.iterrows():
        step = row.get("epoch_seconds", math.nan)
        seconds += float(step) if is_finite_number(step) else math.nan
        value = row[target.column]
        if not is_finite_number(value):
            continue
        if (value >= target.value) if target.maximize else (value <= target.value):
            return int(row["epoch"]), seconds
    return None


def reach(runs: list[Run], target: Target) -> Reach:
    times = [time_to(run, target) for run in runs]
    hits = [t for t in times if t is not None]
    return Reach(seed_stats(t[0] for t in hits), seed_stats(t[1] for t in hits),
                 len(hits), len(runs))


def _groups(artifact: Artifact) -> dict[tuple, list[Cell]]:
    groups: dict[tuple, list[Cell]] = {}
    for cell in artifact.cells():
        groups.setdefault((cell.dataset, cell.model, cell.overrides), []).append(cell)
    return groups


def _mean_std(stats: SeedStats, digits: int) -> str:
    if not stats.n:
        return "not reached"
    text = f"{stats.mean:.{digits}f}"
    return text + (f" ± {stats.std:.{digits}f}" if stats.n > 1 else "")


def build_rows(artifact: Artifact, runs: list[Run]) -> list[dict]:
    """One row per (group, target, optimizer) whose base has completed runs."""
    rows = []
    for (dataset, model, overrides), cells in _groups(artifact).items():
        variant = ", ".join(f"{k}={v}" for k, v in overrides) or "-"
        by_optim = {cell.optim: _finished(runs, cell, artifact.seeds) for cell in cells}
        for base in BASES:
            if not by_optim.get(base):
                continue
            family = [o for o in by_optim if base_of(o) == base]
            for target in targets_for(by_optim[base]):
                base_reach = reach(by_optim[base], target)
                for optim in family:
                    result = reach(by_optim[optim], target)
                    speedup = (base_reach.epochs.mean / result.epochs.mean
                               if result.epochs.n and base_reach.epochs.n else math.nan)
                    rows.append({
                        "dataset": label(dataset), "model": label(model), "variant": variant,
                        "target": f"{target.column} {'≥' if target.maximize else '≤'} "
                                  f"{target.value:.4g} ({target.how}, {label(base)})",
                        "optimizer": label(optim),
                        "epochs": _mean_std(result.epochs, 1),
                        "seconds": _mean_std(result.seconds, 0),
                        "reached": f"{result.reached}/{result.seeds}",
                        "speed-up": f"{speedup:.2f}x" if math.isfinite(speedup) else "-",
                    })
    return rows


COLUMNS = ("dataset", "model", "variant", "target", "optimizer", "epochs", "seconds", "reached",
           "speed-up")


def to_markdown(artifact: Artifact, rows: list[dict]) -> str:
    lines = [f"# Time to target: {artifact.title}", "",
             "Epochs and wall-clock seconds until each optimizer first reaches the level its base "
             "optimizer reaches (mean ± std over the seeds that reach it; `reached` counts them). "
             "`speed-up` is the base's epochs over the optimizer's. Seconds are summed "
             "`epoch_seconds` (training and evaluation) on the machine that ran each seed.", ""]
    if not rows:
        lines.append("No completed base-optimizer runs yet: no targets to set.")
        return "\n".join(lines) + "\n"
    lines.append("| " + " | ".join(COLUMNS) + " |")
    lines.append("|" + "---|" * len(COLUMNS))
    for row in rows:
        lines.append("| " + " | ".join(str(row[c]) for c in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict]) -> str:
    def quote(text: str) -> str:
        return f'"{text}"' if any(c in text for c in ',"') else text
    lines = [",".join(COLUMNS)]
    lines += [",".join(quote(str(row[c]).replace('"', "'")) for c in COLUMNS) for row in rows]
    return "\n".join(lines) + "\n"


def render_targets(artifact: Artifact, runs: list[Run], out_dir: Path) -> list[Path]:
    """`<out>/tables/<artifact>_targets.md` and `.csv`, beside the artifact's own outputs."""
    rows = build_rows(artifact, runs)
    stem = Path(out_dir) / "tables" / f"{artifact.name}_targets"
    return [write_atomic(stem.with_suffix(".md"), to_markdown(artifact, rows)),
            write_atomic(stem.with_suffix(".csv"), to_csv(rows))]
