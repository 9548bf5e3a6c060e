"""Learning-rate schedules, from the dataset's `train.schedule` block.

The lr of every step is base_lr * epoch_factor(e) * step_factor(t), where e counts finished
epochs and t finished optimizer steps. The epoch factor (`name`):
- constant:     1
- multistep:    gamma ** (number of milestones <= e); fb.resnet.torch's CIFAR schedule is
                milestones [80, 120], gamma 0.1, so epochs 81-120 run at lr/10.
- exponential:  gamma ** e
- inverse_time: 1, with the step factor 1 / (1 + decay * t): Torch7's `learningRateDecay`,
                which optim.sgd applies per iteration (one reading of ImageNet's "0.001
                exponential decay", docs/PROTOCOL.md).
Optional, with any name: `warmup_steps: N` multiplies the first N steps by `warmup_factor`
(default 0.1): He et al. (2016a) train ResNet-110 at lr 0.01 "until the training error is below
80% (about 400 iterations), and then go back to 0.1".

A schedule with a step factor is advanced after every optimizer step (`per_step`); the others
change the lr only at epoch ends, as the paper's schedules do.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch.optim import Optimizer

from .errors import ScheduleError

NAMES = ("constant", "multistep", "exponential", "inverse_time")
WARMUP_FACTOR = 0.1   # He et al. (2016a): 0.01 against the schedule's 0.1


def epoch_factor(spec: Mapping, finished_epochs: int) -> float:
    name = spec.get("name", "constant")
    if name in ("constant", "inverse_time"):
        return 1.0
    if name == "multistep":
        passed = sum(finished_epochs >= m for m in spec["milestones"])
        return float(spec["gamma"]) ** passed
    if name == "exponential":
        return float(spec["gamma"]) ** finished_epochs
    raise ScheduleError(f"unknown schedule name {name!r}: use {', '.join(NAMES)}")


def step_factor(spec: Mapping, finished_steps: int) -> float:
    factor = 1.0
    if spec.get("name") == "inverse_time":
        factor /= 1.0 + float(spec["decay"]) * finished_steps
    warmup = spec.get("warmup_steps")
    if warmup and finished_steps < int(warmup):
        factor *= float(spec.get("warmup_factor") or WARMUP_FACTOR)
    return factor


def schedule_factor(spec: Mapping, finished_epochs: int, finished_steps: int = 0) -> float:
    return epoch_factor(spec, finished_epochs) * step_factor(spec, finished_steps)


def _check(spec: Mapping) -> None:
    """Fail now, not after the first epoch."""
    epoch_factor(spec, 0)
    if spec.get("name") == "inverse_time":
        decay = spec.get("decay")
        if not isinstance(decay, (int, float)) or isinstance(decay, bool) or decay < 0:
            raise ScheduleError(f"schedule inverse_time needs decay >= 0, got {decay!r} "
                                "(e.g. dataset.train.schedule.decay=0.001).")
    warmup = spec.get("warmup_steps")
    if warmup is not None and (not isinstance(warmup, int) or isinstance(warmup, bool)
                               or warmup < 0):
        raise ScheduleError(f"schedule warmup_steps must be a non-negative integer, got "
                            f"{warmup!r} (e.g. dataset.train.schedule.warmup_steps=400).")


class Schedule:
    """Sets each param group's lr from (finished epochs, finished steps).

    `step()` is called at the end of each epoch (as torch's epoch schedulers are), and
    `step_batch()` after each optimizer step when `per_step`. Its state is two counters, saved
    in the checkpoint, so a run resumed mid-epoch continues the same lr sequence.
    """

    def __init__(self, optimizer: Optimizer, spec: Mapping) -> None:
        self.spec = dict(spec)
        _check(self.spec)
        self.optimizer = optimizer
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        self.epochs_done = 0
        self.steps_done = 0
        self.per_step = (self.spec.get("name") == "inverse_time"
                         or bool(self.spec.get("warmup_steps")))
        self._apply()

    def _apply(self) -> None:
        factor = schedule_factor(self.spec, self.epochs_done, self.steps_done)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * factor

    def step(self) -> None:
        self.epochs_done += 1
        self._apply()

    def step_batch(self) -> None:
        self.steps_done += 1
        self._apply()

    def state_dict(self) -> dict:
        return {"epochs_done": self.epochs_done, "steps_done": self.steps_done,
                "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state: Mapping) -> None:
        # A checkpoint of an earlier version holds torch's LambdaLR state: `last_epoch` counted
        # finished epochs, and no step counter (its schedules had no step factor).
        self.epochs_done = int(state.get("epochs_done", state.get("last_epoch", 0)))
        self.steps_done = int(state.get("steps_done", 0))
        self.base_lrs = list(state["base_lrs"])
        self._apply()


def build_schedule(optimizer: Optimizer, spec: Mapping) -> Schedule:
    return Schedule(optimizer, spec)
