"""Stacked seeds: `stack_seeds=K` trains seeds seed, seed+1, ..., seed+K-1 of one config in one
process, and writes each as its own run (docs/DESIGN.md, "Stacked seeds").

Each seed is exactly its separate run: its folder, config, identity and command are the ones
`python run.py ... seed=<k>` gives it; its network is built by the same code after
`torch.manual_seed(k)` (bitwise the same weights), its batches come in its own order, its
blocks are normalized by their own norms and its optimizer state and BatchNorm statistics are
its own (experiments/stacked_model.py, stacked_optim.py). Its checkpoint is the one its
separate run writes, so either can resume the other's. The engine's own pieces decide, skip,
resume and finish each seed (experiments/train.py); this module only trains them together.

A seed already finished is skipped, a seed that cannot join (another config's run, busy) says
why and the others go on, and a seed that diverges is finished as diverged while the others
train on. Where stacking does not apply (the language model, ImageNet, DDP, bf16, compile, an
optimizer that is not elementwise) the seeds train one after another, said in one line.
"""

from __future__ import annotations

import copy
import math
import os
import sys
import time
from collections import Counter
from pathlib import Path

import torch
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf, open_dict

from . import distributed, train
from .checkpoint import save_checkpoint
from .config import check_config, provenance, resolve_device
from .errors import ConfigError, Diverged, describe, user_error
from .io import RunLock, write_jsonl
from .loops import EpochState, epoch_line, warn_dead_layers
from .schedule import build_schedule
from .signals import StopRequest
from .stacked_loop import (
    StackedSums,
    StackedTask,
    epoch_metrics,
    evaluate,
    finite,
    stack_tasks,
    train_epoch,
)
from .stacked_member import (
    KEY,
    Member,
    alone,
    claim,
    end,
    fail,
    member_overrides,
    running,
    start,
    start_files,
)
from .stacked_memory import check_fits
from .stacked_optim import ELEMENTWISE, member_state


def fallback_reason(cfg: DictConfig) -> str | None:
    """Why this config's seeds cannot be stacked, or None."""
    if cfg.dataset.task != "classification":
        return "the language model is not stacked"
    if cfg.dataset.name == "imagenet":
        return "the ImageNet ResNet is not stacked"
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return "stacked seeds do not run under torchrun"
    if cfg.amp != "off" or cfg.compile:
        return "stacked seeds run in exact fp32 without torch.compile"
    target = get_object(str(cfg.optim._target_))
    if target not in ELEMENTWISE:
        return f"{target.__name__} does not step elementwise"
    return None


