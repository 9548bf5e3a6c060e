"""The engine's error types and exit codes: the bottom of its import graph (imports nothing of it).

A user can fix every error below; it is printed as one line that names the problem and the fix,
never as a traceback. The exit codes below are the ones docs/RELIABILITY.md's table lists.
Besides these, the data layer raises its own DataError (data/common.py): it sits below the
engine and imports none of it, so it cannot raise the engine's types.
"""

from __future__ import annotations

import errno

from hydra.errors import CompactHydraException

EXIT_OK = 0           # completed or diverged (a diverged run is a result), or skipped as done
EXIT_CRASH = 1        # an unexpected error (a bug): Python's traceback, as usual
EXIT_USER = 2         # bad input or a failed environment (disk, permissions); a sweep with failed cells
EXIT_BUSY = 3         # another process is training this run right now; nothing was done
EXIT_INTERRUPT = 130  # Ctrl-C, after the mid-epoch checkpoint (128 + SIGINT, as shells report it)


class RunError(Exception):
    """An error the user can fix; the message says what is wrong and how to fix it."""

    exit_code = EXIT_USER


class ConfigError(RunError, ValueError):
    """A config that cannot run."""


class ScheduleError(ConfigError):
    """An unknown or malformed learning-rate schedule."""


class ResumeError(RunError):
    """The run folder cannot be continued as it is (damaged, or a history with no checkpoint)."""


class IdentityMismatch(RunError):
    """The run folder holds a run of another config; it is never skipped, resumed or overwritten."""


class RunBusy(RunError):
    """Another process holds the run's lock: it is training (or checking) this run right now."""

    exit_code = EXIT_BUSY


class DamagedFile(ValueError):
    """A run file exists but cannot be read as what it should be (truncated, binary, wrong type)."""


class Diverged(RuntimeError):
    """The training loss, or a test loss or metric, became NaN or infinite: the run ends as
    `diverged`, a result rather than an error."""


class CellFailed(CompactHydraException):
    """A sweep cell that failed in another process (the Slurm launcher's); Hydra prints its
    message, not a traceback, once all the cells are done."""


def describe_os_error(err: OSError) -> str:
    """One line for a failed file operation: what failed, on which path, and the fix."""
    where = f" {err.filename}" if err.filename else ""
    fixes = {
        errno.ENOSPC: "free some space, or point out_dir= at a disk that has it",
        errno.EDQUOT: "free some space, or point out_dir= at a disk that has it",
        errno.EROFS: "point out_dir= at a writable folder",
        errno.EACCES: "fix the folder's permissions, or point out_dir= at a writable folder",
        errno.EPERM: "fix the folder's permissions, or point out_dir= at a writable folder",
        errno.ENAMETOOLONG: "name fewer or shorter overrides on the command line; the values an "
                            "experiment config (configs/experiment/) sets do not name the folder",
    }
    fix = fixes.get(err.errno or 0, "check the disk and the path")
    reason = (err.strerror or str(err)).lower()
    return f"{reason}:{where}. {fix[0].upper()}{fix[1:]}; then run the same command to go on."


def user_error(err: BaseException) -> tuple[int, str] | None:
    """(exit code, one line) for an error the user can fix; None for anything else (a bug)."""
    from data.common import DataError  # the data layer's own leaf module (torch only)

    if isinstance(err, RunError):
        return err.exit_code, str(err)
    if isinstance(err, DataError):
        return EXIT_USER, str(err)
    if isinstance(err, OSError):
        return EXIT_USER, describe_os_error(err)
    return None


def describe(err: BaseException) -> str:
    """The one line that summary.json's `message` and the terminal show for `err`."""
    known = user_error(err)
    return known[1] if known else f"{type(err).__name__}: {err}"


def startup_error(err: BaseException) -> str | None:
    """The one line for an error raised before the run's own code starts: while Hydra parses the
    command line, composes the config or makes the run folder. None for anything else (a bug).

    A RunError raised in one of our resolvers (a run folder name that escapes out_dir, say)
    reaches us wrapped in OmegaConf's InterpolationResolutionError: its own line is the one shown.
    """
    from hydra.errors import HydraException, InstantiationException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, RunError):
            return str(cause)
        cause = cause.__cause__ or cause.__context__
    if isinstance(err, OverrideParseException):
        override = one_line(str(err)).split("Exception: ", 1)[-1]  # drop the grammar's class
        return (f"cannot parse the override {override}. Quote a value that holds "
                """characters outside Hydra's grammar (non-ASCII letters, spaces): 'key="value"'.""")
    if isinstance(err, OSError) and not isinstance(err, HydraException):
        return describe_os_error(err)
    if isinstance(err, InstantiationException):   # a target's constructor failed: maybe a bug
        return None
    if isinstance(err, (HydraException, OmegaConfBaseException)):
        return one_line(str(err))
    return None


def one_line(text: str) -> str:
    """Hydra's several-line messages as one line: a header ending in ':' followed by indented
    items (its list of available choices) becomes `header: a, b, c`; the config search path, the
    grammar's caret line and its link are dropped."""
    out: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith(("Config search path", "See https://hydra.cc")):
            break
        if not line or set(line) == {"^"}:
            continue
        if raw[:1] in (" ", "\t") and out and out[-1].endswith((":", ",")):
            out[-1] = f"{out[-1]}{' ' if out[-1].endswith(':') else ' '}{line},"
        else:
            out.append(line)
    parts = [part.rstrip(",") for part in out]
    return " ".join(p if p.endswith((".", ":")) or i == len(parts) - 1 else f"{p}."
                    for i, p in enumerate(parts))
