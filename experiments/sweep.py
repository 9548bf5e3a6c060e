"""How a run or a sweep cell ends: one line and an exit code per error, and the sweep's report.

A single run exits with the code of experiments/errors.py. In a sweep, a cell that fails is
marked `failed` in its summary.json (experiments/train.py), its one line is printed, and the
sweep goes on; at the end `SweepReport` lists the failed cells and the sweep exits non-zero.

Hydra's launcher catches a cell's Exception (and records it as a failed job) but not
SystemExit, which would end the whole sweep; so a cell never calls sys.exit, except for Ctrl-C,
which is meant to end the sweep. Cells that run in other processes (the Slurm launcher) raise
`CellFailed` instead of returning: Hydra reports the first of them when all cells are done.
"""

from __future__ import annotations

import os
import secrets
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from .errors import (
    EXIT_BUSY,
    EXIT_CRASH,
    EXIT_INTERRUPT,
    EXIT_USER,
    CellFailed,
    describe_os_error,
    user_error,
)
from .guard import READ_ONLY

_REPORT: SweepReport | None = None   # set in the sweeping process, while its cells run here


def run_cell(run: Callable[[DictConfig, Path, list[str]], dict], cfg: DictConfig) -> dict:
    """`run(cfg, run_dir, overrides)` for one run or one sweep cell, with the folder and the
    command line's overrides that Hydra chose, turning its errors into lines and exit codes."""
    hydra_cfg = HydraConfig.get()
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    note_cpu_share(str(cfg.device))
    try:
        return run(cfg, Path(hydra_cfg.runtime.output_dir), list(hydra_cfg.overrides.task))
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPT)
    except Exception as err:
        known = user_error(err)
        if known is None and not in_sweep:
            raise                            # a bug: the traceback is what helps
        if known is None:
            traceback.print_exc()
        code, message = known or (EXIT_CRASH, f"{type(err).__name__}: {err}")
        said = _REPORT is not None and message in _REPORT.said     # the sweep said it already
        if os.environ.get("RANK", "0") == "0" and not said:  # under torchrun, one line, not one a rank
            print(f"error: {message}", file=sys.stderr, flush=True)
        if _REPORT is not None:
            _REPORT.said.add(message)
        if not in_sweep:
            sys.exit(code)
        if _REPORT is None:
            raise CellFailed(f"a sweep cell failed: {message}") from err
        return {"status": "failed" if code != EXIT_BUSY else "busy", "exit_code": code,
                "message": message, "run_dir": hydra_cfg.runtime.output_dir}


def check_writable(folder: Path) -> None:
    """Exit 2 with one line when `folder` cannot be created or written (before Hydra tries). An
    existing folder that is only readable passes: its finished runs are skipped, and a run that
    needs writing there is refused by the engine (guard.READ_ONLY)."""
    probe = folder / f".write-check.{secrets.token_hex(4)}.tmp"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        probe.unlink()
    except OSError as err:
        if err.errno in READ_ONLY and folder.is_dir():
            return
        print(f"error: cannot write out_dir={folder}: {describe_os_error(err)}", file=sys.stderr,
              flush=True)
        sys.exit(EXIT_USER)


_CPU_NOTED = False


def note_cpu_share(device: str) -> None:
    """Once a process: one line when a CPU run will get far less CPU than it asks for (the load
    average exceeds the cores), so that slow epochs have their reason on screen."""
    global _CPU_NOTED
    if _CPU_NOTED or device.startswith("cuda") or os.environ.get("RANK", "0") != "0":
        return
    _CPU_NOTED = True
    try:
        load, cores = os.getloadavg()[0], len(os.sched_getaffinity(0))
    except (OSError, AttributeError):        # no load average (not Linux/macOS)
        return
    if load > cores:
        print(f"[note] load average {load:.1f} on {cores} cores: this process gets a share of the "
              "CPU, so it runs slower; several at once: OMP_NUM_THREADS=1 each", flush=True)


