"""The verdicts as a forest plot, one per artifact: every comparison's effect with its 95%
interval, in units of its metric's smallest effect of interest and turned so that the paper's
predicted direction points right, coloured by the comparison's word. The band of ±1 is the
region of negligible differences; a dashed tick marks a comparison's margin."""

from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .verdict_rules import ClaimResult  # noqa: E402
from .writer import write_atomic  # noqa: E402

COLOURS = {"holds": "#1b7837", "contradicted": "#b2182b", "inconclusive": "#7f7f7f",
           "untestable": "#c8c8c8"}
LIMIT = 300.0      # effects beyond ±LIMIT SESOI are drawn at the edge


def _rows(claims: list[ClaimResult], data: dict) -> list[tuple[str, str, float, float, float,
                                                               float]]:
    """(label, word, effect, low, high, margin) per comparison, in SESOI units, paper side > 0."""
    rows = []
    for claim in claims:
        for result in claim.results:
            comparison, effect = result.comparison, result.effect
            sesoi = float(data["metrics"][comparison.metric]["sesoi"])
            name = f"{claim.claim['id'].split('-', 1)[1]}: {comparison.label}"
            name = name.replace(", training loss averaged over the epochs", ", mean train loss")
            name = name.replace(", test loss averaged over the epochs", ", mean test loss")
            if effect is None:
                rows.append((name, result.verdict, math.nan, math.nan, math.nan, math.nan))
                continue
            ends = sorted(comparison.side * v / sesoi for v in (effect.low, effect.high))
            rows.append((name, result.verdict, comparison.side * effect.mean / sesoi, *ends,
                         comparison.margin / sesoi))
    return rows


def _draw(axis, rows) -> None:
    ends = [abs(v) for row in rows for v in row[2:] if not math.isnan(v)]
    limit = min(LIMIT, max(3.0, 3.0 * max(ends, default=1.0)))   # room on a log scale
    clip = lambda v: max(-limit, min(limit, v))  # noqa: E731
    axis.axvspan(-1, 1, color="#efefef", zorder=0)
    axis.axvline(0, color="black", linewidth=0.8)
    for y, (_, word, mean, low, high, margin) in enumerate(rows):
        colour = COLOURS[word]
        if math.isnan(mean):
            axis.text(0.2, y, word, va="center", fontsize=6, color="#808080")
            continue
        axis.plot([clip(low), clip(high)], [y, y], color=colour, linewidth=1.6,
                  solid_capstyle="butt")
        axis.plot(clip(mean), y, "o", color=colour, markersize=3.5)
        if margin:
            axis.plot([margin, margin], [y - 0.35, y + 0.35], "--", color="black", linewidth=0.8)
    axis.set_yticks(range(len(rows)), [r[0][:110] for r in rows], fontsize=6)
    axis.set_ylim(len(rows) - 0.5, -0.5)
    axis.set_xscale("symlog", linthresh=1.0)      # linear within ±1 SESOI, logarithmic beyond
    axis.set_xlim(-limit, limit)
    axis.tick_params(axis="x", labelsize=7)
    axis.set_xlabel("effect / smallest effect of interest, symmetric log scale (the paper "
                    "predicts > 0, to the right); grey band: negligible; dashed: margin",
                    fontsize=7)
    handles = [plt.Line2D([], [], color=c, marker="o", linewidth=1.6, label=w)
               for w, c in COLOURS.items()]
    axis.legend(handles=handles, fontsize=6, loc="upper left", bbox_to_anchor=(1.005, 1.0))


def forest_plot(claims: list[ClaimResult], data: dict, stem: Path) -> list[Path]:
    """`<stem>.png` for one artifact's claims, or `<stem>_<artifact>.png` for each of several;
    an artifact with no testable comparison (no runs) gets none."""
    by_artifact: dict[str, list[ClaimResult]] = {}
    for claim in claims:
        by_artifact.setdefault(claim.claim["artifact"], []).append(claim)
    written = []
    for artifact, group in by_artifact.items():
        rows = _rows(group, data)
        if all(math.isnan(row[2]) for row in rows):
            continue
        height = 1.2 + 0.16 * len(rows)
        figure, axis = plt.subplots(figsize=(11.0, height))
        figure.subplots_adjust(left=0.36, right=0.90, top=1 - 0.35 / height,
                               bottom=0.55 / height)     # fixed margins: no layout search
        _draw(axis, rows)
        protocol = sorted({note for claim in group for note in claim.protocol})
        basis = f"proxy: {'; '.join(protocol)}" if protocol else "as the paper"
        axis.set_title(f"{artifact}: each comparison's effect and 95% interval ({basis})",
                       fontsize=8)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight",  # long labels
                       metadata={"Software": None})
        plt.close(figure)
        path = stem.with_name(f"{stem.name}.png" if len(by_artifact) == 1
                              else f"{stem.name}_{artifact}.png")
        written.append(write_atomic(path, buffer.getvalue()))
    return written
