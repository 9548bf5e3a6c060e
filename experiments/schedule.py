"""Per-epoch learning-rate schedules, from the dataset's `train.schedule` block.

Each is a LambdaLR of the number of finished epochs `e`, stepped once per epoch:
- constant:    1
- multistep:   gamma ** (number of milestones <= e); fb.resnet.torch's CIFAR schedule is
               milestones [80, 120], gamma 0.1, so epochs 81-120 run at lr/10.
- exponential: gamma ** e
"""

from __future__ import annotations

from collections.abc import Mapping

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from .errors import ScheduleError


def schedule_factor(spec: Mapping, finished_epochs: int) -> float:
    name = spec.get("name", "constant")
    if name == "constant":
        return 1.0
    if name == "multistep":
        passed = sum(finished_epochs >= m for m in spec["milestones"])
        return float(spec["gamma"]) ** passed
    if name == "exponential":
        return float(spec["gamma"]) ** finished_epochs
    raise ScheduleError(f"unknown schedule name {name!r}: use constant, multistep or exponential")


def build_schedule(optimizer: Optimizer, spec: Mapping) -> LambdaLR:
    spec = dict(spec)
    schedule_factor(spec, 0)              # fail now, not after the first epoch
    return LambdaLR(optimizer, lambda e: schedule_factor(spec, e))
