"""The engine's file layer: crash-safe writes, tolerant reads, and the per-run lock.

Every run file is written to a temporary name in the same folder and renamed into place, so a
crash or a kill leaves either the old file or the new one, never half of one. Files are created
as any program creates them, so the user's umask applies (a group-shared results folder stays
readable by the group). A kill during a write can leave a `.<name>.<random>.tmp` behind:
`remove_orphans` clears them when the run next starts, under its lock.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import yaml

from .errors import DamagedFile

__all__ = ["DamagedFile", "RunLock", "read_json", "read_jsonl", "read_yaml", "remove_orphans",
           "save_torch", "strict", "write_json", "write_jsonl", "write_status", "write_text"]


@contextmanager
def _atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the body succeeds."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # 0o666 & ~umask
        yield tmp
        os.replace(tmp, path)
    except OSError as err:
        if err.filename is None:        # a failed write names no file: name the one we wrote
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    with _atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


def strict(obj: Any, path: str = "") -> tuple[Any, list[str]]:
    """`obj` with every NaN or infinity replaced by null, and the dotted paths of those values.

    JSON has no NaN: Python writes a bare `NaN` that strict parsers (jq, JavaScript, Go) reject.
    Values that are not JSON types (a tensor, a numpy number) become floats first.
    """
    if isinstance(obj, dict):
        out, bad = {}, []
        for key, value in obj.items():
            out[key], found = strict(value, f"{path}{key}.")
            bad += found
        return out, bad
    if isinstance(obj, (list, tuple)):
        pairs = [strict(value, f"{path}{i}.") for i, value in enumerate(obj)]
        return [value for value, _ in pairs], [p for _, found in pairs for p in found]
    if obj is None or isinstance(obj, (str, bool, int)):
        return obj, []
    value = float(obj)
    return (value, []) if math.isfinite(value) else (None, [path.rstrip(".")])


def _strict_object(obj: Any) -> Any:
    """strict(obj), and for an object the paths of its non-finite values, which it names under
    `nonfinite` so that a reader can tell a null that was a NaN from a missing value."""
    clean, bad = strict(obj)
    if bad and isinstance(clean, dict):
        clean["nonfinite"] = sorted(set(clean.get("nonfinite") or []) | set(bad))
    return clean


def _json(obj: Any) -> str:
    return json.dumps(_strict_object(obj), indent=2, sort_keys=True, allow_nan=False) + "\n"


def write_json(path: Path, obj: Any) -> None:
    write_text(path, _json(obj))


def write_status(path: Path, obj: Any) -> None:
    """write_json, falling back to rewriting the file in place when no temporary file fits (a
    full disk): a failure must still say so. A crash in the middle then leaves a damaged
    summary, which the engine rebuilds or refuses, never reads as "not started"."""
    try:
        write_json(path, obj)
    except OSError:
        with open(path, "w") as f:
            f.write(_json(obj))


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """Rewrite the whole file: it is one line per epoch, so small, and never left half-written.

    Keys keep their order: `grad_norms` lists the blocks input to output, as the model has them.
    A non-finite value is written as null and named in the row's `nonfinite` list.
    """
    write_text(path, "".join(json.dumps(_strict_object(row), allow_nan=False) + "\n"
                             for row in rows))


def save_torch(path: Path, obj: Any) -> None:
    with _atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            try:
                torch.save(obj, f)
            except RuntimeError as err:  # torch's zip writer hides a full disk's OSError in it
                if isinstance(err.__context__, OSError):
                    raise err.__context__ from None
                raise
            f.flush()
            os.fsync(f.fileno())


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as err:
        raise DamagedFile(f"{path.name} cannot be read ({err})") from err


def read_json(path: Path) -> dict | None:
    """The JSON object in `path`; None when there is no file; DamagedFile when it is not one."""
    text = _read(path)
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as err:
        raise DamagedFile(f"{path.name} is not valid JSON ({err})") from err
    if not isinstance(value, dict):
        raise DamagedFile(f"{path.name} holds a {type(value).__name__}, not a JSON object")
    return value


def read_jsonl(path: Path) -> list[dict]:
    """One object per line; [] when there is no file; DamagedFile on a line that is not one."""
    text = _read(path)
    rows = []
    for number, line in enumerate((text or "").splitlines(), 1):
        try:
            row = json.loads(line) if line.strip() else None
        except ValueError:
            row = []
        if row is not None and not isinstance(row, dict):
            raise DamagedFile(f"{path.name} line {number} is not a JSON object")
        if row is not None:
            rows.append(row)
    return rows


def read_yaml(path: Path) -> dict | None:
    """The mapping in a YAML file; None when there is no file; DamagedFile when it is not one."""
    text = _read(path)
    if text is None:
        return None
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise DamagedFile(f"{path.name} is not valid YAML") from err
    if not isinstance(value, dict):
        raise DamagedFile(f"{path.name} holds no mapping")
    return value


def remove_orphans(run_dir: Path) -> list[Path]:
    """Delete the temporary files that a killed write left in `run_dir`; returns them."""
    orphans = sorted(run_dir.glob(".*.tmp"))
    for path in orphans:
        path.unlink(missing_ok=True)
    return orphans


class RunLock:
    """An exclusive, non-blocking lock on a run folder, so two sweeps never train one cell twice.

    The lock is an OS file lock (flock): it is released when the process dies, however it dies.
    """

    def __init__(self, run_dir: Path):
        self.path = run_dir / ".lock"
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> bool:
        if self.held:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
