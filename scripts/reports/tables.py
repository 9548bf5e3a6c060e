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
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from .aggregate import (
    Metric,
    SeedStats,
    best_percent,
    cell_stats,
    final_error,
    final_value,
    seed_stats,
)
from .grids import KEY_LABELS, MIXED, Artifact, label
from .output import write_atomic
from .runs import Run

PAPER_FILE = Path(__file__).resolve().parent / "paper_results.yaml"


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


def load_paper(path: Path = PAPER_FILE) -> dict:
    """The paper's numbers; a missing or unreadable file gives a warning and no paper columns."""
    try:
        return yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"warning: paper numbers not shown: cannot read {path}: {first_line}. "
              f"Fix the file or pass --paper PATH.", file=sys.stderr)
        return {}


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


TABLE_KINDS = {"table1": "error", "table2": "error", "table3": "topk", "table4": "best_acc",
               "demo_table": "demo", "ablation_adagrad_mlp": "demo",
               "ablation_adagrad_rt": "best_acc"}


def picked_variant(artifact: Artifact, runs: list[Run], column: Column):
    """Table 3's rule: of a multi-valued grid (the Adam rows' lr search), the variant whose cell
    gives `artifact.pick`'s optimizer the best mean of `column`; None before any has finished.
    Returns (variant, {variant: SeedStats}) for that optimizer."""
    key, chooser = artifact.pick
    chosen = artifact.grid_of(chooser)
    stats = {v: cell_stats(runs, chosen.cell(chosen.datasets[0], column.model, chooser, v),
                           chosen.seeds, column.metric) for v in chosen.variants}
    return best_finished(stats, column.lower_is_better), stats


def best_finished(stats: dict, lower_is_better: bool = True):
    """The key of `stats` whose cell has the best mean among the finished ones (a seed completed,
    none diverged); ties go to the first key. None before any has finished."""
    finished = [(s.mean if lower_is_better else -s.mean, i, key)
                for i, (key, s) in enumerate(stats.items()) if s.n and not s.n_diverged]
    return min(finished)[2] if finished else None


def key_label(key: str) -> str:
    return KEY_LABELS.get(key.rsplit(".", 1)[-1], key)


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


def format_stats(stats: SeedStats, decimals: int = 2) -> str:
    """The cell's text; MIXED appended when a counted seed was trained by more than one commit."""
    text = _format_stats(stats, decimals)
    return f"{text} {MIXED}" if stats.n_mixed else text


MIXED_NOTE = (f"{MIXED}: a seed of the cell was trained by more than one commit (resumed under "
              "other code; config.yaml meta.commits); the report lists which.")


def _format_stats(stats: SeedStats, decimals: int) -> str:
    if stats.missing:
        return "—"
    expected = stats.n_expected
    if stats.all_diverged:
        return "div." if stats.n_diverged == expected else f"div. ({stats.n_diverged}/{expected})"
    text = f"{stats.mean:.{decimals}f}"
    if not math.isnan(stats.std):
        text += f" ± {stats.std:.{decimals}f}"
    notes = []
    if stats.n_diverged:
        notes.append(f"div. {stats.n_diverged}/{expected}")
    if stats.n + stats.n_diverged < expected:
        notes.append(f"n={stats.n}/{expected}")
    return text + (f" ({', '.join(notes)})" if notes else "")


def printed(number: float) -> str:
    """A paper number as printed: at least 2 decimals, more where the paper gives more (7.794)."""
    decimals = len(repr(float(number)).partition(".")[2].rstrip("0"))
    return f"{number:.{max(2, min(decimals, 4))}f}"


def format_paper(value) -> str:
    if value is None:
        return "n/a"
    mean, std = value
    return printed(mean) if std is None else f"{printed(mean)} ± {printed(std)}"


def format_ours(entry: Entry, decimals: int) -> str:
    if entry.reference:
        return ""
    text = format_stats(entry.stats, decimals)
    return f"**{text}**" if entry.bold else text


def format_diff(entry: Entry) -> str:
    if entry.paper is None or not entry.stats.n:
        return ""
    return f"{entry.stats.mean - entry.paper[0]:+.2f}"


def _has_paper(artifact: Artifact, paper: dict) -> bool:
    return artifact.name in paper