def sweep_size(config: DictConfig) -> int | None:
    """How many cells Hydra's basic sweeper makes of the experiment's sweep and the command
    line (the product of the swept values); None when that cannot be told."""
    try:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.override_parser.overrides_parser import OverridesParser

        params = config.hydra.sweeper.get("params") or {}
        args = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
        batches = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(args), None)
        return sum(len(batch) for batch in batches)
    except Exception:                        # another sweeper, or a syntax it parses itself
        return None


def duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class SweepReport(Callback):
    """A Hydra callback (configs/config.yaml, hydra.callbacks): checks that out_dir is writable
    before anything runs, prints `[sweep k/N]` with the time so far and an estimate of the time
    left as each cell starts, collects each cell's outcome, and at the end of a sweep counts them,
    lists the cells that failed (each reason once) and exits non-zero (2 if any failed, 3 if the
    others were busy elsewhere)."""

    def __init__(self) -> None:
        self.outcomes: list[dict] = []
        self.said: set[str] = set()          # error lines already printed in this sweep
        self.total: int | None = None
        self.finished = 0                    # cells ended, whatever their outcome
        self.started = time.monotonic()

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        check_writable(Path(str(config.out_dir)))

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        global _REPORT
        check_writable(Path(str(config.out_dir)))
        self.total, self.started = sweep_size(config), time.monotonic()
        _REPORT = self

    def on_job_start(self, config: DictConfig, **kwargs) -> None:
        if _REPORT is not self:
            return                           # a cell in another process (the Slurm launcher)
        print(self.progress(config.hydra.runtime.output_dir), flush=True)

    def progress(self, run_dir: str) -> str:
        """`[sweep k/N] <run folder>  <elapsed> so far, about <left> left`: the time left is the
        mean time of the cells done so far times the cells still to run."""
        done, elapsed = self.finished, time.monotonic() - self.started
        where = "/".join(Path(run_dir).parts[-5:])
        line = f"[sweep {done + 1}/{self.total or '?'}] {where}  {duration(elapsed)} so far"
        if done and self.total:
            line += f", about {duration(elapsed / done * (self.total - done))} left"
        return line

    def on_job_end(self, config: DictConfig, job_return, **kwargs) -> None:
        if _REPORT is not self:
            return
        self.finished += 1
        if isinstance(job_return.return_value, dict):
            self.outcomes.append(job_return.return_value)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        global _REPORT
        _REPORT = None
        if not self.outcomes:
            return                           # the cells ran elsewhere: Hydra reports failures
        counts = Counter(str(o.get("status")) for o in self.outcomes)
        shown = ", ".join(f"{counts[s]} {s}" for s in ("completed", "diverged", "failed", "busy")
                          if counts[s])
        print(f"[sweep] {len(self.outcomes)} cells in {duration(time.monotonic() - self.started)}"
              f": {shown}", flush=True)
        failed = [o for o in self.outcomes if o.get("status") in ("failed", "busy")]
        for line in failed_lines(failed):
            print(line, file=sys.stderr, flush=True)
        if failed:
            busy_only = all(o["status"] == "busy" for o in failed)
            sys.exit(EXIT_BUSY if busy_only else EXIT_USER)


def failed_lines(failed: list[dict], shown: int = 3) -> list[str]:
    """Each reason once, with how many cells it stopped and the first `shown` of their folders."""
    by_reason: dict[tuple[str, str], list[str]] = {}
    for outcome in failed:
        key = (outcome["status"], outcome["message"])
        by_reason.setdefault(key, []).append(str(outcome["run_dir"]))
    lines = []
    for (status, message), folders in by_reason.items():
        lines.append(f"  {status} ({len(folders)} cell{'s' * (len(folders) > 1)}): {message}")
        lines += [f"    {folder}" for folder in folders[:shown]]
        if len(folders) > shown:
            lines.append(f"    ... and {len(folders) - shown} more")
    return lines
