"""checkpoint.pt: what a run needs to go on exactly where it stopped, on every rank.

Rank 0 writes one file with the model, optimizer and schedule, the history, and one entry per
rank (running sums, LSTM state, RNG state), gathered from every rank (docs/DESIGN.md, "Run
outputs"). The write is atomic (experiments/io.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import distributed
from .errors import ResumeError
from .io import save_torch
from .loops import EpochState, Task


@dataclass
class Progress:
    """Where a run stands: what a checkpoint saves and a summary reports."""

    epoch: int = 1                           # the epoch being trained (1-based)
    state: EpochState = field(default_factory=EpochState)
    history: list[dict] = field(default_factory=list)      # one metrics row per finished epoch
    wall: float = 0.0                        # seconds trained before this process started
    # [{"commit", "epochs": [first, last]}] each code version that trained the run, in order;
    # None when the checkpoint predates the record (experiments/record.py, prior_commits).
    commits: list[dict] | None = None

    @property
    def started(self) -> bool:
        return bool(self.history) or self.state.batch > 0


def _rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device).cpu()
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def _to(value, device):
    """Tensors (and tuples of them, the LSTM state) moved to `device`; anything else as is."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, tuple):
        return tuple(_to(v, device) for v in value)
    return value


def save_checkpoint(path: Path, task: Task, scheduler, progress: Progress, wall: float) -> None:
    """Every rank's running sums, LSTM state and RNG go to rank 0, which writes the file."""
    mine = {"epoch_state": {k: _to(v, "cpu") for k, v in progress.state.to_dict().items()},
            "rng": _rng_state(task.device)}
    ranks = distributed.gather_objects(task.dist, mine)
    if task.dist.is_main:
        save_torch(path, {
            "epoch": progress.epoch, "ranks": ranks, "history": progress.history, "wall": wall,
            "commits": progress.commits, "model": task.net.state_dict(),
            "optimizer": task.optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        })


def _why(err: Exception) -> str:
    """What torch said, in one short line, without its advice to load the file with
    weights_only=False: that would run whatever code a damaged or foreign file holds."""
    text = " ".join(str(err).split())
    if "weights_only" in text or "Unpickl" in type(err).__name__:
        return f"{type(err).__name__}: not a file of plain tensors"
    return f"{type(err).__name__}: {text[:160]}"


def load_checkpoint(path: Path, task: Task, scheduler) -> Progress:
    """The run's progress from its checkpoint, loaded into the task; a fresh start without one."""
    if not path.exists():
        return Progress()
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        task.net.load_state_dict(ckpt["model"])
        task.optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
    except Exception as err:   # truncated file, or a checkpoint of another code version
        raise ResumeError(
            f"cannot resume from {path} ({_why(err)}): it is damaged or was written by another "
            "code version. Add retrain=true to delete this run's files and train it from epoch "
            "1, or move the run folder away.") from err
    # One entry per rank; a checkpoint of an older version holds rank 0's only.
    ranks = ckpt.get("ranks") or [{"epoch_state": ckpt["epoch_state"], "rng": ckpt["rng"]}]
    world_size = task.dist.world_size
    if len(ranks) != world_size and ranks[0]["epoch_state"]["batch"] > 0:
        raise ResumeError(
            f"{path} was written in the middle of an epoch by {len(ranks)} process(es); resume "
            f"it with {len(ranks)} (this run has {world_size}): each keeps its own running "
            "sums. An end-of-epoch checkpoint resumes with any number that divides the "
            "training set.")
    mine = ranks[task.dist.rank] if len(ranks) == world_size else ranks[0]
    _set_rng_state(mine["rng"], task.device)
    state = EpochState.from_dict({k: _to(v, task.device) for k, v in mine["epoch_state"].items()})
    return Progress(ckpt["epoch"], state, ckpt["history"], ckpt["wall"], ckpt.get("commits"))
