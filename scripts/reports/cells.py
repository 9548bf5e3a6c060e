"""A cell of a table or figure, the runs that answer it, and the commands that make or resume one.

A cell asks for one config (.expected): a run answers it only if its stored config.yaml agrees
on every key that decides a result. A run of the same dataset, model, optimizer and seed made
under another config is not counted; `nearest_other` names it and how it differs."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from functools import cache

from .expected import compose, differences
from .runs import STATUS_RANK, Run
from .sweeps import SweepError, config_default

NO_CONFIG = "its config.yaml is missing or damaged, so its config cannot be checked"


def _group_of(key: str) -> tuple[str, str]:
    group, _, rest = key.partition(".")
    return group, rest


@dataclass(frozen=True)
class Cell:
    """One (dataset, model, optimizer, overrides) point of a sweep; seeds repeat it.

    `experiment`: the experiment config that makes its runs (its body values are part of the
    config asked for: a quick twin's epochs and subset); None: the configs' defaults alone.
    `run_args`: the report's `--run-args`, as (key, value) pairs, on top of both."""

    dataset: str
    model: str
    optim: str
    overrides: tuple[tuple[str, str], ...] = ()
    experiment: str | None = None
    run_args: tuple[tuple[str, str | None], ...] = ()

    def value(self, key: str):
        """What this cell sets `key` to: its override, else the config default."""
        given = dict(self.overrides)
        if key in given:
            return given[key]
        group, rest = _group_of(key)
        name = {"dataset": self.dataset, "model": self.model, "optim": self.optim}.get(group)
        return config_default(group, name, rest) if name else None

    def expected(self) -> dict | str:
        """The flat config this cell asks for (read-only; see .expected.compose), or why it
        cannot be composed (a dataset with no config: `--dataset` misspelt)."""
        return _expected(self)

    def differences(self, run: Run) -> list[str]:
        """How `run` differs from the config this cell asks for; [] when it answers the cell."""
        names = (run.dataset, run.model, run.optim)
        if names != (self.dataset, self.model, self.optim):
            return [f"{'/'.join(names)} (expected {self.dataset}/{self.model}/{self.optim})"]
        if not run.config or "config.yaml" in run.damaged:
            return [NO_CONFIG]
        expected = self.expected()
        if isinstance(expected, str):
            return [f"the cell's own config cannot be read ({expected})"]
        return differences(expected, run.config)

    def matches(self, run: Run) -> bool:
        return not self.differences(run)

    def command(self, seed: int, out_dir: str = "results", run_args: str = "") -> str:
        words = ["python run.py", f"dataset={self.dataset}", f"model={self.model}",
                 f"optim={self.optim}", f"seed={seed}"]
        words += [f"{key}={value}" for key, value in self.overrides]
        if out_dir.rstrip("/") != "results":
            words.append(f"out_dir={out_dir}")
        if run_args.strip():
            words.append(run_args.strip())
        return " ".join(words)


@cache
def _expected(cell: Cell) -> dict | str:
    try:
        return compose(cell.dataset, cell.model, cell.optim, cell.experiment, cell.overrides,
                       cell.run_args)
    except SweepError as error:
        return str(error)


def _candidates(runs: list[Run], cell: Cell, seed: int) -> list[Run]:
    return [run for run in runs if run.seed == seed
            and (run.dataset, run.model, run.optim) == (cell.dataset, cell.model, cell.optim)]


def cell_content(runs: list[Run], cell: Cell) -> str | None:
    """The data the cell's runs were made on: the content fingerprint most of its seeds share
    (ties: the lowest seed's); None when no run recorded one. Kept on a `Runs` list, as it is
    asked once per seed."""
    cache = getattr(runs, "contents", None)
    if cache is not None and cell in cache:
        return cache[cell]
    seeds: dict[str, set[int]] = {}
    for run in runs:
        if run.data_content and (run.dataset, run.model, run.optim) == (
                cell.dataset, cell.model, cell.optim) and cell.matches(run):
            seeds.setdefault(run.data_content, set()).add(run.seed)
    found = min(seeds, key=lambda c: (-len(seeds[c]), min(seeds[c]), c)) if seeds else None
    if cache is not None:
        cache[cell] = found
    return found


def on_other_data(runs: list[Run], cell: Cell, run: Run) -> bool:
    """A run of the cell's config made on other data than the cell's runs (an absent
    fingerprint, from an older run, goes with any)."""
    content = cell_content(runs, cell)
    return bool(run.data_content and content and run.data_content != content)


def find_run(runs: list[Run], cell: Cell, seed: int) -> Run | None:
    """The run answering (cell, seed): one whose config is the cell's, made on the cell's data
    (`on_other_data`: never pooled). Among several folders of that config, the first status in
    runs.STATUS_RANK (a diverged one first), then the most epochs logged."""
    found = [run for run in _candidates(runs, cell, seed)
             if cell.matches(run) and not on_other_data(runs, cell, run)]
    if not found:
        return None
    return min(found, key=lambda run: (STATUS_RANK[run.status], -len(run.records), str(run.path)))


def other_data_run(runs: list[Run], cell: Cell, seed: int) -> Run | None:
    """A run of (cell, seed)'s config left out because it was made on other data."""
    return next((run for run in _candidates(runs, cell, seed)
                 if cell.matches(run) and on_other_data(runs, cell, run)), None)


def nearest_other(runs: list[Run], cell: Cell, seed: int,
                  answered: frozenset[int] = frozenset()) -> tuple[Run, list[str]] | None:
    """Of the runs of this cell's dataset, model, optimizer and seed made under another config,
    the one with the fewest differences, and those differences; None if there is none. Runs
    whose id() is in `answered` (they answer another cell) are not candidates."""
    found = [(run, cell.differences(run)) for run in _candidates(runs, cell, seed)
             if id(run) not in answered]
    if not found or not all(diff for _, diff in found):
        return None
    # A run that differs on a key the sweep varies is another cell's (another learning rate),
    # not this cell's made under another config. Each difference begins with its key.
    own = {key for key, _ in cell.overrides}
    others = [(run, diff) for run, diff in found
              if not any(text.split(" ", 1)[0] in own for text in diff)]
    if not others:
        return None
    return min(others, key=lambda item: (len(item[1]), str(item[0].path)))


def _key(word: str) -> str:
    return word.lstrip("+~").partition("=")[0]


def resume_command(stored: str | None, fresh: str, out_dir: str, run_args: str) -> str:
    """The run's own command, made for this results folder: its `out_dir` and `data_root`
    (another machine's paths) dropped, then `out_dir=<the folder read>` and the report's
    --run-args (each replacing a word of the same key). `fresh` when there is none to use."""
    try:
        words = shlex.split(stored or "")
        extra = shlex.split(run_args or "")
    except ValueError:
        return fresh
    at = next((i for i, word in enumerate(words) if word.endswith("run.py")), None)
    if at is None:
        return fresh
    replaced = {"out_dir", "data_root"} | {_key(word) for word in extra}
    kept = [word for word in words[at + 1:] if _key(word) not in replaced]
    tail = [] if out_dir.rstrip("/") == "results" else [f"out_dir={out_dir}"]
    return " ".join(shlex.quote(word) for word in [*words[:at + 1], *kept, *tail, *extra])
