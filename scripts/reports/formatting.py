"""How the reports say things: a cell's text (mean ± std over seeds, and why it is partial),
the notes that explain it, the labels of swept keys, the rule that picks the best finished cell,
and the paper's numbers as printed. Every renderer imports these; none defines its own."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import yaml

from .aggregate import SeedStats
from .grids import KEY_LABELS, MIXED, Artifact
from .writer import write_table

PAPER_FILE = Path(__file__).resolve().parent / "paper_results.yaml"
QUICK = "QUICK SCALE (fewer epochs, subsets, one seed): NOT comparable to the paper. "
MIXED_NOTE = (f"{MIXED}: a seed of the cell was trained by more than one commit (resumed under "
              "other code; config.yaml meta.commits); the report lists which.")
PAPER_NOTE = (" Paper: the paper (arXiv 1707.04822), as printed, via "
              "scripts/reports/paper_results.yaml (n/a: the paper prints no such number); "
              "Δ = ours − paper.")


def load_paper(path: Path = PAPER_FILE) -> dict:
    """The paper's numbers; a missing or unreadable file gives a warning and no paper columns."""
    try:
        return yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"warning: paper numbers not shown: cannot read {path}: {first_line}. "
              f"Fix the file or pass --paper PATH.", file=sys.stderr)
        return {}


def best_finished(stats: dict, lower_is_better: bool = True):
    """The key of `stats` whose cell has the best mean among the finished ones (a seed completed,
    none diverged); ties go to the first key. None before any has finished."""
    finished = [(s.mean if lower_is_better else -s.mean, i, key)
                for i, (key, s) in enumerate(stats.items()) if s.n and not s.n_diverged]
    return min(finished)[2] if finished else None


def key_label(key: str) -> str:
    """A swept key's label, by its last part (optim.threshold and optim.normalize.threshold: τ)."""
    return KEY_LABELS.get(key.rsplit(".", 1)[-1], key)


def seeds_text(seeds) -> str:
    """"seed 1", or "seeds 1,2,3"."""
    seeds = list(seeds)
    return f"seed{'s' if len(seeds) != 1 else ''} {','.join(map(str, seeds))}"


def scale_banner(artifact: Artifact) -> str:
    return QUICK if artifact.scale == "quick" else ""


def format_stats(stats: SeedStats, decimals: int = 2) -> str:
    """The cell's text; MIXED appended when a counted seed was trained by more than one commit."""
    text = _format_stats(stats, decimals)
    return f"{text} {MIXED}" if stats.n_mixed else text


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
    """(mean, std or None) as the paper prints it; None: n/a."""
    if value is None:
        return "n/a"
    mean, std = value
    return printed(mean) if std is None else f"{printed(mean)} ± {printed(std)}"


def stats_note(artifact: Artifact, with_paper: bool, extra: tuple[str, ...] = ()) -> str:
    """The note of a table of mean ± std cells: how to read a cell, bold, and the paper columns."""
    return " ".join((f"{scale_banner(artifact)}Mean ± sample std (ddof=1) over "
                     f"{seeds_text(artifact.seeds)}; bold: best of the column among cells with no "
                     "diverged seed; — no finished run; div. diverged (div. k/N: k of N seeds "
                     "diverged, the number is over the rest); n=k/N: only k seeds finished."
                     f"{PAPER_NOTE if with_paper else ''}", *extra))


def plain_note(artifact: Artifact, text: str) -> str:
    """The note of a table of text cells (tuning and readings tables)."""
    return scale_banner(artifact) + text + " — no finished run; div. diverged."


def write_rows(artifact: Artifact, header: list[str], rows: list[list[str]], note: str,
               out_dir: Path) -> list[Path]:
    """An artifact's table of text cells in the three formats, MIXED's meaning added to the note
    where a cell carries it, the CSV led by the table's name and scale; returns the paths."""
    stem = Path(out_dir) / "tables" / artifact.name
    if any(MIXED in cell for row in rows for cell in row):
        note = f"{note} {MIXED_NOTE}"
    return (write_table(stem, header, rows, note, ("md", "tex"), title=artifact.title)
            + write_table(stem, ["table", "scale", *header],
                          [[artifact.name, artifact.scale, *row] for row in rows],
                          formats=("csv",)))
