"""One run, start to finish: decide what to do with the folder, train, finish.

The run folder holds everything (docs/DESIGN.md, "Run outputs"). Only rank 0 writes it.
Running the same command again skips a completed run and resumes an interrupted one; a command
of another config stops without touching the folder (experiments/record.py). The lock and the
commit policy live in experiments/guard.py, the folder's two names in experiments/folder.py,
signals in experiments/signals.py, checkpoints in experiments/checkpoint.py.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from . import distributed
from .checkpoint import Progress, load_checkpoint, save_checkpoint
from .config import (
    UNSTORED_OVERRIDES,
    check_config,
    command_line,
    provenance,
    resolve_device,
)
from .errors import ConfigError, Diverged, IdentityMismatch, ResumeError, RunBusy, describe
from .folder import RunFolder
from .guard import record_code_version, take_lock
from .io import (
    RunLock,
    read_json,
    remove_orphans,
    write_json,
    write_jsonl,
    write_status,
    write_text,
)
from .loops import (
    EpochState,
    Task,
    epoch_line,
    epoch_metrics,
    evaluate,
    train_epoch,
    warn_dead_layers,
)
from .optim import build_optimizer
from .record import (
    FINISHED,
    Identity,
    StoredRun,
    best_metrics,
    config_identity,
    data_identity,
    decide,
)
from .schedule import build_schedule
from .signals import StopRequest

__all__ = ["ResumeError", "StopRequest", "run"]


@dataclass(frozen=True)
class RunContext:
    """What stays fixed for one run."""

    cfg: DictConfig
    folder: RunFolder
    command: str             # the command as typed, for the terminal
    stored_command: str      # the command the run files keep (no data_root=, no out_dir=)
    dist: distributed.Dist
    device: torch.device

    @property
    def main(self) -> bool:
        return self.dist.is_main

    @property
    def run_dir(self) -> Path:
        return self.folder.path

    @property
    def checkpoint(self) -> Path:
        return self.run_dir / "checkpoint.pt"


def run(cfg: DictConfig, run_dir: Path, overrides: list[str]) -> dict:
    """Train the run that `cfg` describes in `run_dir`; returns its summary. `overrides` are the
    command line's (the stored command). Decide, then train, then finish, in this order."""
    folder = RunFolder.locate(run_dir, cfg)
    lock, dist = RunLock(folder.path), distributed.Dist()
    ours = False                                      # the folder holds this config's run
    stored_command = command_line(overrides, stored=True)
    try:
        # Decide: is the config sound, the folder free, and whose run does it hold?
        check_config(cfg)
        dist, device = distributed.setup(resolve_device(cfg.device))
        ctx = RunContext(cfg, folder, command_line(overrides), stored_command, dist, device)
        read_only = take_lock(lock, folder.path, dist, device)
        data = _load_data(cfg, device, dist)
        identity = Identity(config_identity(OmegaConf.to_container(cfg, resolve=True)),
                            data_identity(data, dist.world_size))
        stored = StoredRun.read(folder.path)
        distributed.barrier(dist)                     # every rank has read before rank 0 writes
        action, done = decide(stored, identity, cfg.epochs, ctx.stored_command, cfg.retrain)
        action, done, why = _trust_history(stored, action, done)
        ours = True
        if ctx.main and read_only is None:
            remove_orphans(folder.path)      # a killed write's leftovers, in a skipped folder too
        if done is not None:
            return _skip(ctx, action, done, read_only)
        if read_only is not None:                     # this run needs writing, and cannot be
            raise read_only
        if ctx.main and action == "retrain":
            stored.discard()
        if ctx.main and (why or action == "retrain"):
            print(f"[{action}] {why or 'deleted the earlier run'}: {folder.path}")
        distributed.barrier(dist)
        progress, clock, status, message = _train(ctx, data, identity, stored)
        summary = _summary(ctx, identity, progress, clock, status, message)
        if not ctx.main:
            return summary
        return _finish(folder, summary, keep_checkpoint=bool(cfg.keep_checkpoint))
    except Exception as err:
        # A failure is recorded in this config's run, or in a folder with nothing to lose;
        # never in another config's run, nor in one that another process holds.
        if dist.is_main and not isinstance(err, (IdentityMismatch, RunBusy)):
            failed = _failed_summary(folder, lock, describe(err), stored_command, ours)
            if failed is not None:
                _finish(folder, failed)
        raise
    finally:
        lock.release()
        distributed.teardown(dist)


