"""Tables 1-4 (and the demo's small table) as Markdown, LaTeX (booktabs) and CSV.

Cell text: "5.91 ± 0.12" (mean ± sample std over seeds); "5.91" for one seed; "—" no finished
seed; "div." every finished seed diverged. A partial cell keeps the number over the seeds that
finished and says what is missing: "6.01 ± 0.20 (div. 2/5)" (2 of the 5 seeds diverged),
"6.01 ± 0.20 (n=3/5)" (2 not finished). Bold marks the best mean of each column among the cells
with no diverged seed. The paper's value ("n/a" where the paper reports none) and ours − paper
follow."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from .aggregate import Metric, SeedStats, best_percent, cell_stats, final_error, final_value
from .grids import Artifact, Cell, label
from .output import write_atomic
from .runs import Run

PAPER_FILE = Path(__file__).resolve().parents[2] / "experiments" / "paper_results.yaml"


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
               "demo_table": "demo"}


def build_table(artifact: Artifact, runs: list[Run], paper: dict,
                kind: str) -> tuple[list[Column], dict[str, dict[str, Entry]]]:
    """rows (optimizer) -> column key -> Entry, with each column's best in bold."""
    columns = columns_for(artifact, kind)
    dataset = artifact.datasets[0]
    grid: dict[str, dict[str, Entry]] = {}
    for optim in artifact.optims:
        grid[optim] = {}
        for column in columns:
            cell = Cell(dataset, column.model, optim, artifact.variants[0])
            stats = cell_stats(runs, cell, artifact.seeds, column.metric)
            grid[optim][column.key] = Entry(stats, paper_value(paper, artifact.name, optim,
                                                               column.key))
    for column in columns:
        eligible = [e for e in (grid[o][column.key] for o in grid)
                    if e.stats.n and not e.stats.n_diverged]
        if eligible:
            pick = min if column.lower_is_better else max
            best = round(pick(e.stats.mean for e in eligible), column.decimals)
            for entry in eligible:
                entry.bold = round(entry.stats.mean, column.decimals) == best
    return columns, grid


def format_stats(stats: SeedStats, decimals: int = 2) -> str:
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


def format_paper(value) -> str:
    if value is None:
        return "n/a"
    mean, std = value
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def format_diff(entry: Entry) -> str:
    if entry.paper is None or not entry.stats.n:
        return ""
    return f"{entry.stats.mean - entry.paper[0]:+.2f}"


def _has_paper(artifact: Artifact, paper: dict) -> bool:
    return artifact.name in paper


def _note(artifact: Artifact, with_paper: bool) -> str:
    seeds = ",".join(map(str, artifact.seeds))
    scale = ("QUICK SCALE (fewer epochs, subsets, one seed): NOT comparable to the paper. "
             if artifact.scale == "quick" else "")
    paper = (" Paper: experiments/paper_results.yaml (n/a: the paper reports no such number); "
             "Δ = ours − paper."
             if with_paper else "")
    return (f"{scale}Mean ± sample std (ddof=1) over seeds {seeds}; bold: best of the column "
            "among cells with no diverged seed; — no finished run; div. diverged "
            "(div. k/N: k of N seeds diverged, the number is over the rest); n=k/N: only k "
            f"seeds finished.{paper}")


def to_markdown(artifact: Artifact, columns: list[Column], grid, with_paper: bool) -> str:
    header = ["Optimizer"]
    for column in columns:
        header += [column.label] + (["paper", "Δ"] if with_paper else [])
    lines = [f"### {artifact.title}", "", _note(artifact, with_paper), "",
             "| " + " | ".join(header) + " |",
             "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"]
    for optim, row in grid.items():
        cells = [label(optim)]
        for column in columns:
            entry = row[column.key]
            text = format_stats(entry.stats, column.decimals)
            cells.append(f"**{text}**" if entry.bold else text)
            if with_paper:
                cells += [format_paper(entry.paper), format_diff(entry)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _tex(text: str) -> str:
    return (text.replace("_", r"\_").replace("%", r"\%").replace("±", r"$\pm$")
            .replace("—", "---").replace("Δ", r"$\Delta$"))


def to_latex(artifact: Artifact, columns: list[Column], grid, with_paper: bool) -> str:
    width = 3 if with_paper else 1
    spec = "l" + " ".join(["r" * width] * len(columns))
    lines = [f"% {artifact.title}. Generated by scripts/report.py from run outputs.",
             f"% {_note(artifact, with_paper)}", r"% Needs \usepackage{booktabs}.",
             rf"\begin{{tabular}}{{{spec}}}", r"\toprule"]
    if with_paper:
        groups = [rf"\multicolumn{{3}}{{c}}{{{_tex(c.label)}}}" for c in columns]
        rules = [rf"\cmidrule(lr){{{2 + 3 * i}-{4 + 3 * i}}}" for i in range(len(columns))]
        lines += [" & " + " & ".join(groups) + r" \\", " ".join(rules),
                  "Optimizer & " + " & ".join([r"ours & paper & $\Delta$"] * len(columns)) + r" \\"]
    else:
        lines.append("Optimizer & " + " & ".join(_tex(c.label) for c in columns) + r" \\")
    lines.append(r"\midrule")
    for optim, row in grid.items():
        cells = [_tex(label(optim))]
        for column in columns:
            entry = row[column.key]
            text = _tex(format_stats(entry.stats, column.decimals))
            cells.append(rf"\textbf{{{text}}}" if entry.bold else text)
            if with_paper:
                cells += [_tex(format_paper(entry.paper)), _tex(format_diff(entry))]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def to_frame(artifact: Artifact, columns: list[Column], grid) -> pd.DataFrame:
    rows = []
    for optim, row in grid.items():
        for column in columns:
            entry, stats = row[column.key], row[column.key].stats
            rows.append({
                "table": artifact.name, "scale": artifact.scale, "dataset": artifact.datasets[0],
                "optimizer": label(optim), "column": column.key, "mean": stats.mean,
                "std": stats.std, "n": stats.n, "n_diverged": stats.n_diverged,
                "n_expected": stats.n_expected, "text": format_stats(stats, column.decimals),
                "bold": entry.bold,
                "paper_mean": entry.paper[0] if entry.paper else math.nan,
                "paper_std": entry.paper[1] if entry.paper and entry.paper[1] is not None
                else math.nan,
                "diff": float(format_diff(entry)) if format_diff(entry) else math.nan})
    return pd.DataFrame(rows)


def render_table(artifact: Artifact, runs: list[Run], out_dir: Path,
                 paper: dict | None = None) -> list[Path]:
    """Write `<out_dir>/tables/<name>.{md,tex,csv}`; returns the paths."""
    paper = load_paper() if paper is None else paper
    columns, grid = build_table(artifact, runs, paper, TABLE_KINDS[artifact.name])
    with_paper = _has_paper(artifact, paper)
    stem = Path(out_dir) / "tables" / artifact.name
    return [write_atomic(stem.with_suffix(".md"), to_markdown(artifact, columns, grid, with_paper)),
            write_atomic(stem.with_suffix(".tex"), to_latex(artifact, columns, grid, with_paper)),
            write_atomic(stem.with_suffix(".csv"),
                         to_frame(artifact, columns, grid).to_csv(index=False))]
