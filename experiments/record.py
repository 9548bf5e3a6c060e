"""What a run folder holds, whose run it is, and whether this command may skip, resume or start it.

A run folder is bound to the config that produced it (docs/DESIGN.md, "Run identity"): the
resolved config less the keys in IGNORED, with nulls dropped, plus the size of the data it
loaded. A command whose identity differs never skips, resumes or overwrites the folder's run.
A completed run is never retrained over its own history: a damaged summary is rebuilt from
metrics.jsonl, or the run is refused with one line.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import DamagedFile, IdentityMismatch, ResumeError
from .io import read_json, read_jsonl, read_yaml

ROOT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "config.yaml"
# The overrides that do not name a run's <extra> folder but are its other parts: their values
# are in the identity (the whole dataset, model and optim nodes, and the seed).
FOLDER_KEYS = ("dataset", "model", "optim", "seed", "experiment")


def exempt_keys(root_config: Path = ROOT_CONFIG) -> tuple[str, ...]:
    """The keys that cannot change a run's result (where and how it runs, what it prints,
    samples or keeps): configs/config.yaml's `override_dirname.exclude_keys`, the one list,
    less FOLDER_KEYS and without Hydra's `+`/`++` prefixes."""
    hydra = (yaml.safe_load(root_config.read_text()) or {}).get("hydra") or {}
    keys = hydra["job"]["config"]["override_dirname"]["exclude_keys"]
    return tuple(dict.fromkeys(k.lstrip("+") for k in keys if k.lstrip("+") not in FOLDER_KEYS))


# What the identity leaves out: the exempt keys, the run's own records (`meta`, `hydra`), and
# `dataset.vocab_size`, filled from the loaded data and so part of the data identity.
IGNORED = (*exempt_keys(), "meta", "hydra", "dataset.vocab_size")
FINISHED = ("completed", "diverged")
RUN_FILES = ("summary.json", "metrics.jsonl", "config.yaml", "checkpoint.pt")
MAXIMIZE = ("test_acc", "test_top1", "test_top5")
MINIMIZE = ("test_loss", "test_ppl")


def config_identity(config: Mapping) -> dict[str, Any]:
    """{dotted key: value} of every key that can change the result. A null is dropped, so a key
    that is null on one side and absent on the other (an `${oc.select:...,null}` added later)
    is no difference."""
    flat: dict[str, Any] = {}

    def walk(node: Mapping, prefix: str) -> None:
        for key, value in node.items():
            name = f"{prefix}{key}"
            if name in IGNORED:
                continue
            if isinstance(value, Mapping):
                walk(value, f"{name}.")
            elif value is not None:
                flat[name] = value

    walk(config, "")
    return dict(sorted(flat.items()))


def data_identity(data: Any, world_size: int) -> dict[str, int | str | None]:
    """The size of the data actually loaded, and `content`: a fingerprint of the bytes of the
    files it was read from (sha256[:16], the data layer's `content`). A subset, another copy or a
    damaged file of a dataset differs, even where its sizes do not."""
    return {"train_samples": int(data.num_train) * world_size,  # per epoch, all ranks together
            "test_samples": int(data.num_test),
            "vocab_size": None if data.vocab_size is None else int(data.vocab_size),
            "content": getattr(data, "content", None)}