def _note(artifact: Artifact, with_paper: bool, extra: tuple[str, ...] = ()) -> str:
    seeds = ",".join(map(str, artifact.seeds))
    scale = ("QUICK SCALE (fewer epochs, subsets, one seed): NOT comparable to the paper. "
             if artifact.scale == "quick" else "")
    paper = (" Paper: the paper (arXiv 1707.04822), as printed, via "
             "scripts/reports/paper_results.yaml (n/a: the paper prints no such number); "
             "Δ = ours − paper."
             if with_paper else "")
    return " ".join((f"{scale}Mean ± sample std (ddof=1) over seeds {seeds}; bold: best of the "
                     "column among cells with no diverged seed; — no finished run; div. diverged "
                     "(div. k/N: k of N seeds diverged, the number is over the rest); n=k/N: "
                     f"only k seeds finished.{paper}", *extra))


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
        return _note(self.artifact, self.with_paper, self.notes)


def to_markdown(table: Table) -> str:
    header = ["Optimizer"]
    for column in table.columns:
        header += [column.label] + (["paper", "Δ"] if table.with_paper else [])
    lines = [f"### {table.artifact.title}", "", table.note, "",
             "| " + " | ".join(header) + " |",
             "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"]
    for optim, row in table.grid.items():
        cells = [table.labels[optim]]
        for column in table.columns:
            entry = row[column.key]
            cells.append(format_ours(entry, column.decimals))
            if table.with_paper:
                cells += [format_paper(entry.paper), format_diff(entry)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _tex(text: str) -> str:
    return (text.replace("_", r"\_").replace("%", r"\%").replace("±", r"$\pm$")
            .replace("—", "---").replace("Δ", r"$\Delta$").replace("τ", r"$\tau$")
            .replace("α", r"$\alpha$").replace("γ", r"$\gamma$"))


def to_latex(table: Table) -> str:
    columns, with_paper = table.columns, table.with_paper
    width = 3 if with_paper else 1
    spec = "l" + " ".join(["r" * width] * len(columns))
    lines = [f"% {table.artifact.title}. Generated by scripts/report.py from run outputs.",
             f"% {table.note}", r"% Needs \usepackage{booktabs}.",
             rf"\begin{{tabular}}{{{spec}}}", r"\toprule"]
    if with_paper:
        groups = [rf"\multicolumn{{3}}{{c}}{{{_tex(c.label)}}}" for c in columns]
        rules = [rf"\cmidrule(lr){{{2 + 3 * i}-{4 + 3 * i}}}" for i in range(len(columns))]
        lines += [" & " + " & ".join(groups) + r" \\", " ".join(rules),
                  "Optimizer & " + " & ".join([r"ours & paper & $\Delta$"] * len(columns)) + r" \\"]
    else:
        lines.append("Optimizer & " + " & ".join(_tex(c.label) for c in columns) + r" \\")
    lines.append(r"\midrule")
    for optim, row in table.grid.items():
        cells = [_tex(table.labels[optim])]
        for column in columns:
            entry = row[column.key]
            text = _tex(format_ours(entry, column.decimals).strip("*"))
            cells.append(rf"\textbf{{{text}}}" if entry.bold else text)
            if with_paper:
                cells += [_tex(format_paper(entry.paper)), _tex(format_diff(entry))]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def to_frame(table: Table) -> pd.DataFrame:
    rows = []
    for optim, row in table.grid.items():
        for column in table.columns:
            entry, stats = row[column.key], row[column.key].stats
            rows.append({
                "table": table.artifact.name, "scale": table.artifact.scale,
                "dataset": table.artifact.datasets[0], "optimizer": table.labels[optim],
                "column": column.key, "mean": stats.mean,
                "std": stats.std, "n": stats.n, "n_diverged": stats.n_diverged,
                "n_expected": stats.n_expected,
                "text": format_ours(entry, column.decimals).strip("*"), "bold": entry.bold,
                "reference": entry.reference,
                "paper_mean": entry.paper[0] if entry.paper else math.nan,
                "paper_std": entry.paper[1] if entry.paper and entry.paper[1] is not None
                else math.nan,
                "diff": float(format_diff(entry)) if format_diff(entry) else math.nan})
    return pd.DataFrame(rows)


def write_table(table: Table, out_dir: Path) -> list[Path]:
    """Write `<out_dir>/tables/<name>.{md,tex,csv}`; returns the paths."""
    stem = Path(out_dir) / "tables" / table.artifact.name
    return [write_atomic(stem.with_suffix(".md"), to_markdown(table)),
            write_atomic(stem.with_suffix(".tex"), to_latex(table)),
            write_atomic(stem.with_suffix(".csv"), to_frame(table).to_csv(index=False))]


def render_table(artifact: Artifact, runs: list[Run], out_dir: Path,
                 paper: dict | None = None) -> list[Path]:
    """Tables 1-4, the demo table and the AdaGrad ablations; returns the written paths."""
    paper = load_paper() if paper is None else paper
    kind = TABLE_KINDS[artifact.name]
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
    return write_table(Table(artifact, columns, grid, _has_paper(artifact, paper), labels, notes),
                       out_dir)