def _trust_history(stored: StoredRun, action: str,
                   done: dict | None) -> tuple[str, dict | None, str]:
    """A finished summary is skipped only when metrics.jsonl holds every epoch it claims. One
    cut short (a truncated copy, a restored backup) is rebuilt from checkpoint.pt when one is
    left, else trained again; the third value says which, for the one line that tells."""
    if action != "skip" or done is None:
        return action, done, ""
    claimed, kept = done.get("epochs_done"), len(stored.history)
    damaged = stored.damaged.get("metrics.jsonl")
    if not damaged and (not isinstance(claimed, int) or kept >= claimed):
        return action, done, ""
    cut = damaged or f"metrics.jsonl holds {kept} of the {claimed} epochs summary.json claims"
    if stored.has_checkpoint:
        return "resume", None, f"{cut}; going on from checkpoint.pt, which holds them"
    return "retrain", None, f"{cut} and no checkpoint.pt holds them; training it from epoch 1"


def _skip(ctx: RunContext, action: str, done: dict, read_only: OSError | None) -> dict:
    """A finished run: say so, and write a rebuilt summary when the folder can be written (a
    read-only folder is only read)."""
    done = {**done, "run_dir": ctx.folder.name}
    if ctx.main and read_only is None and action == "rebuild":
        done = _write_summary(ctx.folder, done)
    if ctx.main:
        note = " (summary.json rebuilt from metrics.jsonl)" if action == "rebuild" else ""
        print(f"[skip] {done['status']} earlier{note}: {ctx.run_dir}  "
              "(delete the folder to rerun)")
    return done


def _load_data(cfg: DictConfig, device: torch.device, dist: distributed.Dist):
    from data import build_dataset  # the data layer imports torchvision: load it only to train

    if cfg.batch_size % dist.world_size:
        raise ConfigError(f"batch_size={cfg.batch_size} is not divisible by the {dist.world_size} "
                          "ranks; the global batch is split evenly. Pick a multiple.")
    data = build_dataset(cfg.dataset, root=cfg.data_root, download=cfg.download, device=device,
                         seed=cfg.seed, rank=dist.rank, world_size=dist.world_size)
    if data.vocab_size is not None:
        OmegaConf.update(cfg, "dataset.vocab_size", int(data.vocab_size))
    return data


def _build_task(cfg: DictConfig, data, device: torch.device, dist: distributed.Dist) -> Task:
    torch.manual_seed(cfg.seed)               # the same initial weights on every rank
    net = instantiate(cfg.model.net).to(device)
    if device.type == "cuda" and cfg.dataset.input.startswith("image"):
        net = net.to(memory_format=torch.channels_last)
    optimizer, plan = build_optimizer(cfg.optim, net)
    model = net
    if dist.enabled:
        model = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[device] if device.type == "cuda" else None)
    if cfg.compile:
        model = torch.compile(model)
    extra_step = []
    if getattr(net, "max_norm", None) is not None:     # Kim's max-norm constraint, when enabled
        extra_step.append(net.apply_max_norm_)
    return Task(model=model, net=net, optimizer=optimizer, plan=plan, data=data,
                kind=cfg.dataset.task, device=device, dist=dist,
                batch_size=cfg.batch_size // dist.world_size, amp=cfg.amp,
                log_every=cfg.log_every, grad_norm_every=cfg.grad_norm_every,
                top5=bool(cfg.dataset.get("top5", False)), extra_step=extra_step)


def _failed_summary(folder: RunFolder, lock: RunLock, message: str, command: str,
                    ours: bool) -> dict | None:
    """The summary that marks the run failed, with the reason; None where it must not be
    written: another process holds the run, it finished, it may be another config's run (`ours`
    is False and the folder holds results), or the folder cannot be written or read."""
    try:
        if not lock.acquire() or not (ours or not StoredRun.read(folder.path).holds_results):
            return None
        previous = read_json(folder.path / "summary.json") or {}
    except OSError:
        return None
    except ValueError:                                   # damaged: left for the next start
        return None
    if previous.get("status") in FINISHED:
        return None
    return {**previous, "status": "failed", "message": folder.portable(message),
            "command": command}


