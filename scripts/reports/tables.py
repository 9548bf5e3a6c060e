"""Tables 1-4 (and the demo's small table) as Markdown, LaTeX (booktabs) and CSV.

Cell text: "5.91 ± 0.12" (mean ± sample std over seeds); "5.91" for one seed; "—" no finished
seed; "div." every finished seed diverged. A partial cell keeps the number over the seeds that
finished and says what is missing: "6.01 ± 0.20 (div. 2/5)" (2 of the 5 seeds diverged),
"6.01 ± 0.20 (n=3/5)" (2 not finished). Bold marks the best mean of each column among the cells
with no diverged seed. The paper's value ("n/a" where the paper reports none) and ours − paper
follow. Reference rows the paper prints but the suite does not train (Table 1's SGDM* of He et
al.) show the paper's value only. Table 3's Adam rows show the searched learning rate that gave
Adam the lowest top-1 error, and say which."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from .aggregate import (
    Metric,
    SeedStats,
    best_percent,
    cell_stats,
    final_error,
    final_value,
    seed_stats,
)
from .formatting import (
    MIXED_NOTE,
    best_finished,
    format_paper,
    format_stats,
    key_label,
    load_paper,
    stats_note,
)
from .grids import Artifact, label
from .runs import Run
from .writer import write_table


@dataclass(frozen=True)
class Column:
    key: str                  # the paper file's column key (resnet20, top1, best_val_acc, ...)
    label: str
    model: str
    metric: Metric
    lower_is_better: bool = True
    decimals: int = 2


@dataclass
class Entry:
    stats: SeedStats
    paper: tuple[float, float | None] | None
    bold: bool = False
    reference: bool = False   # a row the paper prints and the suite does not train


def paper_value(paper: dict, table: str, row: str, column: str):
    """(mean, std or None) from the paper file, or None where it holds null."""
    value = (((paper.get(table) or {}).get("values") or {}).get(row) or {}).get(column)
    if isinstance(value, (int, float)):
        return float(value), None
    if isinstance(value, dict) and isinstance(value.get("mean"), (int, float)):
        std = value.get("std")
        return float(value["mean"]), float(std) if isinstance(std, (int, float)) else None
    return None


def columns_for(artifact: Artifact, kind: str) -> list[Column]:
    if kind == "error":                    # Tables 1/2: one column per ResNet
        return [Column(m, label(m), m, final_error("test_acc")) for m in artifact.models]
    model = artifact.models[0]
    if kind == "topk":                     # Table 3
        return [Column("top1", "Top-1 error", model, final_error("test_top1")),
                Column("top5", "Top-5 error", model, final_error("test_top5"))]
    if kind == "best_acc":                 # Table 4
        return [Column("best_val_acc", "Best val. acc.", model, best_percent("test_acc"), False)]
    if kind == "demo":                     # final test error and loss per depth
        return [column for m in artifact.models for column in (
            Column(f"{m}_error", f"{label(m)} error", m, final_error("test_acc")),
            Column(f"{m}_loss", f"{label(m)} loss", m, final_value("test_loss"), decimals=3))]
    raise ValueError(f"unknown table kind {kind!r}")


def picked_variant(artifact: Artifact, runs: list[Run], column: Column):
    """Table 3's rule: of a multi-valued grid (the Adam rows' lr search), the variant whose cell
    gives `artifact.pick`'s optimizer the best mean of `column`; None before any has finished.
    Returns (variant, {variant: SeedStats}) for that optimizer."""
    key, chooser = artifact.pick
    chosen = artifact.grid_of(chooser)
    stats = {v: cell_stats(runs, chosen.cell(chosen.datasets[0], column.model, chooser, v),
                           chosen.seeds, column.metric) for v in chosen.variants}
    return best_finished(stats, column.lower_is_better), stats


def reference_rows(paper: dict, table: str) -> dict[str, dict]:
    return ((paper.get(table) or {}).get("reference_rows")) or {}


def build_table(artifact: Artifact, runs: list[Run], paper: dict,
                kind: str) -> tuple[list[Column], dict[str, dict[str, Entry]]]:
    """rows (optimizer) -> column key -> Entry, with each column's best in bold. Each row's
    cells come from the grid that holds its optimizer."""
    columns = columns_for(artifact, kind)
    picks = {}
    if artifact.pick:
        picks = {c.key: picked_variant(artifact, runs, c)[0] for c in columns[:1]}
    pick = next(iter(picks.values()), None)
    references = reference_rows(paper, artifact.name)
    grid: dict[str, dict[str, Entry]] = {}
    for optim in artifact.optims:
        for name, spec in references.items():
            if spec.get("before") == optim:
                grid[name] = {c.key: Entry(seed_stats([]), paper_value(paper, artifact.name, name,
                                                                       c.key), reference=True)
                              for c in columns}
        source = artifact.grid_of(optim)
        variant = source.variants[0]
        if len(source.variants) > 1 and artifact.pick:
            variant = pick if pick is not None else variant
        grid[optim] = {}
        for column in columns:
            cell = source.cell(source.datasets[0], column.model, optim, variant)
            stats = cell_stats(runs, cell, source.seeds, column.metric)
            if len(source.variants) > 1 and artifact.pick and pick is None:
                stats = seed_stats([], n_expected=len(source.seeds))
            grid[optim][column.key] = Entry(stats, paper_value(paper, artifact.name, optim,
                                                               column.key))
    for column in columns:
        eligible = [e for e in (grid[o][column.key] for o in grid)
                    if e.stats.n and not e.stats.n_diverged]
        if eligible:
            best_of = min if column.lower_is_better else max
            best = round(best_of(e.stats.mean for e in eligible), column.decimals)
            for entry in eligible:
                entry.bold = round(entry.stats.mean, column.decimals) == best
    return columns, grid


def pick_note(artifact: Artifact, runs: list[Run], kind: str) -> str:
    """Table 3: which lr the Adam rows show, and every searched lr's result of each Adam row."""
    if not artifact.pick:
        return ""
    key, chooser = artifact.pick
    column = columns_for(artifact, kind)[0]
    variant, _ = picked_variant(artifact, runs, column)
    source = artifact.grid_of(chooser)
    rows = [o for o in artifact.optims if o in source.optims]
    shown = dict(variant)[key] if variant else "none yet (no finished run)"
    parts = []
    for optim in rows:
        found = []
        for v in source.variants:
            cell = source.cell(source.datasets[0], column.model, optim, v)
            stats = cell_stats(runs, cell, source.seeds, column.metric)
            found.append(f"{dict(v)[key]}: {format_stats(stats, column.decimals)}")
        parts.append(f"{label(optim)} " + ", ".join(found))
    return (f"{', '.join(label(o) for o in rows)} at {key}={shown}: the searched value with "
            f"{label(chooser)}'s lowest {column.label.lower()} (the paper's rule: the base "
            f"Adam's best lr for the related methods). {column.label} at every {key}: "
            + "; ".join(parts) + ".")


