"""A seed pair: the one definition the verdicts and the tables' difference rows share.

Seed s pairs cells c1..ck when each cell has a run for s (grids.find_run: the cell's own config)
that completed and holds the metric. A seed that does not pair is left out and its reason kept
(missing, diverged, not finished, ...): a paired contrast is then over the seeds that pair,
never over values filled in for the others. Two folders holding runs of one cell's config and
seed conflict: neither is used, and both are named."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .grids import Cell, find_run, label
from .runs import Run


@dataclass
class Pairs:
    """`seeds`: the seeds that pair, in the order asked; `columns[k]`: cell k's values at them;
    `runs[i]`: the runs of seeds[i], one per cell; `problems`: why the other seeds do not pair
    (kind -> "AdamNG Kim-CNN seed 3", the first cell that failed each); `diverged[k]`: the
    seeds asked at which cell k's run diverged (every cell, not only the first that failed);
    `conflicts`: "AdamNG Kim-CNN seed 3: <folder>, <folder>" for each conflicting seed."""

    seeds: list[int] = field(default_factory=list)
    columns: list[list[float]] = field(default_factory=list)
    runs: list[list[Run]] = field(default_factory=list)
    problems: dict[str, list[str]] = field(default_factory=dict)
    diverged: list[list[int]] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)

    @property
    def mixed(self) -> list[int]:
        """The paired seeds with a run trained by more than one commit (marked †)."""
        return [seed for seed, found in zip(self.seeds, self.runs, strict=True)
                if any(run.mixed_commits for run in found)]


def pair_seeds(runs: list[Run], cells: Sequence[Cell], seeds: Sequence[int],
               value: Callable[[Run], float | None]) -> Pairs:
    """The seeds at which every cell has a completed run whose `value` is not None."""
    pairs = Pairs(columns=[[] for _ in cells], diverged=[[] for _ in cells])
    for seed in seeds:
        answers = [find_run(runs, cell, seed) for cell in cells]
        for index, run in enumerate(answers):
            if run is not None and run.status == "diverged":
                pairs.diverged[index].append(seed)
        values, found = [], []
        for cell, run in zip(cells, answers, strict=True):
            status = run.status if run is not None else _absent(runs, cell, seed)
            twins = _same_config(runs, cell, seed) if run is not None else []
            if len(twins) > 1:
                status = "conflicting folders"
                where = f"{label(cell.optim)} {_short(cell)}seed {seed}".strip()
                pairs.conflicts.append(f"{where}: {', '.join(str(r.path) for r in twins)}")
            if status == "completed":
                number = value(run)
                status = "without the metric" if number is None else status
            if status != "completed":
                where = f"{label(cell.optim)} {_short(cell)}seed {seed}".strip()
                pairs.problems.setdefault(_problem(status), []).append(where)
                break
            values.append(number)
            found.append(run)
        else:
            pairs.seeds.append(seed)
            pairs.runs.append(found)
            for column, number in zip(pairs.columns, values, strict=True):
                column.append(number)
    return pairs


def _same_config(runs: list[Run], cell: Cell, seed: int) -> list[Run]:
    """Every run folder answering (cell, seed): more than one is a conflict."""
    names = (cell.dataset, cell.model, cell.optim, seed)
    return sorted((run for run in runs if (run.dataset, run.model, run.optim, run.seed) == names
                   and cell.matches(run)), key=lambda run: str(run.path))


def _short(cell: Cell) -> str:
    extra = "".join(f"{k.rpartition('.')[2]}={v} " for k, v in cell.overrides)
    return f"{label(cell.model)} {extra}"


def _absent(runs: list[Run], cell: Cell, seed: int) -> str:
    """Why no run answers the cell: none at all, or one of another config (other overrides,
    epochs or code defaults; the report's missing-runs list names the differences)."""
    names = (cell.dataset, cell.model, cell.optim, seed)
    other = any((run.dataset, run.model, run.optim, run.seed) == names for run in runs)
    return "only under another config" if other else "missing"


def _problem(status: str) -> str:
    if status in ("diverged", "without the metric", "missing", "only under another config",
                  "conflicting folders"):
        return status
    return "not finished"