def _start(ctx: RunContext, data, stored: StoredRun) -> tuple[Task, object, Progress]:
    """The task built and, when the folder has a checkpoint, resumed from it. retrain=true
    trains from scratch over a checkpoint that cannot be read (its advice says so)."""
    cfg = ctx.cfg
    task = _build_task(cfg, data, ctx.device, ctx.dist)
    scheduler = build_schedule(task.optimizer, cfg.schedule)
    if scheduler.per_step:                 # a warm-up or inverse-time decay: after every step
        task.extra_step.append(scheduler.step_batch)
    try:
        return task, scheduler, load_checkpoint(ctx.checkpoint, task, scheduler)
    except ResumeError:
        if not cfg.retrain:
            raise
    if ctx.main:
        stored.discard()
        print(f"[retrain] deleted the run whose checkpoint cannot be read in {ctx.run_dir}")
    distributed.barrier(ctx.dist)
    return _start(ctx, data, StoredRun(ctx.run_dir))


def write_start_files(ctx: RunContext, identity: Identity, progress: Progress,
                      meta_provenance: dict, **extra_meta) -> dict:
    """config.yaml (the resolved config with its provenance meta, without this machine's
    paths) and metrics.jsonl as the run starts or resumes; `extra_meta` adds keys to the meta.
    Returns the config written (what the logger records)."""
    cfg = ctx.cfg
    meta = {"dataset": cfg.dataset.name, "model": cfg.model.name, "optim": cfg.optim.name,
            "extra": ctx.run_dir.parent.name, "seed": cfg.seed,
            "command": ctx.stored_command, "identity": identity.stored(),
            **meta_provenance, "commits": progress.commits, **extra_meta}
    config = {**OmegaConf.to_container(cfg, resolve=True), "meta": meta}
    for machine_path in UNSTORED_OVERRIDES:              # this machine's, not the run's
        config.pop(machine_path, None)
    write_text(ctx.run_dir / "config.yaml", OmegaConf.to_yaml(config))
    write_jsonl(ctx.run_dir / "metrics.jsonl", progress.history)
    return config


def _train(ctx: RunContext, data, identity: Identity,
           stored: StoredRun) -> tuple[Progress, _Clock, str, str]:
    """Build, resume and train the run: (its progress, its clock, status, message), where the
    status is "completed" or "diverged"; an interruption or an error leaves by raising."""
    cfg, main = ctx.cfg, ctx.main
    task, scheduler, progress = _start(ctx, data, stored)
    meta_provenance = provenance(ctx.device)
    record_code_version(progress, stored, meta_provenance["git_commit"], run_dir=ctx.run_dir,
                        policy=ctx.cfg.get("resume_across_commits", "allow"), main=main)
    if main and progress.started:
        print(f"[resume] epoch {progress.epoch}, batch {progress.state.batch}: {ctx.run_dir}")
    clock = _Clock(progress.wall)
    logger = None
    if main:
        config = write_start_files(ctx, identity, progress, meta_provenance)
        _record_progress(ctx, identity, progress, clock, "running")
        logger = instantiate(cfg.logger)
        # dataset/model/optim/extra/seed<k>: the same name on resume, so the logger continues it
        logger.start(ctx.run_dir, config, "/".join(ctx.run_dir.parts[-5:]))
    outcome = ("failed", "")                   # what the logger hears if an error escapes
    try:
        _epochs(ctx, task, scheduler, progress, identity, clock, logger)
        outcome = ("completed", "")
    except Diverged as err:
        outcome = ("diverged", str(err))
    except KeyboardInterrupt:
        outcome = ("interrupted", "")
        raise
    finally:
        if logger is not None:
            logger.finish(outcome[0])
    return progress, clock, *outcome


class _Clock:
    """Seconds of training so far: the earlier processes' and this one's."""

    def __init__(self, before: float) -> None:
        self.before, self.started = before, time.time()

    def __call__(self) -> float:
        return self.before + time.time() - self.started


def _summary(ctx: RunContext, identity: Identity, progress: Progress, clock: _Clock,
             status: str, message: str = "") -> dict:
    history = progress.history
    return {"status": status, "epochs_done": len(history), "epochs": ctx.cfg.epochs,
            "final": history[-1] if history else {}, "best": best_metrics(history),
            "wall_seconds": clock(), "command": ctx.stored_command,
            "run_dir": ctx.folder.name, "identity": identity.stored(),
            "commits": progress.commits, "message": message}


def _record_progress(ctx: RunContext, identity: Identity, progress: Progress, clock: _Clock,
                     status: str, message: str = "") -> None:
    """summary.json as the run stands while it trains: `running` or `interrupted`."""
    if ctx.main:
        _write_summary(ctx.folder, _summary(ctx, identity, progress, clock, status, message))


