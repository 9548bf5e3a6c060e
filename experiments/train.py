"""One run, start to finish: check, lock, load the data, match the folder, train, record.

The run folder holds everything (docs/DESIGN.md, "Run outputs"). Only rank 0 writes it.
Running the same command again skips a completed run and resumes an interrupted one; a command
of another config stops without touching the folder (experiments/record.py).
"""

from __future__ import annotations

import math
import signal
import threading
import time
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from . import distributed
from .config import check_config, command_line, provenance, resolve_device
from .errors import ConfigError, IdentityMismatch, ResumeError, RunBusy, describe
from .io import (
    RunLock,
    read_json,
    remove_orphans,
    save_torch,
    write_json,
    write_jsonl,
    write_status,
    write_text,
)
from .loops import Diverged, EpochState, Task, epoch_metrics, evaluate, train_epoch
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

__all__ = ["ResumeError", "StopRequest", "run"]


class StopRequest:
    """Turns SIGTERM/SIGUSR2/SIGINT into a flag the loop checks between steps.

    After the checkpoint is written, `hand_over` restores the previous handlers and raises the
    signals again, so submitit's own handler requeues the job, or the process ends as it would
    have. Every signal that arrived is kept, in order: Python runs the handlers of signals that
    are pending together in signal-number order, so TERM (15) and USR2 (12) sent back to back
    (submitit's own preemption) may both be seen before the loop looks, and the USR2 that
    requeues must not be lost behind the TERM that submitit ignores.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGUSR2, signal.SIGINT)

    def __init__(self) -> None:
        self.received: list[int] = []
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if signum not in self.received:
            self.received.append(signum)

    def __call__(self) -> bool:
        return bool(self.received)

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def hand_over(self) -> None:
        """Re-raise the signals to the previous handlers, which normally end the process.

        If they all return instead (submitit's SIGTERM handler waits for the USR2 that
        follows; SIG_IGN), the signals were not meant to end the process: training goes on,
        watching for the next one.
        """
        received, self.received = self.received, []
        self.__exit__()
        for signum in received:
            signal.raise_signal(signum)
        self.__enter__()


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


def _rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device).cpu()
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def _to(value, device):
    """Tensors (and tuples of them, the LSTM state) moved to `device`; anything else as is."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, tuple):
        return tuple(_to(v, device) for v in value)
    return value


def _save_checkpoint(path: Path, task: Task, scheduler, epoch: int, state: EpochState,
                     history: list[dict], wall: float) -> None:
    """Every rank's running sums, LSTM state and RNG go to rank 0, which writes the file."""
    mine = {"epoch_state": {k: _to(v, "cpu") for k, v in state.to_dict().items()},
            "rng": _rng_state(task.device)}
    ranks = distributed.gather_objects(task.dist, mine)
    if task.dist.is_main:
        save_torch(path, {
            "epoch": epoch, "ranks": ranks, "history": history, "wall": wall,
            "model": task.net.state_dict(), "optimizer": task.optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
        })


def _resume(path: Path, task: Task, scheduler) -> tuple[int, EpochState, list[dict], float]:
    """(epoch, this rank's epoch state, history, wall seconds so far) from the checkpoint."""
    if not path.exists():
        return 1, EpochState(), [], 0.0
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        task.net.load_state_dict(ckpt["model"])
        task.optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
    except Exception as err:   # truncated file, or a checkpoint of another code version
        raise ResumeError(
            f"cannot resume from {path}: {type(err).__name__}: {str(err)[:300]}. "
            "It was written by a different code version, or is damaged. Delete "
            "it to restart this run from epoch 1, or move the run folder away.") from err
    # One entry per rank; a checkpoint of an older version holds rank 0's only.
    ranks = ckpt.get("ranks") or [{"epoch_state": ckpt["epoch_state"], "rng": ckpt["rng"]}]
    world_size = task.dist.world_size
    if len(ranks) != world_size and ranks[0]["epoch_state"]["batch"] > 0:
        raise ResumeError(
            f"{path} was written in the middle of an epoch by {len(ranks)} process(es); resume "
            f"it with {len(ranks)} (this run has {world_size}): each keeps its own running "
            "sums. An end-of-epoch checkpoint resumes with any number.")
    mine = ranks[task.dist.rank] if len(ranks) == world_size else ranks[0]
    _set_rng_state(mine["rng"], task.device)
    state = EpochState.from_dict({k: _to(v, task.device) for k, v in mine["epoch_state"].items()})
    return ckpt["epoch"], state, ckpt["history"], ckpt["wall"]