def format_ours(entry: Entry, decimals: int) -> str:
    if entry.reference:
        return ""
    text = format_stats(entry.stats, decimals)
    return f"**{text}**" if entry.bold else text


def format_diff(entry: Entry) -> str:
    if entry.paper is None or not entry.stats.n:
        return ""
    return f"{entry.stats.mean - entry.paper[0]:+.2f}"


@dataclass
class Table:
    """What the three writers share: the artifact, columns, rows, row labels and notes."""

    artifact: Artifact
    columns: list[Column]
    grid: dict[str, dict[str, Entry]]
    with_paper: bool
    labels: dict[str, str]
    notes: tuple[str, ...] = ()

    @property
    def note(self) -> str:
        return stats_note(self.artifact, self.with_paper, self.notes)


def markdown_rows(table: Table) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the Markdown and LaTeX table: per column ours, then paper and Δ."""
    header = ["Optimizer"]
    for column in table.columns:
        header += [column.label] + (["paper", "Δ"] if table.with_paper else [])
    rows = []
    for optim, row in table.grid.items():
        cells = [table.labels[optim]]
        for column in table.columns:
            entry = row[column.key]
            cells.append(format_ours(entry, column.decimals))
            if table.with_paper:
                cells += [format_paper(entry.paper), format_diff(entry)]
        rows.append(cells)
    return header, rows


def tex_layout(table: Table) -> dict:
    """The LaTeX header: with the paper, each column a group of ours, paper and Δ."""
    width = 3 if table.with_paper else 1
    layout: dict = {"groups": [(column.label, width) for column in table.columns]}
    if table.with_paper:
        layout["tex_header"] = ["Optimizer"] + ["ours", "paper", "Δ"] * len(table.columns)
    return layout


CSV_COLUMNS = ["table", "scale", "dataset", "optimizer", "column", "mean", "std", "n",
               "n_diverged", "n_expected", "text", "bold", "reference", "paper_mean",
               "paper_std", "diff"]


def csv_rows(table: Table) -> list[list]:
    """One row per (optimizer, column), with the numbers behind each cell's text."""
    rows = []
    for optim, row in table.grid.items():
        for column in table.columns:
            entry, stats = row[column.key], row[column.key].stats
            paper = entry.paper
            rows.append([
                table.artifact.name, table.artifact.scale, table.artifact.datasets[0],
                table.labels[optim], column.key, stats.mean, stats.std, stats.n,
                stats.n_diverged, stats.n_expected, format_ours(entry, column.decimals),
                entry.bold, entry.reference, paper[0] if paper else math.nan,
                paper[1] if paper and paper[1] is not None else math.nan,
                float(format_diff(entry)) if format_diff(entry) else math.nan])
    return rows


def write(table: Table, out_dir: Path) -> list[Path]:
    """Write `<out_dir>/tables/<name>.{md,tex,csv}`; returns the paths."""
    stem = Path(out_dir) / "tables" / table.artifact.name
    header, rows = markdown_rows(table)
    return (write_table(stem, header, rows, table.note, ("md", "tex"),
                        title=table.artifact.title, **tex_layout(table))
            + write_table(stem, CSV_COLUMNS, csv_rows(table), formats=("csv",)))


def render_table(artifact: Artifact, runs: list[Run], out_dir: Path,
                 paper: dict | None = None) -> list[Path]:
    """Tables 1-4, the demo table and the AdaGrad ablations; returns the written paths."""
    paper = load_paper() if paper is None else paper
    kind = artifact.columns
    columns, grid = build_table(artifact, runs, paper, kind)
    references = reference_rows(paper, artifact.name)
    labels = {name: str(references[name].get("label", name)) if name in references
              else label(name) for name in grid}
    notes = tuple(f"{labels[name]}: the paper's reference row, not trained here: "
                  f"{' '.join(str(spec.get('note', '')).split())}"
                  for name, spec in references.items() if name in grid)
    if any(entry.stats.n_mixed for row in grid.values() for entry in row.values()):
        notes += (MIXED_NOTE,)
    if artifact.pick:
        notes += (pick_note(artifact, runs, kind),)
        key, chooser = artifact.pick
        variant, _ = picked_variant(artifact, runs, columns[0])
        for optim in artifact.grid_of(chooser).optims if variant else ():
            labels[optim] += f" ({key_label(key)} {dict(variant)[key]})"
    return write(Table(artifact, columns, grid, artifact.name in paper, labels, notes), out_dir)