def check_sweep(argv: list[str], size: int) -> None:
    """ConfigError when the command line sweeps seeds closer than `size` apart: `seed=k` with
    `stack_seeds=K` trains seeds k..k+K-1, so seed=1,2,...,10 would train 1..19."""
    for arg in argv:
        key, _, value = arg.partition("=")
        if key.lstrip("+") != "seed" or "," not in value:
            continue
        try:
            seeds = sorted(int(v) for v in value.split(","))
        except ValueError:
            continue                          # a sweep function (range(...)): left to Hydra
        if any(b - a < size for a, b in zip(seeds, seeds[1:], strict=False)):
            firsts = ",".join(str(seeds[0] + size * i) for i in range(-(-len(seeds) // size)))
            raise ConfigError(
                f"seed={value} with {KEY}={size}: each job trains seeds seed..seed+{size - 1}, "
                f"so these groups overlap. Give each group's first seed: seed={firsts}.")


def run_group(cfg: DictConfig, run_dir: Path, overrides: list[str]) -> dict:
    """Train the group whose first seed is `cfg.seed` (its folder: `run_dir`); returns the first
    seed's summary. A seed's error is raised after the others have trained."""
    size, first = int(cfg[KEY]), int(cfg.seed)
    if size < 1:
        raise ConfigError(f"{KEY}={size}: the number of seeds to train together, >= 1")
    check_sweep(sys.argv[1:], size)
    members = []
    for seed in range(first, first + size):
        member_cfg = copy.deepcopy(cfg)
        with open_dict(member_cfg):
            member_cfg.seed, member_cfg[KEY] = seed, 1      # each seed's config is its run's
        folder = run_dir if seed == first else run_dir.parent / f"seed{seed}"
        members.append(Member(seed, member_cfg, folder,
                              member_overrides(overrides, seed, first), RunLock(folder)))
    reason = fallback_reason(cfg)
    if reason is not None or size == 1:
        if size > 1:
            print(f"[stack] {reason}: its {size} seeds train one after another", flush=True)
        for member in members:
            alone(member)
    else:
        _stacked(cfg, members)
    failed = [m.error for m in members if m.error is not None]
    for error in failed[1:]:
        print(f"error: {describe(error)}", flush=True)
    if failed:
        raise failed[0]
    return members[0].summary


def _stacked(cfg: DictConfig, members: list[Member]) -> None:
    check_config(cfg)
    dist, device = distributed.setup(resolve_device(cfg.device))
    try:
        data = train._load_data(cfg, device, dist)
        batch = next(iter(data.train_batches(1, int(cfg.batch_size))))[0]
        check_fits(cfg, len(members), batch, device)
        for member in members:
            with open_dict(member.cfg):
                member.cfg.dataset.vocab_size = cfg.dataset.vocab_size
            claim(member, data, dist, device)
        waiting = [m for m in members if m.summary is None and m.error is None]
        if len(waiting) == 1:
            waiting[0].lock.release()
            alone(waiting[0])
        elif waiting:
            _train_group(cfg, waiting, data)
    finally:
        for member in members:
            member.lock.release()
        distributed.teardown(dist)


def _train_group(cfg: DictConfig, members: list[Member], data) -> None:
    """Build and resume each seed as its run does, stack those at one point, train them."""
    commit = provenance(members[0].ctx.device)["git_commit"]
    for member in list(members):
        member_data = copy.copy(data)            # the same tensors, this seed's batch order
        member_data.seed = member.seed
        try:
            start(member, member_data, commit)
        except Exception as err:
            fail(member, err)
            if user_error(err) is None:
                raise
            members.remove(member)
    if not members:
        return
    where = Counter((m.progress.epoch, m.progress.state.batch) for m in members)
    point = where.most_common(1)[0][0]
    apart = [m for m in members if (m.progress.epoch, m.progress.state.batch) != point]
    group = [m for m in members if m not in apart]
    if len(group) < 2:
        group, apart = [], members
    for member in group:
        member.group = [m.seed for m in group]
    try:
        if group:
            _train_stacked(cfg, group)
    except Exception as err:
        for member in group:
            if member.summary is None:
                fail(member, err)
        if user_error(err) is None:
            raise
        return
    for member in apart:
        if group:
            print(f"[stack] seed {member.seed} stands at epoch {member.progress.epoch}, batch "
                  f"{member.progress.state.batch}, apart from the group: it trains on its own",
                  flush=True)
        member.lock.release()
        alone(member)


def _train_stacked(cfg: DictConfig, group: list[Member]) -> None:
    task, scheduler = _build(cfg, group)
    for member in group:
        start_files(member)
    print(f"[stack] seeds {', '.join(str(m.seed) for m in group)} train together", flush=True)
    alive = list(range(len(group)))          # the rows of the seeds still training
    with StopRequest() as stop:
        while alive and group[alive[0]].progress.epoch <= cfg.epochs:
            if not _epoch(cfg, group, alive, task, scheduler, stop):
                _save(group, alive, task, scheduler)
                first = group[alive[0]]
                print(f"[interrupted] checkpoints at epoch {first.progress.epoch}, batch "
                      f"{first.progress.state.batch}; run the same command to resume",
                      flush=True)
                for row in alive:
                    running(group[row], "interrupted", f"stopped by {stop.names()}")
                stop.hand_over()
                for row in alive:
                    running(group[row], "running")
    for row in alive:
        end(group[row], "completed", "")


def _build(cfg: DictConfig, group: list[Member]) -> tuple[StackedTask, object]:
    """The stacked task and schedule, from the seeds' own (resumed) ones."""
    task = stack_tasks([m.task for m in group], [m.generator for m in group])
    scheduler = build_schedule(task.optimizer, cfg.schedule)
    scheduler.load_state_dict(group[0].scheduler.state_dict())
    if scheduler.per_step:                # a warm-up or inverse-time decay: after every step
        task.extra_step.append(scheduler.step_batch)
    return task, scheduler


def _epoch(cfg: DictConfig, group: list[Member], alive: list[int], task: StackedTask,
           scheduler, stop: StopRequest) -> bool:
    """One epoch of every live seed; False when a signal stopped it. A seed whose loss or test
    metric is no longer finite ends as diverged (the message its separate run writes)."""
    first = group[alive[0]]
    epoch = first.progress.epoch
    sums = StackedSums.gather([m.progress.state for m in group], task.device)
    t0 = time.time() - first.progress.state.seconds
    for row in alive:
        group[row].progress.commits[-1]["epochs"][1] = epoch

    def check(losses: list[float]) -> None:
        for row in list(alive):
            if not math.isfinite(losses[row]):
                _diverge(group, alive, row, f"the training loss became {losses[row]} at epoch "
                         f"{epoch}, batch {sums.batch}")

    done = train_epoch(task, epoch, sums, stop, check)
    sums.scatter([m.progress.state for m in group], list(range(len(group))))
    if not done:
        for row in alive:
            group[row].progress.state.seconds = time.time() - t0
        return not alive
    if not alive:
        return True
    trained, tested = epoch_metrics(sums), evaluate(task)
    seconds = time.time() - t0
    for row in list(alive):
        values = {"epoch": epoch, **trained[row]}
        if finite({"train_loss": values["train_loss"]}):
            _diverge(group, alive, row, f"the training loss became {values['train_loss']} in "
                     f"epoch {epoch}")
            continue
        values.update(tested[row])
        bad = finite(values)
        if bad:
            _diverge(group, alive, row, ", ".join(f"the {key} became {values[key]}"
                                                  for key in bad)
                     + f" in epoch {epoch} (evaluated after training it)")
            continue
        _record(group[row], values, row, sums, task, seconds)
    scheduler.step()
    for row in alive:
        group[row].progress.epoch, group[row].progress.state = epoch + 1, EpochState()
    _save(group, alive, task, scheduler)
    for row in alive:
        member = group[row]
        write_jsonl(member.run_dir / "metrics.jsonl", member.progress.history)
        member.logger.log_epoch(member.progress.history[-1])
        running(member, "running")
        print(f"seed {member.seed}  " + epoch_line(member.progress.history[-1], cfg.epochs),
              flush=True)
    return True


def _record(member: Member, row: dict, index: int, sums: StackedSums, task: StackedTask,
            seconds: float) -> None:
    """The epoch's metrics row, as train._epochs writes it."""
    row["lr"] = task.optimizer.param_groups[0]["lr"]
    row["epoch_seconds"] = seconds
    row["samples_per_s"] = task.datasets[0].num_train / max(seconds, 1e-9)
    if sums.norm_sum is not None:
        means = (sums.norm_sum[index] / max(sums.norm_steps, 1)).tolist()
        row["grad_norms"] = dict(zip(task.plan.names, means, strict=True))
        row["grad_norm_steps"] = sums.norm_steps
        member.dead = warn_dead_layers(row, row["epoch"], True, member.dead, OmegaConf.select(
            member.cfg, "optim.normalize.norm_dtype"), prefix=f"seed {member.seed}: ")
    member.progress.history.append(row)


def _diverge(group: list[Member], alive: list[int], row: int, message: str) -> None:
    """Seed `row` diverged: finish it as its run would (its last good checkpoint kept) and
    train on without it; its slice of the stack is no longer read."""
    alive.remove(row)
    end(group[row], "diverged", str(Diverged(message)))


def _save(group: list[Member], alive: list[int], task: StackedTask, scheduler) -> None:
    """Each live seed's checkpoint.pt, written by the engine's save_checkpoint from the seed's
    own net, optimizer, schedule and generator: the file its separate run writes."""
    stacked_state = task.optimizer.state_dict()
    for row in alive:
        member = group[row]
        task.net.unstack_into(row)
        member.task.optimizer.load_state_dict(member_state(stacked_state, row))
        member.scheduler.load_state_dict(scheduler.state_dict())
        torch.set_rng_state(member.generator.get_state())
        save_checkpoint(member.ctx.checkpoint, member.task, member.scheduler, member.progress,
                        member.clock())