def run(cfg: DictConfig) -> dict:
    """Train the run the config describes; returns its summary."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    command = command_line(list(hydra_cfg.overrides.task))
    lock, dist = RunLock(run_dir), distributed.Dist()
    ours = False                                      # the folder holds this config's run
    try:
        check_config(cfg)
        dist, device = distributed.setup(resolve_device(cfg.device))
        if distributed.any_rank(dist, dist.is_main and not lock.acquire(), device):
            raise RunBusy(f"another process is training this run right now: {run_dir}. "
                          "Nothing was done; run the command again once it has finished.")
        data = _load_data(cfg, device, dist)
        identity = Identity(config_identity(OmegaConf.to_container(cfg, resolve=True)),
                            data_identity(data, dist.world_size))
        stored = StoredRun.read(run_dir)
        distributed.barrier(dist)                     # every rank has read before rank 0 writes
        action, done = decide(stored, identity, cfg.epochs, command, cfg.retrain)
        ours = True
        if dist.is_main and action == "retrain":
            stored.discard()
            print(f"[retrain] deleted the earlier run in {run_dir}")
        if dist.is_main and action == "rebuild":
            write_json(run_dir / "summary.json", done)
        if done is not None:
            if dist.is_main:
                note = " (summary.json rebuilt from metrics.jsonl)" if action == "rebuild" else ""
                print(f"[skip] {done['status']} earlier{note}: {run_dir}  "
                      "(delete the folder to rerun)")
            return done
        if dist.is_main:
            remove_orphans(run_dir)
        distributed.barrier(dist)
        return _train(cfg, run_dir, command, data, identity, device, dist)
    except Exception as err:
        # A failure is recorded in this config's run, or in a folder with nothing to lose;
        # never in another config's run, nor in one that another process holds.
        if dist.is_main and not isinstance(err, (IdentityMismatch, RunBusy)):
            _record_failure(run_dir, lock, describe(err), command, ours)
        raise
    finally:
        lock.release()
        distributed.teardown(dist)


def _record_failure(run_dir: Path, lock: RunLock, message: str, command: str, ours: bool) -> None:
    """Mark the run failed, with the reason, unless another process holds it, it finished, or
    it may be another config's run (`ours` is False and the folder holds results)."""
    if not lock.acquire() or not (ours or not StoredRun.read(run_dir).holds_results):
        return
    summary_path = run_dir / "summary.json"
    try:
        previous = read_json(summary_path) or {}
    except ValueError:                                   # damaged: left for the next start
        return
    if previous.get("status") in FINISHED:
        return
    try:
        write_status(summary_path, {**previous, "status": "failed", "message": message,
                                    "command": command, "run_dir": str(run_dir)})
    except OSError:
        pass                                             # the printed line still says it


