"""Learning-rate schedules: the epoch factors, the per-step warm-up and inverse-time decay, and
their counters in a checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import train_in_process
from experiments.errors import ScheduleError
from experiments.schedule import Schedule, schedule_factor

CIFAR = {"name": "multistep", "milestones": [80, 120], "gamma": 0.1}


def _sgd(lr: float = 0.1) -> torch.optim.SGD:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=lr, momentum=0.9)


def test_epoch_factors_are_the_papers_schedules():
    assert schedule_factor(CIFAR, 79) == 1.0
    assert schedule_factor(CIFAR, 80) == pytest.approx(0.1)
    assert schedule_factor(CIFAR, 120) == pytest.approx(0.01)
    assert schedule_factor({"name": "exponential", "gamma": 0.912}, 50) == pytest.approx(
        0.912 ** 50)


def test_inverse_time_is_torch7s_learning_rate_decay_per_step():
    optimizer = _sgd(0.1)
    schedule = Schedule(optimizer, {"name": "inverse_time", "decay": 0.001})
    assert schedule.per_step
    for _ in range(1000):
        schedule.step_batch()
    schedule.step()                                    # an epoch end changes nothing here
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 / (1 + 0.001 * 1000))


def test_warmup_runs_the_first_steps_at_a_tenth_then_the_schedule():
    optimizer = _sgd(0.1)
    schedule = Schedule(optimizer, {**CIFAR, "warmup_steps": 400})
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01)
    for _ in range(399):
        schedule.step_batch()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01)
    schedule.step_batch()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1)
    for _ in range(80):
        schedule.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01)   # the milestone still acts


def test_without_a_step_factor_the_schedule_is_per_epoch_only():
    assert not Schedule(_sgd(), {**CIFAR, "warmup_steps": None}).per_step


@pytest.mark.filterwarnings("ignore:Detected call of")
def test_counters_round_trip_and_an_earlier_lambdalr_state_loads():
    optimizer = _sgd(0.1)
    schedule = Schedule(optimizer, {"name": "inverse_time", "decay": 0.01})
    for _ in range(7):
        schedule.step_batch()
    again = Schedule(_sgd(0.1), {"name": "inverse_time", "decay": 0.01})
    again.load_state_dict(schedule.state_dict())
    assert again.optimizer.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]
    lambda_lr = torch.optim.lr_scheduler.LambdaLR(_sgd(0.1), lambda e: 0.1 ** (e >= 80))
    for _ in range(81):
        lambda_lr.step()
    old = Schedule(_sgd(0.1), CIFAR)
    old.load_state_dict(lambda_lr.state_dict())
    assert old.epochs_done == 81 and old.optimizer.param_groups[0]["lr"] == pytest.approx(0.01)


@pytest.mark.parametrize("spec", [{"name": "inverse_time"}, {"name": "inverse_time", "decay": -1},
                                  {**CIFAR, "warmup_steps": 2.5}, {"name": "cosine"}])
def test_a_bad_schedule_fails_before_training(spec):
    with pytest.raises(ScheduleError):
        Schedule(_sgd(), spec)


def _lrs(run_dir: Path) -> list[float]:
    return [json.loads(line)["lr"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("switch,expected", [
    # 40 digits in batches of 10: 4 steps an epoch; metrics.jsonl's lr is the one at the
    # epoch's end, after its last step (t = 4, then 8)
    (["++dataset.train.schedule.warmup_steps=6"], [0.01, 0.1]),   # steps 0-5 at lr/10
    (["++dataset.train.schedule.name=inverse_time", "++dataset.train.schedule.decay=0.5"],
     [0.1 / (1 + 0.5 * 4), 0.1 / (1 + 0.5 * 8)]),
])
def test_the_engine_steps_a_per_step_schedule(switch, expected, tmp_path: Path):
    overrides = ["dataset=digits", "model=mlp6", "optim=sgdm", "epochs=2", "batch_size=10",
                 "dataset.limit=40", f"out_dir={tmp_path}", *switch]
    summary = train_in_process(overrides, tmp_path / "run")
    assert summary["status"] == "completed", summary
    assert _lrs(tmp_path / "run") == pytest.approx(expected)
