"""Run loggers: mirror a run's record elsewhere (docs/DESIGN.md, "Loggers").

The engine always writes the run folder itself; a logger only copies it out. Built from
`cfg.logger` (`_target_`) on rank 0, then called as

    logger.start(run_dir, config, name)   # name: the run's folder relative to <out_dir>/runs
    logger.log_epoch(metrics)             # one metrics.jsonl line
    logger.finish(status)                 # completed | diverged | failed | interrupted
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any


class LocalLogger:
    """The default: the run folder's own files are the whole record, so every call is a no-op."""

    def start(self, run_dir: Path, config: dict, name: str) -> None:
        pass

    def log_epoch(self, metrics: dict) -> None:
        pass

    def finish(self, status: str) -> None:
        pass


def flatten(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"grad_norms": {"fc1": 0.3}} -> {"grad_norms/fc1": 0.3}: wandb panels group by prefix."""
    flat: dict[str, Any] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}/"))
        else:
            flat[name] = value
    return flat


def run_id(run_dir: Path) -> str:
    """A wandb run id that is the same every time this run folder is (re)started.

    A requeued or re-run job resumes its checkpoint in the same folder, so it continues the same
    wandb run. The absolute path, not just the relative name, keeps two result trees apart
    (results/ and results/demo/ hold the same relative names).
    """
    return hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]


class WandbLogger:
    """Weights & Biases: the resolved config once, then one `log` per epoch, step = epoch.

    Args:
        project, entity: where the runs go (entity None: the account's default).
        mode: "online", "offline" or "disabled"; the WANDB_MODE environment variable wins.
        group: wandb group; None groups by "<dataset>/<model>" (the first two name parts).
        tags: extra wandb tags.
        dir: where wandb writes its files; None: the run folder (<run_dir>/wandb/).
    """

    def __init__(self, project: str = "bng-suite", entity: str | None = None,
                 mode: str | None = None, group: str | None = None,
                 tags: list[str] | tuple[str, ...] = (), dir: str | None = None) -> None:
        self.project, self.entity, self.group = project, entity, group
        self.mode = os.environ.get("WANDB_MODE") or mode or "online"
        self.tags, self.dir = list(tags or ()), dir
        self.run = None

    def start(self, run_dir: Path, config: dict, name: str) -> None:
        import wandb  # only when this logger is chosen: the default path never imports wandb

        self.run = wandb.init(
            project=self.project, entity=self.entity, mode=self.mode,
            name=name, id=run_id(run_dir), resume="allow",
            group=self.group or "/".join(name.split("/")[:2]), tags=self.tags,
            dir=str(self.dir or run_dir), config=config,
        )  # fmt: skip

    def log_epoch(self, metrics: dict) -> None:
        if self.run is not None:
            self.run.log(flatten(metrics), step=int(metrics["epoch"]))

    def finish(self, status: str) -> None:
        if self.run is None:
            return
        self.run.summary["status"] = status
        if status == "interrupted":
            self.run.mark_preempting()  # shown as preempted: the requeued job continues it
        # A diverged run is a result, not a crash; failed and interrupted ones did not finish.
        self.run.finish(exit_code=0 if status in ("completed", "diverged") else 1)
        self.run = None
