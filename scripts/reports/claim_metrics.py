"""What each claim's metric reads from a run (claims.yaml `metrics:`): final, best and
curve-shaped values. Each returns None where the run does not hold it (absent, or not finite at
some epoch), and the verdict counts that seed as unpaired, never as a number."""

from __future__ import annotations

import math

import numpy as np

from .runs import Run


def finite(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _curve(run: Run, column: str) -> list[float] | None:
    """A metric's per-epoch values; None if absent or not finite at some epoch."""
    if column not in run.metrics:
        return None
    values = [finite(v) for v in run.metrics[column].tolist()]
    return None if not values or None in values else values


def _swing(column: str):
    """Mean |change from one epoch to the next| over the second half of the epochs (4+)."""
    def metric(run: Run, settings: dict) -> float | None:
        values = _curve(run, column)
        if values is None or len(values) < 4:
            return None
        half = values[len(values) // 2:]
        return float(np.mean(np.abs(np.diff(half))))
    return metric


def _error(key: str):
    def metric(run: Run, settings: dict) -> float | None:
        value = finite(run.final.get(key))
        return None if value is None else 100.0 * (1.0 - value)
    return metric


def _final(key: str):
    return lambda run, settings: finite(run.final.get(key))


def _mean_curve(column: str):
    """The curve's mean over the epochs: the area under it per epoch, a speed measure."""
    def metric(run: Run, settings: dict) -> float | None:
        values = _curve(run, column)
        return None if values is None else float(np.mean(values))
    return metric


def _plateau_distance(run: Run, settings: dict) -> float | None:
    values = _curve(run, "train_loss")
    level = settings["plateau"]["level"]
    return None if values is None else max(abs(v - level) for v in values)


def _best_acc(run: Run, settings: dict) -> float | None:
    value = finite(run.best.get("test_acc"))
    if value is None:
        values = _curve(run, "test_acc")
        value = max(values) if values else None
    return None if value is None else 100.0 * value


METRICS = {
    "final_train_loss": _final("train_loss"), "final_test_loss": _final("test_loss"),
    "final_test_log_ppl": _final("test_loss"), "mean_train_loss": _mean_curve("train_loss"),
    "mean_test_loss": _mean_curve("test_loss"),
    "plateau_distance": _plateau_distance, "train_swing": _swing("train_loss"),
    "test_swing": _swing("test_loss"), "final_test_error": _error("test_acc"),
    "final_top1_error": _error("test_top1"), "final_top5_error": _error("test_top5"),
    "best_val_acc": _best_acc,
}
