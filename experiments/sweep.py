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
import traceback
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

_REPORT: SweepReport | None = None   # set in the sweeping process, while its cells run here


def run_cell(run: Callable[[DictConfig, Path, list[str]], dict], cfg: DictConfig) -> dict:
    """`run(cfg, run_dir, overrides)` for one run or one sweep cell, with the folder and the
    command line's overrides that Hydra chose, turning its errors into lines and exit codes."""
    hydra_cfg = HydraConfig.get()
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
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
        if os.environ.get("RANK", "0") == "0":          # under torchrun, one line, not one a rank
            print(f"error: {message}", file=sys.stderr, flush=True)
        if not in_sweep:
            sys.exit(code)
        if _REPORT is None:
            raise CellFailed(f"a sweep cell failed: {message}") from err
        return {"status": "failed" if code != EXIT_BUSY else "busy", "exit_code": code,
                "message": message, "run_dir": hydra_cfg.runtime.output_dir}


def check_writable(folder: Path) -> None:
    """Exit 2 with one line when `folder` cannot be created or written (before Hydra tries)."""
    probe = folder / f".write-check.{secrets.token_hex(4)}.tmp"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        probe.unlink()
    except OSError as err:
        print(f"error: cannot write out_dir={folder}: {describe_os_error(err)}", file=sys.stderr,
              flush=True)
        sys.exit(EXIT_USER)


class SweepReport(Callback):
    """A Hydra callback (configs/config.yaml, hydra.callbacks): checks that out_dir is writable
    before anything runs, collects each cell's outcome, and at the end of a sweep lists the cells
    that failed and exits non-zero (2 if any failed, 3 if the others were busy elsewhere)."""

    def __init__(self) -> None:
        self.outcomes: list[dict] = []

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        check_writable(Path(str(config.out_dir)))

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        global _REPORT
        check_writable(Path(str(config.out_dir)))
        _REPORT = self

    def on_job_end(self, config: DictConfig, job_return, **kwargs) -> None:
        if _REPORT is self and isinstance(job_return.return_value, dict):
            self.outcomes.append(job_return.return_value)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        global _REPORT
        _REPORT = None
        if not self.outcomes:
            return                           # the cells ran elsewhere: Hydra reports failures
        failed = [o for o in self.outcomes if o.get("status") in ("failed", "busy")]
        print(f"[sweep] {len(self.outcomes)} cells: {len(self.outcomes) - len(failed)} completed "
              f"or diverged, {len(failed)} failed", flush=True)
        for outcome in failed:
            print(f"  {outcome['status']}: {outcome['run_dir']}: {outcome['message']}",
                  file=sys.stderr, flush=True)
        if failed:
            busy_only = all(o["status"] == "busy" for o in failed)
            sys.exit(EXIT_BUSY if busy_only else EXIT_USER)
