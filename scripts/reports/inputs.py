"""What `report.py` is given, checked before anything is read or written: each problem is one
line (`InputError`), which the CLI prints and exits 2 on."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

# What a cell's own folder names: each cell sets these itself (the seeds come from --seeds).
CELL_KEYS = ("dataset", "model", "optim", "seed")


class InputError(ValueError):
    """A problem with the command line or the folders it names, said in one line."""


def parse_seeds(text: str) -> tuple[int, ...]:
    """`"1,2,3"` -> (1, 2, 3); anything but a comma list of whole numbers is refused."""
    words = [word.strip() for word in text.split(",") if word.strip()]
    if not words or not all(word.isdigit() for word in words):
        raise InputError(f"--seeds {text!r}: not a comma list of whole numbers (e.g. 1,2,3)")
    return tuple(int(word) for word in words)


def run_arg_keys(text: str) -> list[str]:
    """The keys of the `--run-args` words (`key=value`, `+key=value`, `~key`); a text that does
    not split as shell words, or a word that is not an override, is refused."""
    try:
        words = shlex.split(text or "")
    except ValueError as error:
        raise InputError(f"--run-args {text!r}: cannot split it into words ({error})") from None
    keys = []
    for word in words:
        key, sep, _ = word.lstrip("+").partition("=")
        if word.startswith("~"):
            key, sep = word[1:].partition("=")[0], "="
        if not sep or not key or key.startswith("-"):
            raise InputError(f"--run-args: {word!r} is not an override; give key=value words, "
                             "e.g. --run-args \"epochs=10 dataset.limit=500\"")
        keys.append(key)
    return keys


def check_run_args(text: str, grid_keys: dict[str, set[str]]) -> None:
    """Refuse `--run-args` that set a key each cell sets itself: its dataset, model, optimizer
    and seed, or a key its sweep varies (`grid_keys`: artifact -> those keys)."""
    keys = run_arg_keys(text)
    for key in keys:
        if key in CELL_KEYS:
            fix = "pass --seeds 1,2,3" if key == "seed" else "render the artifact that runs it"
            raise InputError(f"--run-args sets {key}, which each cell sets itself; drop it "
                             f"({fix})")
        for name, varied in grid_keys.items():
            if key in varied:
                raise InputError(f"--run-args sets {key}, which {name}'s grid varies from cell "
                                 "to cell; drop it")


def check_results(results: Path, given: bool) -> None:
    """The folder to read: it must be a folder that exists (the default `results` may be empty)."""
    if results.is_dir():
        return
    if results.exists():
        raise InputError(f"--results {results} is a file, not a folder; pass the folder that "
                         "holds runs/")
    hint = "pass --results DIR, the folder that holds runs/" if given else \
        "train first (e.g. make demo) or pass --results DIR"
    raise InputError(f"no results folder {results}; {hint}")


def check_out(out: Path) -> None:
    """The folder to write: a folder (or one that can be made) where tables/, figures/ and
    missing/ can be written."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file, not a folder; pass a folder for tables/ and "
                         "figures/")
    for folder in (out / name for name in ("tables", "figures", "missing")):
        while not folder.exists():
            folder = folder.parent
        if not os.access(folder, os.W_OK | os.X_OK):
            raise InputError(f"cannot write to {folder} (read-only or not yours); pass --out DIR "
                             "for a folder you can write")
