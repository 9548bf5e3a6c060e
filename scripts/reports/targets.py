"""Where each optimizer ends, and how soon it gets there (time to target, in the spirit of
AlgoPerf), for any artifact's runs.

The endpoint table gives, per cell, the final training and test loss, the best test metric and
the epoch it came at, and how much the test loss still swings in the second half of training (the mean absolute change from
one epoch to the next), each as mean ± std over the completed seeds.

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
A target that every seed of every optimizer of the family reaches at its first epoch (a base
that never left chance level) separates nothing; it is replaced by the family's best level of
the same measure (the lowest mean final training loss, the highest mean best test accuracy, the
lowest mean best test loss), named with the optimizer that set it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

from .aggregate import SeedStats, seed_stats
from .grids import Artifact, Cell, find_run, label
from .runs import Run, is_finite_number
from .writer import markdown_table, write_atomic, write_table

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
    setter: str = ""  # the optimizer whose runs set it, when not the base


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


def separates(family: dict[str, list[Run]], target: Target) -> bool:
    """False when every seed of every optimizer reaches `target` at its first epoch."""
    for runs in family.values():
        for run in runs:
            hit = time_to(run, target)
            if hit is None or hit[0] > int(run.metrics["epoch"].min()):
                return True
    return False


def family_targets(family: dict[str, list[Run]], base: str) -> list[Target]:
    """The base's targets, each that separates nothing replaced by the family's best level."""
    chosen = []
    for target in targets_for(family[base]):
        if not separates(family, target):
            levels = [(found, optim) for optim, runs in family.items()
                      for found in targets_for(runs) if found.column == target.column]
            value, optim = (max if target.maximize else min)(
                ((found.value, optim) for found, optim in levels),
                key=lambda item: item[0])
            target = Target(target.column, target.maximize, value,
                            target.how.replace("base's best", "family's best")
                            .replace("base's", "family's best"), optim)
        chosen.append(target)
    return chosen


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


def _epochs(stats: SeedStats) -> str:
    """Epochs: one seed's is a whole number ("3"); a mean over seeds keeps a decimal."""
    return _mean_std(stats, 0 if stats.n == 1 else 1)


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
            family = [o for o in by_optim if base_of(o) == base and by_optim[o]]
            for target in family_targets({o: by_optim[o] for o in family}, base):
                base_reach = reach(by_optim[base], target)
                for optim in family:
                    result = reach(by_optim[optim], target)
                    speedup = (base_reach.epochs.mean / result.epochs.mean
                               if result.epochs.n and base_reach.epochs.n else math.nan)
                    rows.append({
                        "dataset": label(dataset), "model": label(model), "variant": variant,
                        "target": f"{target.column} {'≥' if target.maximize else '≤'} "
                                  f"{target.value:.4g} ({target.how}, "
                                  f"{label(target.setter or base)})",
                        "optimizer": label(optim),
                        "epochs": _epochs(result.epochs),
                        "seconds": _mean_std(result.seconds, 0),
                        "reached": f"{result.reached}/{result.seeds}",
                        "speed-up": f"{speedup:.2f}x" if math.isfinite(speedup) else "-",
                    })
    return rows


def _wiggle(run: Run) -> float | None:
    """Mean |test_loss(e) - test_loss(e-1)| over the second half of the epochs."""
    if "test_loss" not in run.metrics:
        return None
    values = run.metrics["test_loss"].tolist()
    half = values[len(values) // 2:]
    steps = [abs(b - a) for a, b in pairwise(half) if math.isfinite(a) and math.isfinite(b)]
    return sum(steps) / len(steps) if steps else None


def endpoint_rows(artifact: Artifact, runs: list[Run]) -> list[dict]:
    """One row per cell with completed seeds: where its curves end, mean ± std over seeds."""
    rows = []
    for (dataset, model, overrides), cells in _groups(artifact).items():
        variant = ", ".join(f"{k}={v}" for k, v in overrides) or "-"
        for cell in cells:
            done = _finished(runs, cell, artifact.seeds)
            if not done:
                continue
            found = eval_column(done)
            best_rows = ([run.metrics.loc[run.metrics[found[0]].idxmax() if found[1]
                                          else run.metrics[found[0]].idxmin()] for run in done]
                         if found else [])
            rows.append({
                "dataset": label(dataset), "model": label(model), "variant": variant,
                "optimizer": label(cell.optim), "seeds": str(len(done)),
                "epochs": str(int(max(run.metrics["epoch"].max() for run in done))),
                "final train_loss": _mean_std(seed_stats(
                    run.metrics["train_loss"].iloc[-1] for run in done
                    if "train_loss" in run.metrics), 4),
                "final test_loss": _mean_std(seed_stats(
                    run.metrics["test_loss"].iloc[-1] for run in done
                    if "test_loss" in run.metrics), 4),
                "best test": (f"{found[0]} {_mean_std(seed_stats(r[found[0]] for r in best_rows), 4)}"
                              if found else "-"),
                "best at epoch": _epochs(seed_stats(r["epoch"] for r in best_rows)),
                "test_loss swing": _mean_std(seed_stats(_wiggle(run) for run in done), 4),
            })
    return rows


ENDPOINT_COLUMNS = ("dataset", "model", "variant", "optimizer", "seeds", "epochs",
                    "final train_loss", "final test_loss", "best test", "best at epoch",
                    "test_loss swing")
COLUMNS = ("dataset", "model", "variant", "target", "optimizer", "epochs", "seconds", "reached",
           "speed-up")


def _markdown_table(columns: tuple[str, ...], rows: list[dict]) -> list[str]:
    return markdown_table(columns, _cells(columns, rows), aligned=False)


def _cells(columns: tuple[str, ...], rows: list[dict]) -> list[list[str]]:
    return [[str(row[column]) for column in columns] for row in rows]


def to_markdown(artifact: Artifact, rows: list[dict], ends: list[dict]) -> str:
    lines = [f"# {artifact.title}: where each optimizer ends, and how soon", "",
             "## Endpoints", "",
             "Mean ± std over the completed seeds. `best at epoch`: the epoch of each seed's best "
             "test metric (its first, on ties). `test_loss swing`: the mean absolute change of "
             "the test loss from one epoch to the next over the second half of training.", ""]
    lines += _markdown_table(ENDPOINT_COLUMNS, ends) if ends else ["No completed runs yet."]
    lines += ["", "## Time to target", "",
              "Epochs and wall-clock seconds until each optimizer first reaches the level its base "
             "optimizer reaches (mean ± std over the seeds that reach it; `reached` counts them). "
             "`speed-up` is the base's epochs over the optimizer's. Seconds are summed "
             "`epoch_seconds` (training and evaluation) on the machine that ran each seed.", ""]
    lines += (_markdown_table(COLUMNS, rows) if rows
              else ["No completed base-optimizer runs yet: no targets to set."])
    return "\n".join(lines) + "\n"


def render_targets(artifact: Artifact, runs: list[Run], out_dir: Path,
                   paper: dict | None = None) -> list[Path]:
    """`<out>/tables/<artifact>_targets.md` (endpoints and time to target) and `.csv` (time to
    target), beside the artifact's own outputs."""
    rows, ends = build_rows(artifact, runs), endpoint_rows(artifact, runs)
    stem = Path(out_dir) / "tables" / f"{artifact.name}_targets"
    write_atomic(stem.with_name(f"{stem.name}.md"), to_markdown(artifact, rows, ends))
    return [stem.with_name(f"{stem.name}.md"),
            *write_table(stem, COLUMNS, _cells(COLUMNS, rows), formats=("csv",))]
