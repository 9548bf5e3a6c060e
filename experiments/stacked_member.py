"""One seed of a stacked group, as train.run holds a run: its folder and lock, its decision
(skip, resume, train or an error), its files while it trains and its final status, each done by
the engine's own pieces (experiments/train.py, guard.py, record.py) in train.run's order."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from . import distributed, train
from .checkpoint import Progress
from .config import command_line, provenance
from .errors import IdentityMismatch, RunBusy, describe, user_error
from .folder import RunFolder
from .guard import record_code_version, take_lock
from .io import RunLock, remove_orphans
from .loops import Task
from .record import Identity, StoredRun, config_identity, data_identity, decide

KEY = "stack_seeds"


@dataclass
class Member:
    """One seed of the group: its run as train.run would hold it."""

    seed: int
    cfg: DictConfig
    run_dir: Path
    overrides: list[str]
    lock: RunLock
    ctx: train.RunContext | None = None
    identity: Identity | None = None
    stored: StoredRun | None = None
    ours: bool = False                 # the folder holds this config's run
    summary: dict | None = None        # set once the seed is finished (or skipped)
    error: Exception | None = None
    task: Task | None = None
    scheduler: object = None
    progress: Progress | None = None
    generator: torch.Generator | None = None
    clock: object = None
    logger: object = None
    group: list[int] | None = None     # the seeds trained together with it (its provenance)
    dead: frozenset[str] = frozenset()  # the layers its dead-layer warning has named


def member_overrides(overrides: list[str], seed: int, first: int) -> list[str]:
    """A seed's command line: the group's, less `stack_seeds`, with `seed=<seed>` in place (the
    first seed keeps the line as typed, so its stored command is its separate run's)."""
    kept = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != KEY]
    if seed == first:
        return kept
    named = [o.split("=", 1)[0].lstrip("+~") == "seed" for o in kept]
    if not any(named):
        return [*kept, f"seed={seed}"]
    return [f"seed={seed}" if is_seed else o for o, is_seed in zip(kept, named, strict=True)]


def alone(member: Member) -> None:
    """The seed trained as its own run (train.run), in this process."""
    try:
        member.summary = train.run(member.cfg, member.run_dir, member.overrides)
    except Exception as err:
        if user_error(err) is None:
            raise
        member.error = err


def claim(member: Member, data, dist: distributed.Dist, device: torch.device) -> None:
    """train.run's decision for one seed: lock, identity, skip or train (or an error, kept in
    `member.error`; a bug is raised)."""
    folder = RunFolder.locate(member.run_dir, member.cfg)
    member.ctx = train.RunContext(member.cfg, folder, command_line(member.overrides),
                                  command_line(member.overrides, stored=True), dist, device)
    try:
        read_only = take_lock(member.lock, folder.path, dist, device)
        member.identity = Identity(
            config_identity(OmegaConf.to_container(member.cfg, resolve=True)),
            data_identity(data, dist.world_size))
        member.stored = StoredRun.read(folder.path)
        action, done = decide(member.stored, member.identity, member.cfg.epochs,
                              member.ctx.stored_command, member.cfg.retrain)
        action, done, why = train._trust_history(member.stored, action, done)
        member.ours = True
        if read_only is None:
            remove_orphans(folder.path)
        if done is not None:
            member.summary = train._skip(member.ctx, action, done, read_only)
            return
        if read_only is not None:
            raise read_only
        if action == "retrain":
            member.stored.discard()
        if why or action == "retrain":
            print(f"[{action}] {why or 'deleted the earlier run'}: {folder.path}")
    except Exception as err:
        fail(member, err)
        if user_error(err) is None:
            raise


def fail(member: Member, err: Exception) -> None:
    """train.run's failure record for one seed; its error is raised when the group ends."""
    if not isinstance(err, (IdentityMismatch, RunBusy)):
        folder = member.ctx.folder
        failed = train._failed_summary(folder, member.lock, describe(err),
                                       member.ctx.stored_command, member.ours)
        if failed is not None:
            train._finish(folder, failed)
    member.error = err
    member.lock.release()


def start(member: Member, data, commit: str) -> None:
    """Build the seed's task as its run does (its weights after torch.manual_seed(seed)) and
    resume it from its checkpoint; keep the RNG state its run would go on with."""
    member.task, member.scheduler, member.progress = train._start(member.ctx, data,
                                                                  member.stored)
    member.generator = torch.Generator().set_state(torch.get_rng_state())  # its dropout's
    record_code_version(member.progress, member.stored, commit, run_dir=member.ctx.run_dir,
                        policy=member.cfg.get("resume_across_commits", "allow"), main=True)


def start_files(member: Member) -> None:
    """config.yaml, metrics.jsonl, a running summary and the logger, as train._train writes
    them for a separate run; the meta also names the seeds trained together."""
    ctx, cfg, progress = member.ctx, member.cfg, member.progress
    member.clock = train._Clock(progress.wall)
    if progress.started:
        print(f"[resume] epoch {progress.epoch}, batch {progress.state.batch}: {ctx.run_dir}")
    config = train.write_start_files(ctx, member.identity, progress, provenance(ctx.device),
                                     stacked_seeds=member.group)
    running(member, "running")
    member.logger = instantiate(cfg.logger)
    member.logger.start(ctx.run_dir, config, "/".join(ctx.run_dir.parts[-5:]))


def running(member: Member, status: str, message: str = "") -> None:
    """summary.json while the seed trains: `running` or `interrupted`."""
    train._record_progress(member.ctx, member.identity, member.progress, member.clock, status,
                           message)


def end(member: Member, status: str, message: str) -> None:
    """The seed's final status, by train._finish (the one writer of it)."""
    member.logger.finish(status)
    summary = train._summary(member.ctx, member.identity, member.progress, member.clock,
                             status, message)
    member.summary = train._finish(member.ctx.folder, summary,
                                   keep_checkpoint=bool(member.cfg.keep_checkpoint))
    member.lock.release()
