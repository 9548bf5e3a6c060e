"""Which runs each artifact expects, how to find them among the runs present, and the
`python run.py ...` command that produces a missing one. The grids are the experiment configs'
(configs/experiment/*.yaml, read by .sweeps); this file groups them, and .registry names each
artifact and the grids it reads."""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, replace

from .cells import (
    NO_CONFIG,
    Cell,
    cell_content,
    find_run,
    nearest_other,
    other_data_run,
    resume_command,
)
from .expected import parse_overrides, summarize
from .runs import PENDING, Run
from .sweeps import experiment_exists, read_sweep

__all__ = ["Artifact", "Cell", "Grid", "Pending", "find_run", "format_pending", "pending_runs"]

OPTIM_LABELS = {
    "adam": "Adam", "adamclip": "AdamCLIP", "adamng": "AdamNG", "adamng_adap": "AdamNG_adap",
    "sgdm": "SGDM", "sgdmclip": "SGDMCLIP", "sgdmng": "SGDMNG", "sgdmng_adap": "SGDMNG_adap",
    "adagrad": "AdaGrad", "adagradng": "AdaGradNG", "adagradbng": "AdaGradBNG",
}
MODEL_LABELS = {
    "mlp6": "MLP-6", "mlp12": "MLP-12", "mlp18": "MLP-18",
    "resnet20": "ResNet-20", "resnet32": "ResNet-32", "resnet44": "ResNet-44",
    "resnet56": "ResNet-56", "resnet110": "ResNet-110", "preact_resnet34": "PreAct-ResNet-34",
    "lstm": "LSTM", "kimcnn": "Kim-CNN",
}
DATASET_LABELS = {
    "digits": "digits", "mnist": "MNIST", "cifar10": "CIFAR-10", "cifar100": "CIFAR-100",
    "imagenet": "ImageNet", "ptb": "PTB", "rt": "Rotten Tomatoes",
}
# Labels of swept keys, by the key's last part (optim.threshold and optim.normalize.threshold).
KEY_LABELS = {"lr": "lr", "threshold": "τ", "alpha": "α", "blocks": "blocks", "bptt": "BPTT",
              "holdout": "holdout", "gamma": "γ"}


def label(name: str) -> str:
    return OPTIM_LABELS.get(name) or MODEL_LABELS.get(name) or DATASET_LABELS.get(name) or name


@dataclass(frozen=True)
class Grid:
    """One experiment config's cross product: datasets x models x variants x optimizers, seeds.

    `reference`: runs another sweep makes (the default reading an ablation compares with).
    `scale` and `run_args` (the report's --run-args as (key, value) pairs) shape the config
    each of its cells asks for."""

    sweep: str
    datasets: tuple[str, ...]
    models: tuple[str, ...]
    optims: tuple[str, ...]
    seeds: tuple[int, ...] = (1,)
    variants: tuple[tuple[tuple[str, str], ...], ...] = ((),)
    reference: bool = False
    scale: str = "full"
    run_args: tuple[tuple[str, str | None], ...] = ()

    def cell(self, dataset: str, model: str, optim: str, variant: tuple = ()) -> Cell:
        """The cell of this grid's experiment for (dataset, model, optim, variant)."""
        return Cell(dataset, model, optim, tuple(variant), self.experiment(), self.run_args)

    def cells(self) -> list[Cell]:
        return [self.cell(d, m, o, v) for d in self.datasets for m in self.models
                for v in self.variants for o in self.optims]

    def experiment(self, scale: str | None = None) -> str:
        """The experiment config that makes this grid's runs at `scale` (default: the grid's);
        a sweep without a quick twin (the demo) is its own quick version."""
        quick = f"{self.sweep}_quick"
        if (scale or self.scale) == "quick" and experiment_exists(quick):
            return quick
        return self.sweep


def grid(sweep: str, reference: bool = False, **only) -> Grid:
    """The grid of configs/experiment/<sweep>.yaml; `only` narrows a key (models=("resnet56",))."""
    spec = read_sweep(sweep)
    keys = [key for key in spec.params if key not in ("dataset", "model", "optim", "seed")]
    variants = tuple(tuple(zip(keys, combo, strict=True))
                     for combo in itertools.product(*(spec.params[k] for k in keys)))
    found = Grid(sweep, spec.values("dataset"), spec.values("model"), spec.values("optim"),
                 tuple(int(s) for s in spec.params.get("seed", ("1",))), variants, reference)
    return replace(found, **only)


