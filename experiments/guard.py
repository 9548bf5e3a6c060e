"""Who may write a run folder, and which code may go on training it.

The lock: one process trains a run (RunBusy for a second one), and a folder that cannot be
written is only read, so that a finished run there can still be skipped. The commit policy: a
resume under another git commit is said in one line and recorded with each commit's epochs, or
refused when the config asks (`resume_across_commits=refuse`).
"""

from __future__ import annotations

import errno
from pathlib import Path

import torch

from . import distributed
from .checkpoint import Progress
from .errors import ResumeError, RunBusy
from .io import RunLock
from .record import StoredRun, continue_commits, prior_commits

# A folder the process may read but not write: a completed run there is still skipped.
READ_ONLY = (errno.EACCES, errno.EPERM, errno.EROFS)


def take_lock(lock: RunLock, run_dir: Path, dist: distributed.Dist,
              device: torch.device) -> OSError | None:
    """Take the run's lock on rank 0 (RunBusy when another process holds it). A folder that
    cannot be written returns its error instead: only a finished run may then be skipped."""
    read_only = None
    try:
        busy = dist.is_main and not lock.acquire()
    except OSError as err:
        if err.errno not in READ_ONLY:
            raise
        busy, read_only = False, err
    if distributed.any_rank(dist, busy, device):
        raise RunBusy(f"another process is training this run right now: {run_dir}. "
                      "Nothing was done; run the command again once it has finished.")
    if distributed.any_rank(dist, read_only is not None, device) and read_only is None:
        read_only = OSError(errno.EROFS, "rank 0 cannot write the run folder", str(run_dir))
    return read_only


def record_code_version(progress: Progress, stored: StoredRun, commit: str, *, policy: str,
                        run_dir: Path, main: bool) -> None:
    """Record the commit that trains from here on; say so (or refuse, when `policy` is
    "refuse") when it is not the one that trained the run so far."""
    progress.commits = prior_commits(stored, progress.commits, progress.epoch,
                                     progress.state.batch)
    previous = continue_commits(progress.commits, commit, progress.epoch)
    if previous is None:
        return
    first, last = previous["epochs"]
    trained = f"epoch {first} was" if first == last else f"epochs {first}-{last} were"
    if policy == "refuse":
        raise ResumeError(
            f"{run_dir}: {trained} trained by commit {previous['commit']}; this code is "
            f"commit {commit}, and resume_across_commits=refuse. Check out {previous['commit']} "
            "to resume, or add resume_across_commits=allow to go on with this code (each "
            "commit's epochs are then recorded).")
    if main:
        print(f"[resume] {trained} trained by commit {previous['commit']}; this code is "
              f"commit {commit}. Both are recorded with their epochs (summary.json `commits`).",
              flush=True)