def fingerprint(config: Mapping[str, Any]) -> str:
    text = json.dumps(config_identity(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class Identity:
    config: dict[str, Any]                 # config_identity of the resolved config
    data: dict[str, Any] | None = None     # data_identity; None for a run that predates it

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.config)

    def stored(self) -> dict:
        """What summary.json and config.yaml's meta keep: `{"fingerprint", "data"}`."""
        return {"fingerprint": self.fingerprint, "data": self.data}

    def differences(self, new: Identity) -> list[str]:
        """`key: old -> new` for each key that differs (data keys as `data.<key>`)."""
        out = [f"{key}: {_show(self.config.get(key))} -> {_show(new.config.get(key))}"
               for key in sorted(set(self.config) | set(new.config))
               if self.config.get(key) != new.config.get(key)]
        if self.data is not None and new.data is not None:
            # Only the keys both record: a run made before `content` was recorded is still
            # this config's run (skipped or resumed, never refused or retrained).
            out += [f"data.{key}: {_show(self.data.get(key))} -> {_show(new.data.get(key))}"
                    for key in sorted(set(self.data) & set(new.data))
                    if self.data.get(key) != new.data.get(key)]
        return out


def _show(value: Any) -> str:
    return json.dumps(value, default=str)


@dataclass
class StoredRun:
    """The run files of a folder as found, read tolerantly: a damaged file is noted, not raised."""

    run_dir: Path
    summary: dict | None = None
    history: list[dict] = field(default_factory=list)
    config: dict | None = None             # config.yaml without its meta block
    meta: dict = field(default_factory=dict)
    has_checkpoint: bool = False
    damaged: dict[str, str] = field(default_factory=dict)   # file name -> what is wrong

    @classmethod
    def read(cls, run_dir: Path) -> StoredRun:
        found = cls(run_dir, has_checkpoint=(run_dir / "checkpoint.pt").exists())
        for name, reader in (("summary.json", read_json), ("metrics.jsonl", read_jsonl),
                             ("config.yaml", read_yaml)):
            try:
                value = reader(run_dir / name)
            except DamagedFile as err:
                found.damaged[name] = str(err)
                continue
            if name == "summary.json":
                found.summary = value
            elif name == "metrics.jsonl":
                found.history = value
            elif value is not None:
                found.meta = value.pop("meta", None) or {}
                found.config = value
        return found

    @property
    def status(self) -> str | None:
        return None if self.summary is None else self.summary.get("status")

    @property
    def holds_results(self) -> bool:
        """Anything that retraining from scratch would lose."""
        return (self.has_checkpoint or bool(self.history) or "metrics.jsonl" in self.damaged
                or self.status in FINISHED)

    def identity(self) -> Identity | None:
        """The stored identity; a run without one (an older version) gets it from config.yaml."""
        stored = (self.summary or {}).get("identity") or self.meta.get("identity") or {}
        if self.config is not None:
            return Identity(config_identity(self.config), stored.get("data"))
        return None

    def conflict(self, new: Identity) -> str | None:
        """Why this folder's run is not the one `new` describes; None when it is."""
        old = self.identity()
        if old is None:
            fingerprint_only = ((self.summary or {}).get("identity") or {}).get("fingerprint")
            if fingerprint_only == new.fingerprint:
                return None
            why = "; ".join(self.damaged.values()) or "config.yaml is missing"
            return f"it holds results but its config cannot be read ({why})"
        changed = old.differences(new)
        if not changed:
            return None
        shown = ", ".join(changed[:6]) + (f" and {len(changed) - 6} more" if len(changed) > 6 else "")
        return f"it holds a run of another config ({shown})"

    def finished_summary(self, epochs: int, command: str) -> tuple[dict | None, bool]:
        """(the summary of a run that is finished, or None if it is still to do; whether that
        summary was rebuilt from metrics.jsonl and needs writing).

        Raises ResumeError for a history that can neither be skipped nor resumed.
        """
        if self.status in FINISHED:
            return self.summary, False
        if self.has_checkpoint:
            return None, False                           # resume: the checkpoint has the history
        if "metrics.jsonl" in self.damaged:
            raise ResumeError(f"{self.run_dir}: {self.damaged['metrics.jsonl']}, and there is no "
                              "checkpoint.pt to rebuild it from. Move the folder away (or add "
                              "retrain=true) to train this run from scratch.")
        if self.history and len(self.history) >= epochs:
            return rebuild_summary(self, epochs, command), True
        if self.history:
            raise ResumeError(
                f"{self.run_dir} has {len(self.history)} epochs in metrics.jsonl but no "
                "checkpoint.pt to resume from, so it cannot go on without retraining over that "
                "history. Move the folder away (or add retrain=true) to train it from scratch.")
        return None, False

    def discard(self) -> None:
        """Delete the run files (retrain=true): the run starts from scratch."""
        for name in RUN_FILES:
            (self.run_dir / name).unlink(missing_ok=True)


def best_metrics(history: list[dict]) -> dict:
    best = {}
    for key in MAXIMIZE + MINIMIZE:
        values = [row[key] for row in history
                  if isinstance(row.get(key), (int, float)) and math.isfinite(row[key])]
        if values:
            best[key] = max(values) if key in MAXIMIZE else min(values)
    return best


def rebuild_summary(stored: StoredRun, epochs: int, command: str) -> dict:
    """A completed run's summary from its metrics.jsonl and stored config (the summary was
    damaged, or the run stopped between its last checkpoint and its final summary)."""
    history = stored.history
    identity = stored.identity()
    return {"status": "completed", "epochs_done": len(history), "epochs": epochs,
            "final": history[-1], "best": best_metrics(history),
            "wall_seconds": sum(row.get("epoch_seconds", 0.0) for row in history),
            "command": stored.meta.get("command") or command, "run_dir": str(stored.run_dir),
            "identity": identity.stored() if identity else None,
            "commits": prior_commits(stored, None, len(history) + 1, 0),
            "message": "summary.json rebuilt from metrics.jsonl"}


def prior_commits(stored: StoredRun, from_checkpoint: list[dict] | None, epoch: int,
                  batch: int) -> list[dict]:
    """The commits that trained a run that stands at (`epoch`, `batch`): the checkpoint's
    record, else the stored one, else (a run from before the record) one entry for
    config.yaml's `git_commit` over every epoch trained so far."""
    last = epoch if batch else epoch - 1
    if last < 1:
        return []
    if from_checkpoint:
        return [dict(c, epochs=list(c["epochs"])) for c in from_checkpoint]
    kept = (stored.summary or {}).get("commits") or stored.meta.get("commits")
    if isinstance(kept, list) and kept:
        commits = [dict(c, epochs=list(c["epochs"])) for c in kept]
        commits[-1]["epochs"][1] = max(commits[-1]["epochs"][1], last)
        return commits
    return [{"commit": str(stored.meta.get("git_commit") or "unknown"), "epochs": [1, last]}]


def continue_commits(commits: list[dict], commit: str, epoch: int) -> dict | None:
    """Add `commit`, which trains from `epoch` on, to the record; returns the entry of the
    commit it takes over from when that is another one (a resume across commits), else None.
    Two entries share an epoch when it was stopped halfway: each commit trained part of it."""
    if commits and commits[-1]["commit"] == commit:
        return None
    previous = commits[-1] if commits else None
    commits.append({"commit": commit, "epochs": [epoch, epoch]})
    return previous


def check_identity(stored: StoredRun, new: Identity, retrain: bool) -> bool:
    """Whether the folder's run must be discarded first (retrain=true and another config's run
    is there). Raises IdentityMismatch when it is another config's run and retrain is off."""
    conflict = stored.conflict(new) if stored.holds_results else None
    if conflict is None:
        return False
    if not retrain:
        raise IdentityMismatch(
            f"{stored.run_dir}: {conflict}. Nothing was changed. Give this run another "
            "out_dir=, or add retrain=true to delete that run and train this config from scratch.")
    return True


def decide(stored: StoredRun, new: Identity, epochs: int, command: str,
           retrain: bool) -> tuple[str, dict | None]:
    """What this command does with the folder: ("skip", summary) for a finished run, ("rebuild",
    summary) for one whose summary must be rebuilt first, ("retrain", None) when the folder's
    run must be deleted first, ("train", None) to start or resume. Raises IdentityMismatch or
    ResumeError (the latter only without retrain) when the folder cannot be used as it is."""
    if check_identity(stored, new, retrain):
        return "retrain", None
    try:
        done, rebuilt = stored.finished_summary(epochs, command)
    except ResumeError:
        if not retrain:
            raise
        return "retrain", None
    if done is None:
        return "train", None
    return ("rebuild" if rebuilt else "skip"), done