@dataclass(frozen=True)
class Artifact:
    """A table or figure: the cells of one or more sweeps' grids (the first is the main one).

    `tune`: the last part of the key a tuning table's columns search (`threshold`: the swept
    key that ends so, see `tune_key`), and the paper_results.yaml `tuning` entry
    holding the paper's values. `pick`: (key, optimizer) for Table 3's Adam rows: the value of
    `key` that gives that optimizer the lowest error is the one shown."""

    name: str
    title: str
    grids: tuple[Grid, ...]
    scale: str = "full"
    band_seeds: tuple[int, ...] = ()  # more seeds to draw when present (Figure 2: the tables')
    tune: tuple[str, str] | None = None
    pick: tuple[str, str] | None = None
    columns: str = ""  # a table's columns (.tables.columns_for): error, topk, best_acc, demo

    @property
    def datasets(self) -> tuple[str, ...]:
        return self.grids[0].datasets

    @property
    def models(self) -> tuple[str, ...]:
        return self.grids[0].models

    @property
    def seeds(self) -> tuple[int, ...]:
        return self.grids[0].seeds

    @property
    def variants(self):
        return self.grids[0].variants

    @property
    def optims(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(o for g in self.grids for o in g.optims))

    @property
    def tune_key(self) -> str:
        """The swept key named by `tune` (`threshold` -> optim.threshold, or wherever the
        optimizer configs keep it)."""
        leaf = self.tune[0] if self.tune else ""
        keys = [key for g in self.grids for key, _ in g.variants[0]]
        return next((key for key in keys if key.rsplit(".", 1)[-1] == leaf), leaf)

    @property
    def plot_seeds(self) -> tuple[int, ...]:
        return tuple(dict.fromkeys(self.seeds + self.band_seeds))

    @property
    def sweeps(self) -> tuple[str, ...]:
        """The experiment configs that make this artifact's own runs (`make <name>` runs them)."""
        return tuple(g.experiment(self.scale) for g in self.grids if not g.reference)

    def grid_of(self, optim: str) -> Grid:
        return next(g for g in self.grids if optim in g.optims)

    def cells(self) -> list[Cell]:
        return list(dict.fromkeys(c for g in self.grids for c in g.cells()))

    def expected(self) -> list[tuple[Grid, Cell, int]]:
        """Every (grid, cell, seed) the artifact reads, each once."""
        seen, out = set(), []
        for g in self.grids:
            for cell in g.cells():
                for seed in g.seeds:
                    if (cell, seed) not in seen:
                        seen.add((cell, seed))
                        out.append((g, cell, seed))
        return out

    def adapt(self, dataset: str | None = None, seeds: tuple[int, ...] | None = None,
              scale: str | None = None, run_args: str | None = None) -> Artifact:
        """The same grids on another dataset (`digits` for the demo), seed list or scale, or
        with the runs made with `run_args` (e.g. "epochs=10": the cells then ask for it)."""
        changes: dict = {}
        grid_changes: dict = {}
        if dataset:
            grid_changes["datasets"] = (dataset,)
        if seeds:
            grid_changes["seeds"] = tuple(seeds)
            changes["band_seeds"] = ()
        if scale:
            grid_changes["scale"] = scale
        if run_args is not None:
            grid_changes["run_args"] = tuple(parse_overrides(run_args).items())
        if grid_changes:
            changes["grids"] = tuple(replace(g, **grid_changes) for g in self.grids)
        if scale:
            changes["scale"] = scale
        return replace(self, **changes)


@dataclass(frozen=True)
class Pending:
    """An expected run with no result yet: missing, made under another config (OTHER), or a
    status in runs.PENDING."""

    cell: Cell
    seed: int
    state: str
    command: str
    detail: str = ""


def pending_runs(artifact: Artifact, runs: list[Run], out_dir: str = "results",
                 run_args: str | None = None) -> list[Pending]:
    """Expected runs that gave no result. Diverged runs are results ("div."), not listed.

    `run_args` is appended to each printed command; None: at quick scale, the cell's quick
    sweep (`experiment=<sweep>_quick`: its epochs and subsets are not command-line overrides).
    A resume command is the run's own, made for `out_dir` (the folder read) with `run_args`."""
    pending = []
    found = {(cell, seed): find_run(runs, cell, seed) for _, cell, seed in artifact.expected()}
    answered = frozenset(id(run) for run in found.values() if run is not None)
    for grid_, cell, seed in artifact.expected():
        extra = run_args
        if extra is None:
            quick = artifact.scale == "quick" and grid_.experiment("quick") != grid_.sweep
            extra = f"experiment={grid_.experiment('quick')}" if quick else ""
        run = found[cell, seed]
        fresh = cell.command(seed, out_dir, extra)
        if run is None:
            pending.append(_absent(runs, cell, seed, fresh, answered))
        elif run.status in PENDING:
            message = str(run.summary.get("message") or "")
            detail = f"{run.progress}" + (f": {message}" if message else "")
            if run.status == "damaged":
                detail = f"metrics.jsonl {run.cut_short}"
            pending.append(Pending(cell, seed, run.status,
                                   resume_command(run.command, fresh, out_dir, extra), detail))
    return pending


