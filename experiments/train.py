"""One run, start to finish: check, build, resume, train epoch by epoch, record.

The run folder holds everything (docs/DESIGN.md, "Run outputs"). Only rank 0 writes it.
Running the same command again skips a completed run and resumes an interrupted one.
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

import bng

from . import distributed
from .config import ConfigError, check_config, command_line, provenance, resolve_device
from .io import RunLock, read_json, save_torch, write_json, write_jsonl, write_text
from .loops import Diverged, EpochState, Task, epoch_metrics, evaluate, train_epoch
from .optim import build_optimizer
from .schedule import build_schedule

MAXIMIZE = ("test_acc", "test_top1", "test_top5")
MINIMIZE = ("test_loss", "test_ppl")


class ResumeError(RuntimeError):
    """The run folder's checkpoint cannot be loaded; the message says how to go on."""


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


def _best(history: list[dict]) -> dict:
    best = {}
    for key in MAXIMIZE + MINIMIZE:
        values = [row[key] for row in history if key in row and math.isfinite(row[key])]
        if values:
            best[key] = max(values) if key in MAXIMIZE else min(values)
    return best


def _build_task(cfg: DictConfig, device: torch.device, dist: distributed.Dist) -> Task:
    from data import build_dataset  # the data layer imports torchvision: load it only to train

    if cfg.batch_size % dist.world_size:
        raise ConfigError(f"batch_size={cfg.batch_size} is not divisible by the {dist.world_size} "
                         "ranks; the global batch is split evenly. Pick a multiple.")
    data = build_dataset(cfg.dataset, root=cfg.data_root, download=cfg.download, device=device,
                         seed=cfg.seed, rank=dist.rank, world_size=dist.world_size)
    if data.vocab_size is not None:
        OmegaConf.update(cfg, "dataset.vocab_size", int(data.vocab_size))
    torch.manual_seed(cfg.seed)               # the same initial weights on every rank
    net = instantiate(cfg.model.net).to(device)
    if device.type == "cuda" and cfg.dataset.input.startswith("image"):
        net = net.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg.optim, net)
    model = net
    if dist.enabled:
        model = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[device] if device.type == "cuda" else None)
    if cfg.compile:
        model = torch.compile(model)
    extra_step = []
    if getattr(net, "max_norm", None) is not None:     # Kim's max-norm constraint, when enabled
        extra_step.append(net.apply_max_norm_)
    return Task(model=model, net=net, optimizer=optimizer, data=data, kind=cfg.dataset.task,
                device=device, dist=dist, batch_size=cfg.batch_size // dist.world_size,
                amp=cfg.amp, log_every=cfg.log_every, top5=bool(cfg.dataset.get("top5", False)),
                extra_step=extra_step)


def _rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def _checkpoint(task: Task, scheduler, epoch: int, state: EpochState, history: list[dict],
                wall: float) -> dict:
    return {
        "epoch": epoch, "epoch_state": state.to_dict(), "history": history, "wall": wall,
        "model": task.net.state_dict(), "optimizer": task.optimizer.state_dict(),
        "scheduler": scheduler.state_dict(), "rng": _rng_state(task.device),
    }