def _write_summary(folder: RunFolder, summary: dict) -> dict:
    """The one writer of summary.json (rank 0): every status, the skip's rebuilt summary
    included, always with `run_dir` relative to out_dir. A final status falls back to rewriting
    the file in place when no temporary file fits (a full disk): a failure must still say so."""
    summary = {**summary, "run_dir": folder.name}
    final = summary["status"] in (*FINISHED, "failed")
    (write_status if final else write_json)(folder.path / "summary.json", summary)
    return summary


def _epochs(ctx: RunContext, task: Task, scheduler, progress: Progress, identity: Identity,
            clock: _Clock, logger) -> None:
    """Train the remaining epochs; Diverged when a loss or metric is no longer finite. A signal
    writes a checkpoint and hands the process over (experiments/signals.py)."""
    cfg, main = ctx.cfg, ctx.main
    dead: frozenset[str] = frozenset()
    with StopRequest() as stop:
        while progress.epoch <= cfg.epochs:
            epoch, state = progress.epoch, progress.state
            progress.commits[-1]["epochs"][1] = epoch      # this commit trains (part of) it
            t0 = time.time() - state.seconds
            if not train_epoch(task, epoch, state, stop, show_progress=main):
                state.seconds = time.time() - t0        # stopped mid-epoch by a signal
                save_checkpoint(ctx.checkpoint, task, scheduler, progress, clock())
                if main:
                    print(f"[interrupted] checkpoint at epoch {epoch}, batch {state.batch}; "
                          f"run the same command to resume: {ctx.command}", flush=True)
                _record_progress(ctx, identity, progress, clock, "interrupted",
                               f"stopped by {stop.names()}")
                stop.hand_over()            # ends the process, unless its handler declines
                _record_progress(ctx, identity, progress, clock, "running")
                continue
            row = {"epoch": epoch, **epoch_metrics(task, state)}
            if not math.isfinite(row["train_loss"]):
                raise Diverged(f"the training loss became {row['train_loss']} in epoch {epoch}")
            row.update(evaluate(task))
            bad = [key for key, value in row.items()
                   if isinstance(value, float) and not math.isfinite(value)]
            if bad:            # weights whose test pass is NaN are as lost as a NaN training loss
                raise Diverged(", ".join(f"the {key} became {row[key]}" for key in bad)
                               + f" in epoch {epoch} (evaluated after training it)")
            seconds = time.time() - t0
            row["lr"] = task.optimizer.param_groups[0]["lr"]
            row["epoch_seconds"] = seconds
            row["samples_per_s"] = task.data.num_train * ctx.dist.world_size / max(seconds, 1e-9)
            if state.norm_sum is not None:
                means = (state.norm_sum / max(state.norm_steps, 1)).tolist()
                row["grad_norms"] = dict(zip(task.plan.names, means, strict=True))
                row["grad_norm_steps"] = state.norm_steps      # how many steps they average
                dead = warn_dead_layers(row, epoch, main, dead,
                                        OmegaConf.select(cfg, "optim.normalize.norm_dtype"))
            progress.history.append(row)
            scheduler.step()
            progress.epoch, progress.state = epoch + 1, EpochState()
            save_checkpoint(ctx.checkpoint, task, scheduler, progress, clock())
            if main:                                # the epoch is on disk before it is shown
                write_jsonl(ctx.run_dir / "metrics.jsonl", progress.history)
                logger.log_epoch(row)
                _record_progress(ctx, identity, progress, clock, "running")
                print(epoch_line(row, cfg.epochs), flush=True)


def _finish(folder: RunFolder, summary: dict, keep_checkpoint: bool = True) -> dict:
    """A run's final status, "completed" or "diverged" when training ends, "failed" when an
    error ends it, written (rank 0) before the checkpoint goes: a crash in between leaves a
    completed summary, never a history with neither. A failure that cannot be written is not
    raised over the error that caused it: its line says it."""
    status, checkpoint = summary["status"], folder.path / "checkpoint.pt"
    try:
        summary = _write_summary(folder, summary)
    except OSError:
        if status != "failed":
            raise
        return summary
    if status == "completed" and not keep_checkpoint:
        checkpoint.unlink(missing_ok=True)
    if status == "diverged":
        kept = f"; the last good checkpoint is kept: {checkpoint}" if checkpoint.exists() else ""
        print(f"[diverged] {summary['message']}{kept}")
    if status != "failed":
        print(f"[{status}] {folder.path}")
    return summary