OTHER = "present but made under another config"
UNCHECKED = "present but its config cannot be checked"
OTHER_DATA = "present but made on other data"


def _absent(runs: list[Run], cell: Cell, seed: int, fresh: str,
            answered: frozenset[int]) -> Pending:
    """A missing run, or one present under another config (and answering no other cell of the
    artifact): which folder, and how it differs."""
    other = other_data_run(runs, cell, seed)
    if other is not None:
        return Pending(cell, seed, OTHER_DATA, fresh, f"data {other.data_content[:12]}, the "
                       f"cell's other runs {cell_content(runs, cell)[:12]} [{other.name}]")
    near = nearest_other(runs, cell, seed, answered)
    if near is None:
        return Pending(cell, seed, "missing", fresh)
    run, found = near
    if found == [NO_CONFIG]:
        return Pending(cell, seed, UNCHECKED, fresh, f"config.yaml missing or damaged [{run.name}]")
    return Pending(cell, seed, OTHER, fresh, f"{summarize(found)} [{run.name}]")


SHOWN_MISSING = 3    # plain missing runs printed per artifact; the rest are counted
SHOWN_OTHERS = 10    # failed, running, or made under another config: each needs a look


def format_pending(artifact: Artifact, pending: list[Pending], limit: int | None = None,
                   listing: str = "") -> str:
    """The list: one line per run, the command that produces (or resumes) it. With `limit`
    (what is printed; `listing` names the file with every line): a count per state, the runs
    that need a look, the first few missing ones, then how many more."""
    expected = len(artifact.expected())
    if not pending:
        return f"[{artifact.name}] all {expected} runs present."
    head = f"[{artifact.name}] {len(pending)} run(s) without a result (of {expected} expected)"
    if limit is None:
        return "\n".join([f"{head}:", *map(_pending_line, pending)])
    counts = Counter(item.state for item in pending)
    if counts["missing"] == expected:   # a fresh results folder: one line, the commands in a file
        return (f"[{artifact.name}] none of its {expected} runs present yet"
                + (f"; every command: {listing}" if listing else ""))
    others = [item for item in pending if item.state != "missing"]
    missing = [item for item in pending if item.state == "missing"]
    shown = others[:min(limit, SHOWN_OTHERS)] + missing[:min(limit, SHOWN_MISSING)]
    lines = [f"{head}: " + ", ".join(f"{n} {state}" for state, n in counts.items())]
    lines += [_pending_line(item) for item in pending if item in shown]
    if len(pending) > len(shown):
        lines.append(f"  ... and {len(pending) - len(shown)} more"
                     + (f" (every command: {listing})" if listing else ""))
    return "\n".join(lines)


def _pending_line(item: Pending) -> str:
    joint = ": " if item.state in (OTHER, UNCHECKED, OTHER_DATA) else ", "
    return f"  {item.command}  # {item.state}" + (f"{joint}{item.detail}" if item.detail else "")


MIXED = "†"  # marks a cell with a seed trained by more than one commit (tables, figure legends)


def mixed_commit_lines(artifact: Artifact, runs: list[Run]) -> list[str]:
    """One line per run the artifact counts that was trained by more than one commit (resumed
    under other code, config.yaml meta.commits), naming each commit and its epochs."""
    lines = []
    for _, cell, seed in artifact.expected():
        run = find_run(runs, cell, seed)
        if run is not None and run.mixed_commits:
            parts = [f"{commit[:12]} ({epochs})" for commit, epochs in run.commits]
            lines.append(f"  {run.name}: {', '.join(parts)}")
    if not lines:
        return []
    return [f"[{artifact.name}] {len(lines)} run(s) trained by more than one commit, marked "
            f"{MIXED}:", *lines]


def format_damaged(damaged: list[tuple[str, str]], limit: int | None = None) -> str:
    """The damaged files found under runs/, one line each (path: what is wrong)."""
    lines = [f"{len(damaged)} damaged file(s) under runs/; what they hold is left out, the rest "
             "renders:"]
    lines += [f"  {path}: {why}" for path, why in damaged[:limit]]
    if limit is not None and len(damaged) > limit:
        lines.append(f"  ... and {len(damaged) - limit} more")
    return "\n".join(lines)
