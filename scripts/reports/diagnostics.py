"""Beyond the paper: each layer's gradient norm against depth over training, MLP-18 under Adam
vs AdamNG, from metrics.jsonl `grad_norms` (block name -> mean norm over the epoch's sampled
steps, before normalization). A vanishing gradient shows as norms falling towards the input layers."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.cm import ScalarMappable  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402

from .grids import Artifact, Cell, find_run, label  # noqa: E402
from .output import finish  # noqa: E402
from .runs import Run, is_finite_number  # noqa: E402


def grad_norm_matrix(run: Run) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(block names in model order, epochs (E,), norms (E, L)).

    NaN where not logged; 0.0 where the mean norm was exactly zero (a dead layer, or a gradient
    whose squares vanish in float32 norms), which a log axis cannot show by itself."""
    blocks: list[str] = []
    rows = []
    for record in run.records:
        norms = record.get("grad_norms")
        if not isinstance(norms, dict) or not is_finite_number(record.get("epoch")):
            continue
        blocks += [name for name in norms if name not in blocks]
        rows.append((record["epoch"], norms))
    matrix = np.full((len(rows), len(blocks)), np.nan)
    for i, (_, norms) in enumerate(rows):
        for j, name in enumerate(blocks):
            value = norms.get(name)
            if is_finite_number(value) and value >= 0:
                matrix[i, j] = value
    return blocks, np.array([epoch for epoch, _ in rows], dtype=float), matrix


def first_run_with_norms(artifact: Artifact, runs: list[Run], cell: Cell) -> Run | None:
    for seed in artifact.seeds:
        run = find_run(runs, cell, seed)
        if run is not None and run.status != "damaged" and any(
                isinstance(r.get("grad_norms"), dict) for r in run.records):
            return run
    return None


def render_diagnostics(artifact: Artifact, runs: list[Run], out_dir: Path,
                       paper: dict | None = None) -> list[Path]:
    """One panel per optimizer: x = layer (input to output), y = gradient norm (log),
    one line per epoch coloured by epoch; the first seed with logged norms."""
    dataset, model = artifact.datasets[0], artifact.models[0]
    fig, axes = plt.subplots(1, len(artifact.optims), figsize=(5.5 * len(artifact.optims), 4.4),
                             squeeze=False, sharey=True, layout="constrained")
    found = {}
    for optim in artifact.optims:
        run = first_run_with_norms(artifact, runs, artifact.grid_of(optim).cell(
            dataset, model, optim, artifact.variants[0]))
        if run is not None:
            found[optim] = (run, *grad_norm_matrix(run))
    epochs = [e for (_, _, ep, _) in found.values() for e in ep]
    norm = Normalize(min(epochs, default=1), max(epochs, default=2))
    positive = [m[m > 0] for (_, _, _, m) in found.values()]
    smallest = min((float(p.min()) for p in positive if p.size), default=1.0)
    floor = smallest / 30  # exact zeros are drawn as x on this line, below every real value
    for ax, optim in zip(axes[0], artifact.optims, strict=True):
        ax.set_title(f"{label(model)} on {label(dataset)}: {label(optim)}", fontsize=9)
        ax.set_xlabel("layer (input → output)")
        if optim not in found:
            ax.text(0.5, 0.5, "missing", transform=ax.transAxes, ha="center", va="center",
                    fontsize=14, color="0.5")
            continue
        run, blocks, run_epochs, matrix = found[optim]
        depth = np.arange(1, len(blocks) + 1)
        for epoch, row in zip(run_epochs, matrix, strict=True):
            color = plt.cm.viridis(norm(epoch))
            ax.plot(depth, np.where(row > 0, row, np.nan), color=color, linewidth=1.0,
                    marker=".", markersize=3)
            zero = row == 0
            ax.plot(depth[zero], np.full(int(zero.sum()), floor), linestyle="none", marker="x",
                    markersize=4, color=color)
        if (matrix == 0).any():
            ax.axhline(floor, color="0.6", linewidth=0.5, linestyle=":")
            ax.text(0.99, 0.01, "x: norm exactly 0 (dead, or below float32 norms' range), drawn below the data",
                    transform=ax.transAxes, fontsize=6, color="0.3", ha="right", va="bottom")
        ax.set_yscale("log")
        ax.set_xticks(depth)
        ax.set_xticklabels([str(d) for d in depth], fontsize=6)
        ax.text(0.01, 0.01, f"seed {run.seed}, {len(blocks)} blocks ({blocks[0]} … {blocks[-1]})",
                transform=ax.transAxes, fontsize=6, color="0.4", va="bottom")
    axes[0][0].set_ylabel("mean gradient norm per epoch (before normalization)")
    if found:
        fig.colorbar(ScalarMappable(norm=norm, cmap="viridis"), ax=axes[0].tolist(),
                     label="epoch")
    # constrained layout (set above) leaves room for the colorbar shared by both panels
    return finish(fig, artifact, out_dir, layout=False)