def run(cfg: DictConfig) -> dict:
    """Train the run the config describes; returns its summary."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    command = command_line(list(hydra_cfg.overrides.task))
    check_config(cfg)
    device = resolve_device(cfg.device)
    dist, device = distributed.setup(device)
    summary_path = run_dir / "summary.json"

    lock = RunLock(run_dir)
    try:
        if (done := _finished_earlier(summary_path, dist)) is not None:
            return done
        if distributed.any_rank(dist, dist.is_main and not lock.acquire(), device):
            if dist.is_main:
                print(f"[skip] another process is training this run right now: {run_dir}")
            return read_json(summary_path) or {}
        # Read again under the lock: the process that held it may have finished the run.
        if (done := _finished_earlier(summary_path, dist)) is not None:
            return done
        return _train(cfg, run_dir, command, device, dist)
    finally:
        lock.release()
        distributed.teardown(dist)


def _finished_earlier(summary_path: Path, dist: distributed.Dist) -> dict | None:
    """The summary of a run that completed or diverged before; None if it is still to do."""
    previous = read_json(summary_path) or {}
    if previous.get("status") not in ("completed", "diverged"):
        return None
    if dist.is_main:
        print(f"[skip] {previous['status']} earlier: {summary_path.parent}  "
              "(delete the folder to rerun)")
    return previous


def _train(cfg: DictConfig, run_dir: Path, command: str, device: torch.device,
           dist: distributed.Dist) -> dict:
    main = dist.is_main
    summary_path, ckpt_path = run_dir / "summary.json", run_dir / "checkpoint.pt"
    task = _build_task(cfg, device, dist)
    scheduler = build_schedule(task.optimizer, cfg.schedule)
    epoch, state, history, wall_before = 1, EpochState(), [], 0.0
    if ckpt_path.exists():
        try:
            ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
            task.net.load_state_dict(ckpt["model"])
            task.optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
        except Exception as err:   # truncated file, or a checkpoint of another config
            raise ResumeError(
                f"cannot resume from {ckpt_path}: {type(err).__name__}: {str(err)[:300]}. "
                "It was written by a different config or code version, or is damaged. Delete "
                "it to restart this run from epoch 1, or move the run folder away.") from err
        _set_rng_state(ckpt["rng"], device)
        epoch, history, wall_before = ckpt["epoch"], ckpt["history"], ckpt["wall"]
        state = EpochState(**ckpt["epoch_state"])
        if main:
            print(f"[resume] epoch {epoch}, batch {state.batch}: {run_dir}")

    meta = {"dataset": cfg.dataset.name, "model": cfg.model.name, "optim": cfg.optim.name,
            "extra": run_dir.parent.name, "seed": cfg.seed, "command": command,
            **provenance(device)}
    logger = None
    if main:
        resolved = OmegaConf.to_container(cfg, resolve=True)
        write_text(run_dir / "config.yaml", OmegaConf.to_yaml({**resolved, "meta": meta}))
        write_jsonl(run_dir / "metrics.jsonl", history)
        logger = instantiate(cfg.logger)
        # dataset/model/optim/extra/seed<k>: the same name on resume, so the logger continues it
        logger.start(run_dir, {**resolved, "meta": meta}, "/".join(run_dir.parts[-5:]))

    started = time.time()

    def summary(status: str, message: str = "") -> dict:
        out = {"status": status, "epochs_done": len(history), "epochs": cfg.epochs,
               "final": history[-1] if history else {}, "best": _best(history),
               "wall_seconds": wall_before + time.time() - started, "command": command,
               "run_dir": str(run_dir), "message": message}
        if main:
            write_json(summary_path, out)
        return out

    summary("running")
    status = "failed"
    try:
        with StopRequest() as stop:
            while epoch <= cfg.epochs:
                t0 = time.time() - state.seconds
                finished = train_epoch(task, epoch, state, stop, show_progress=main)
                if not finished:
                    state.seconds = time.time() - t0
                    if main:
                        save_torch(ckpt_path, _checkpoint(task, scheduler, epoch, state, history,
                                                          wall_before + time.time() - started))
                        print(f"[interrupted] checkpoint at epoch {epoch}, batch {state.batch}; "
                              f"run the same command to resume: {command}")
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
                    names = bng.block_names(task.optimizer)
                    means = (state.norm_sum / max(state.steps, 1)).tolist()
                    row["grad_norms"] = dict(zip(names, means, strict=True))
                    dead = [name for name, mean in row["grad_norms"].items() if mean == 0.0]
                    if dead and main:
                        print(f"[warning] epoch {epoch}: zero gradient in every step for "
                              f"{', '.join(dead)}; these weights did not move (a dead or unused "
                              "layer). Normalization leaves zero gradients at zero. If the "
                              "gradient is tiny rather than zero (entries below ~1e-19 square "
                              "to 0 in float32), ++optim.norm_dtype=float64 keeps it "
                              "normalized.", flush=True)
                history.append(row)
                scheduler.step()
                epoch, state = epoch + 1, EpochState()
                if main:
                    save_torch(ckpt_path, _checkpoint(task, scheduler, epoch, state, history,
                                                      wall_before + time.time() - started))
                    write_jsonl(run_dir / "metrics.jsonl", history)
                    logger.log_epoch(row)
                    summary("running")
                    print(_epoch_line(row, cfg.epochs), flush=True)
        status = "completed"
        if main and not cfg.keep_checkpoint:
            ckpt_path.unlink(missing_ok=True)
        return summary("completed")
    except Diverged as err:
        status = "diverged"
        if main:
            kept = f"; the last good checkpoint is kept: {ckpt_path}" if ckpt_path.exists() else ""
            print(f"[diverged] {err}{kept}")
        return summary("diverged", str(err))
    except BaseException as err:
        if status != "interrupted":
            summary("failed", f"{type(err).__name__}: {err}")
        raise
    finally:
        if logger is not None:
            logger.finish(status)
        if main and status in ("completed", "diverged"):
            print(f"[{status}] {run_dir}")


def _epoch_line(row: dict, epochs: int) -> str:
    parts = [f"epoch {row['epoch']:>3}/{epochs}", f"train_loss {row['train_loss']:.4f}",
             f"test_loss {row['test_loss']:.4f}"]
    for key in ("test_acc", "test_top5", "test_ppl"):
        if key in row:
            parts.append(f"{key} {row[key]:.4f}")
    parts += [f"lr {row['lr']:.3g}", f"{row['samples_per_s']:.0f} samples/s",
              f"{row['epoch_seconds']:.1f}s"]
    return "  ".join(parts)