def _train(cfg: DictConfig, run_dir: Path, command: str, data, identity: Identity,
           device: torch.device, dist: distributed.Dist) -> dict:
    main = dist.is_main
    ckpt_path = run_dir / "checkpoint.pt"
    task = _build_task(cfg, data, device, dist)
    scheduler = build_schedule(task.optimizer, cfg.schedule)
    epoch, state, history, wall_before = _resume(ckpt_path, task, scheduler)
    if main and (history or state.batch):
        print(f"[resume] epoch {epoch}, batch {state.batch}: {run_dir}")
    started = time.time()

    def summary(status: str, message: str = "") -> dict:
        out = {"status": status, "epochs_done": len(history), "epochs": cfg.epochs,
               "final": history[-1] if history else {}, "best": best_metrics(history),
               "wall_seconds": wall_before + time.time() - started, "command": command,
               "run_dir": str(run_dir), "identity": identity.stored(), "message": message}
        if main:
            write_json(run_dir / "summary.json", out)
        return out

    def checkpoint() -> None:
        _save_checkpoint(ckpt_path, task, scheduler, epoch, state, history,
                         wall_before + time.time() - started)

    logger = None
    if main:
        meta = {"dataset": cfg.dataset.name, "model": cfg.model.name, "optim": cfg.optim.name,
                "extra": run_dir.parent.name, "seed": cfg.seed, "command": command,
                "identity": identity.stored(), **provenance(device)}
        config = {**OmegaConf.to_container(cfg, resolve=True), "meta": meta}
        write_text(run_dir / "config.yaml", OmegaConf.to_yaml(config))
        write_jsonl(run_dir / "metrics.jsonl", history)
        summary("running")
        logger = instantiate(cfg.logger)
        # dataset/model/optim/extra/seed<k>: the same name on resume, so the logger continues it
        logger.start(run_dir, config, "/".join(run_dir.parts[-5:]))

    status, message = "failed", ""             # what the logger hears if an error escapes
    try:
        with StopRequest() as stop:
            while epoch <= cfg.epochs:
                t0 = time.time() - state.seconds
                if not train_epoch(task, epoch, state, stop, show_progress=main):
                    state.seconds = time.time() - t0        # stopped mid-epoch by a signal
                    checkpoint()
                    if main:
                        print(f"[interrupted] checkpoint at epoch {epoch}, batch {state.batch}; "
                              f"run the same command to resume: {command}", flush=True)
                    status = "interrupted"
                    names = ", ".join(signal.Signals(n).name for n in stop.received)
                    summary("interrupted", f"stopped by {names}")
                    stop.hand_over()            # ends the process, unless its handler declines
                    status = "failed"
                    summary("running")
                    continue
                row = {"epoch": epoch, **epoch_metrics(task, state)}
                if not math.isfinite(row["train_loss"]):
                    raise Diverged(f"the training loss became {row['train_loss']} in epoch {epoch}")
                row.update(evaluate(task))
                seconds = time.time() - t0
                row["lr"] = task.optimizer.param_groups[0]["lr"]
                row["epoch_seconds"] = seconds
                row["samples_per_s"] = task.data.num_train * dist.world_size / max(seconds, 1e-9)
                if state.norm_sum is not None:
                    means = (state.norm_sum / max(state.norm_steps, 1)).tolist()
                    row["grad_norms"] = dict(zip(task.plan.names, means, strict=True))
                    row["grad_norm_steps"] = state.norm_steps      # how many steps they average
                    _warn_dead_layers(row, epoch, main)
                history.append(row)
                scheduler.step()
                epoch, state = epoch + 1, EpochState()
                checkpoint()                        # the epoch is on disk before it is shown
                if main:
                    write_jsonl(run_dir / "metrics.jsonl", history)
                    logger.log_epoch(row)
                    summary("running")
                    print(_epoch_line(row, cfg.epochs), flush=True)
        status = "completed"
    except Diverged as err:
        status, message = "diverged", str(err)
    finally:
        if logger is not None:
            logger.finish(status)
    # The one place a run's final status is set. The summary is written before the checkpoint
    # goes: a crash in between leaves a completed summary, never a history with neither.
    result = summary(status, message)
    if main:
        if status == "completed" and not cfg.keep_checkpoint:
            ckpt_path.unlink(missing_ok=True)
        if status == "diverged":
            kept = f"; the last good checkpoint is kept: {ckpt_path}" if ckpt_path.exists() else ""
            print(f"[diverged] {message}{kept}")
        print(f"[{status}] {run_dir}")
    return result


def _warn_dead_layers(row: dict, epoch: int, main: bool) -> None:
    dead = [name for name, mean in row["grad_norms"].items() if mean == 0.0]
    if dead and main:
        print(f"[warning] epoch {epoch}: zero gradient in every sampled step for {', '.join(dead)}; "
              "a dead or unused layer, whose weights then do not move. Normalization leaves zero "
              "gradients at zero. If the gradient is tiny rather than zero (entries below "
              "~1e-19 square to 0 in float32), ++optim.norm_dtype=float64 keeps it normalized.",
              flush=True)


def _epoch_line(row: dict, epochs: int) -> str:
    parts = [f"epoch {row['epoch']:>3}/{epochs}", f"train_loss {row['train_loss']:.4f}",
             f"test_loss {row['test_loss']:.4f}"]
    for key in ("test_acc", "test_top5", "test_ppl"):
        if key in row:
            parts.append(f"{key} {row[key]:.4f}")
    parts += [f"lr {row['lr']:.3g}", f"{row['samples_per_s']:.0f} samples/s",
              f"{row['epoch_seconds']:.1f}s"]
    return "  ".join(parts)
