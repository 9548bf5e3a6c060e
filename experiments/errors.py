"""Errors a user can fix get one clear line and exit code 2, never a traceback."""

from __future__ import annotations

import sys
from contextlib import contextmanager

from .config import ConfigError


def _user_errors() -> tuple[type[BaseException], ...]:
    from .schedule import ScheduleError
    from .train import ResumeError

    errors: list[type[BaseException]] = [ConfigError, ScheduleError, ResumeError]
    try:
        from data import DataError
    except ImportError:
        pass
    else:
        errors.append(DataError)
    return tuple(errors)


@contextmanager
def clean_exit():
    try:
        yield
    except _user_errors() as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)
