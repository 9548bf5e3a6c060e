"""Find and read run folders tolerantly: a partial sweep, a crash mid-write or a run still going
never raises here. A run is identified from config.yaml's `meta` block, else from its path."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pandas as pd
import yaml

# Better statuses win when several run folders answer the same (cell, seed).
STATUS_RANK = {"completed": 0, "diverged": 1, "running": 2, "interrupted": 3, "incomplete": 4,
               "failed": 5}
# Statuses without a result yet: the run's command produces (or resumes) it.
PENDING = ("running", "interrupted", "incomplete", "failed")


def read_json(path: Path) -> dict | None:
    """The JSON object in `path`, or None if it is missing, truncated or not an object."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def read_yaml(path: Path) -> dict | None:
    try:
        value = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return None
    return value if isinstance(value, dict) else None


def read_jsonl(path: Path) -> list[dict]:
    """One dict per well-formed line; a half-written last line (a crash mid-write) is skipped."""
    try:
        text = Path(path).read_text()
    except OSError:
        return []
    records = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def split_overrides(extra: object) -> dict[str, str]:
    """`"dataset.bptt=400,epochs=3"` (or a list of such, or `"default"`) -> {key: value}.

    Commas inside brackets (`schedule.milestones=[80,120]`) do not split."""
    if extra is None:
        return {}
    if isinstance(extra, dict):
        return {str(k): str(v) for k, v in extra.items()}
    items: list[str] = []
    if isinstance(extra, (list, tuple)):
        items = [str(item) for item in extra]
    else:
        text, depth, start = str(extra).strip(), 0, 0
        if text in ("", "default"):
            return {}
        for index, char in enumerate(text):
            depth += char in "[{("
            depth -= char in "]})"
            if char == "," and depth == 0:
                items.append(text[start:index])
                start = index + 1
        items.append(text[start:])
    overrides = {}
    for item in items:
        key, sep, value = item.strip().lstrip("+~").partition("=")
        if sep:
            overrides[key] = value
    return overrides


def is_finite_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class Run:
    """One run folder: who it is (from meta, else the path), how it ended, and its metrics."""

    path: Path
    dataset: str
    model: str
    optim: str
    extra: str
    seed: int
    summary: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)

    @cached_property
    def records(self) -> list[dict]:
        return read_jsonl(self.path / "metrics.jsonl")

    @cached_property
    def metrics(self) -> pd.DataFrame:
        """One row per epoch (scalar columns only), sorted by epoch; empty if nothing logged."""
        rows = [{k: v for k, v in r.items() if not isinstance(v, (dict, list))} for r in self.records]
        frame = pd.DataFrame(rows)
        if frame.empty or "epoch" not in frame:
            return pd.DataFrame()
        frame = frame.apply(pd.to_numeric, errors="coerce")
        return frame.dropna(subset=["epoch"]).drop_duplicates("epoch", keep="last").sort_values("epoch")

    @property
    def overrides(self) -> dict[str, str]:
        return split_overrides(self.extra)

    @property
    def final(self) -> dict:
        """The last epoch's metrics: summary.json's `final`, else the last jsonl line."""
        final = self.summary.get("final")
        if isinstance(final, dict) and final:
            return final
        return self.records[-1] if self.records else {}

    @property
    def best(self) -> dict:
        best = self.summary.get("best")
        return best if isinstance(best, dict) else {}

    @property
    def status(self) -> str:
        """completed | diverged | running | interrupted | failed | incomplete (no summary.json)."""
        status = str(self.summary.get("status", "incomplete"))
        if status not in STATUS_RANK:
            status = "incomplete"
        if status == "completed" and self._nonfinite_loss():
            return "diverged"
        return status

    def _nonfinite_loss(self) -> bool:
        final = self.final
        return any(key in final and not is_finite_number(final[key])
                   for key in ("train_loss", "test_loss"))

    @property
    def command(self) -> str | None:
        meta = self.config.get("meta") if isinstance(self.config.get("meta"), dict) else {}
        return self.summary.get("command") or meta.get("command")

    @property
    def progress(self) -> str:
        done = self.summary.get("epochs_done", len(self.records))
        total = self.summary.get("epochs", "?")
        return f"{done}/{total} epochs"


def _identity_from_path(run_dir: Path, runs_root: Path) -> dict | None:
    parts = run_dir.relative_to(runs_root).parts
    if len(parts) != 5 or not parts[4].startswith("seed"):
        return None
    try:
        seed = int(parts[4][len("seed"):])
    except ValueError:
        return None
    return {"dataset": parts[0], "model": parts[1], "optim": parts[2], "extra": parts[3],
            "seed": seed}


def load_run(run_dir: Path, runs_root: Path) -> Run | None:
    """A Run for `run_dir`, or None if the folder is not one (no files we know, bad layout)."""
    files = ("metrics.jsonl", "summary.json", "config.yaml")
    if not any((run_dir / name).exists() for name in files):
        return None
    config = read_yaml(run_dir / "config.yaml") or {}
    identity = _identity_from_path(run_dir, runs_root) or {}
    meta = config.get("meta") if isinstance(config.get("meta"), dict) else {}
    for key in ("dataset", "model", "optim", "extra", "seed"):
        if meta.get(key) not in (None, ""):
            identity[key] = meta[key]
    if not all(key in identity for key in ("dataset", "model", "optim", "seed")):
        return None
    extra = identity.get("extra", "default")
    if isinstance(extra, (list, tuple)):
        extra = ",".join(map(str, extra)) or "default"
    try:
        seed = int(identity["seed"])
    except (TypeError, ValueError):
        return None
    return Run(path=run_dir, dataset=str(identity["dataset"]), model=str(identity["model"]),
               optim=str(identity["optim"]), extra=str(extra), seed=seed,
               summary=read_json(run_dir / "summary.json") or {}, config=config)


def load_runs(results_dir: Path) -> list[Run]:
    """Every run under `<results_dir>/runs/`, in path order. A missing folder gives []."""
    runs_root = Path(results_dir) / "runs"
    if not runs_root.is_dir():
        return []
    run_dirs = sorted({p.parent for name in ("metrics.jsonl", "summary.json", "config.yaml")
                       for p in runs_root.rglob(name)})
    runs = [load_run(run_dir, runs_root) for run_dir in run_dirs]
    return [run for run in runs if run is not None]
