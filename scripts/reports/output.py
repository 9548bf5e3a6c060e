"""Figures as files, and their shared look: each format rendered in memory, then written
atomically by the one writer (.writer), so a reader (or a crash) never sees half an image; one
colour and line style per optimizer in every figure."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .grids import Artifact  # noqa: E402
from .writer import write_atomic  # noqa: E402

COLORS = {"adam": "C0", "adamng": "C1", "adamclip": "C2", "adamng_adap": "C3",
          "sgdm": "C4", "sgdmng": "C5", "sgdmclip": "C6", "sgdmng_adap": "C7",
          "adagrad": "C8", "adagradng": "C9", "adagradbng": "k"}


def style(optim: str) -> dict:
    """Same colour per optimizer everywhere; normalized variants solid, baselines dashed."""
    dashes = "-" if optim.endswith(("ng", "ng_adap")) else "--"
    dashes = ":" if optim.endswith("clip") else dashes
    return {"color": COLORS.get(optim, "0.3"), "linestyle": dashes}


def save_figure(figure, stem: Path) -> list[Path]:
    """`stem`.png and `stem`.pdf, each written atomically; returns both paths."""
    stem = Path(stem)
    written = []
    for fmt in ("png", "pdf"):
        path = stem.with_suffix(f".{fmt}")
        buffer = io.BytesIO()
        # layout done by the caller; no creation date, so a re-render is byte-identical
        metadata = {"CreationDate": None} if fmt == "pdf" else None
        figure.savefig(buffer, format=fmt, dpi=130, metadata=metadata)
        write_atomic(path, buffer.getvalue())
        written.append(path)
    return written


def finish(fig, artifact: Artifact, out_dir: Path, name: str | None = None,
           layout: bool = True) -> list[Path]:
    """Title (with the quick-scale warning), layout, PNG + PDF, close."""
    title = artifact.title + ("  [QUICK SCALE: not comparable to the paper]"
                              if artifact.scale == "quick" else "")
    fig.suptitle(title, fontsize=11)
    if layout:  # room for a figure legend below and the title above
        fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    paths = save_figure(fig, Path(out_dir) / "figures" / (name or artifact.name))
    plt.close(fig)
    return paths
