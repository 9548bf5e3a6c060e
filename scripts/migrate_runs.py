"""Rewrite the stored configs of run folders from the old optimizer shape to today's.

    python scripts/migrate_runs.py RESULTS_DIR [--dry-run]

The optimizer configs used to target `bng.build` with a `base:` class and the normalization's
settings (`mode`, `blocks`, `alpha`, `threshold`, `norm_dtype`) as flat keys, or a torch class
with those keys beside its own. Today `_target_` is the class itself and the settings live in an
`optim.normalize` node (docs/DESIGN.md, "The engine's optimizer"). A run's identity is its
stored config, so without this rewrite the engine would refuse to skip or resume the old runs.

For each run folder under RESULTS_DIR (any folder with a config.yaml), once:
- config.yaml's `optim` node takes the new shape, and the fingerprint of the identity stored in
  its `meta` and in summary.json, if any, is recomputed from the rewritten config;
- an `<extra>` folder named by an old key (`optim.threshold=0.05`) moves to the new key's name
  (`optim.normalize.threshold=0.05`), where today's sweeps write that run.
- the machine's paths go: `run_dir` becomes relative to the results folder (`runs/...`), and
  `data_root` and `out_dir` leave config.yaml and the stored commands, as today's engine writes
  them, so a results folder can be copied elsewhere.
Every file is replaced atomically (a temporary file, then a rename). A folder already in the
new shape is left alone, so the tool can run again over a mix of migrated and older folders.
It prints each change. A folder that cannot be migrated (a damaged config.yaml, an unknown old
shape) is said in one line and passed over; the others are migrated, and at the end the ones
passed over are listed again and the exit status is 2.
"""

from __future__ import annotations

import argparse
import inspect
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import yaml

from bng.normalize import SETTINGS  # mode, blocks, alpha, threshold, norm_dtype
from experiments.config import UNSTORED_OVERRIDES, stored_overrides
from experiments.io import DamagedFile, read_json, write_json, write_text
from experiments.record import fingerprint

OLD_BUILD = "bng.build"
OLD_BUILD_BASE = "torch.optim.Adam"          # bng.build's default base
OWN_SETTINGS = {"bng.AdaGradBNG": ("blocks", "norm_dtype")}   # it took these itself, mode "ng"


class MigrationError(ValueError):
    """A run this tool cannot rewrite: a damaged config.yaml, or an optim node whose target's
    old meaning is unknown. Its message is one line."""


def read_config(path: Path) -> Any:
    """config.yaml's content; MigrationError in one line when it is not readable YAML text."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise MigrationError(f"config.yaml is not UTF-8 text (byte {err.start}: "
                             f"{err.object[err.start:err.start + 1]!r})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or type(err).__name__
        raise MigrationError(f"config.yaml is not valid YAML ({problem}{where})") from None


def migrate_optim(optim: dict[str, Any]) -> dict[str, Any] | None:
    """The new shape of an old `optim` node; None when it has it already."""
    if "normalize" in optim:
        return None
    old = dict(optim)
    target = old.pop("_target_", None)
    if target == OLD_BUILD:
        base = str(old.pop("base", OLD_BUILD_BASE))
        target = base if "." in base else f"torch.optim.{base}"
        moved, mode = SETTINGS, "none"        # bng.build took every setting, default mode none
    elif target in OWN_SETTINGS:
        moved, mode = OWN_SETTINGS[target] + ("mode",), "ng"
    elif isinstance(target, str) and not target.startswith("bng."):
        # The old engine gave a torch class the settings it does not take itself (RMSprop keeps
        # its own `alpha`) and normalized only when `mode` was set.
        own = _parameters_of(target)
        moved, mode = tuple(key for key in SETTINGS if key not in own), "none"
    else:
        raise MigrationError(f"optim._target_={target!r} is not an old shape this tool knows")
    normalize = {"mode": old.pop("mode", mode) if "mode" in moved else mode}
    normalize.update({key: old.pop(key) for key in SETTINGS if key in moved and key in old})
    return {"_target_": target, **old, "normalize": normalize}


def _parameters_of(target: str) -> set[str]:
    from hydra.utils import get_object

    try:
        return set(inspect.signature(get_object(target)).parameters)
    except Exception as err:
        raise MigrationError(f"optim._target_={target!r} cannot be imported ({err})") from None


def new_extra(name: str) -> str:
    """An `<extra>` folder name with the old keys renamed, in Hydra's order (sorted)."""
    old = {f"optim.{key}=": f"optim.normalize.{key}=" for key in SETTINGS}
    given = re.split(r",(?=[\w.+]+=)", name)      # a value may hold commas: [0.9,0.99]
    items = []
    for item in given:
        prefix = next((p for p in old if item.startswith(p)), None)
        items.append(old[prefix] + item[len(prefix):] if prefix else item)
    return ",".join(sorted(items)) if items != given else name


def optim_node(config: Any) -> dict[str, Any]:
    """config.yaml's `optim` node; MigrationError when the file holds none."""
    if not isinstance(config, dict) or not isinstance(config.get("optim"), dict):
        raise MigrationError("config.yaml has no optim node")
    return config["optim"]


def migrate_config(run_dir: Path) -> list[str]:
    """Rewrite one run's config.yaml and summary.json; the changes made, as lines."""
    path = run_dir / "config.yaml"
    config = read_config(path)
    optim = migrate_optim(optim_node(config))
    if optim is None:
        return []
    config["optim"] = optim
    meta = config.get("meta") or {}
    identity = {key: value for key, value in config.items() if key != "meta"}
    changes = [f"optim: _target_ {optim['_target_']}, normalize {optim['normalize']}"]
    if isinstance(meta.get("identity"), dict):
        meta["identity"]["fingerprint"] = fingerprint(identity)
        changes.append("config.yaml meta.identity.fingerprint")
    extra = new_extra(run_dir.parent.name)
    if meta.get("extra") and extra != run_dir.parent.name:
        meta["extra"] = extra
    summary_path = run_dir / "summary.json"
    summary = _read_summary(summary_path)
    if summary is not None and isinstance(summary.get("identity"), dict):
        summary["identity"]["fingerprint"] = fingerprint(identity)
        write_json(summary_path, summary)
        changes.append("summary.json identity.fingerprint")
    write_text(path, yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    return changes


def _without_machine_paths(command: str) -> str:
    words = shlex.split(command)
    kept = stored_overrides(words)
    return command if kept == words else " ".join(shlex.quote(w) for w in kept)


def relocate(run_dir: Path) -> list[str]:
    """Drop the machine's paths from one run's files: data_root, and an absolute run_dir."""
    changes = []
    path = run_dir / "config.yaml"
    config = read_config(path)
    meta = config.get("meta") if isinstance(config, dict) else None
    if isinstance(config, dict) and (any(k in config for k in UNSTORED_OVERRIDES) or (
            isinstance(meta, dict) and _without_machine_paths(str(meta.get("command", "")))
            != str(meta.get("command", "")))):
        removed = [key for key in UNSTORED_OVERRIDES if config.pop(key, None) is not None]
        if isinstance(meta, dict) and "command" in meta:
            meta["command"] = _without_machine_paths(str(meta["command"]))
        write_text(path, yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
        changes.append(f"config.yaml: {' and '.join(removed) or 'paths in the command'} removed")
    summary_path = run_dir / "summary.json"
    summary = _read_summary(summary_path)
    if summary is None:
        return changes
    stored = {"run_dir": _relative_run_dir(run_dir),
              "command": _without_machine_paths(str(summary.get("command", "")))}
    stored = {k: v for k, v in stored.items() if k in summary and summary[k] != v and v}
    if stored:
        write_json(summary_path, {**summary, **stored})
        changes.append(f"summary.json: {', '.join(sorted(stored))} without machine paths")
    return changes


def _relative_run_dir(run_dir: Path) -> str:
    """runs/<dataset>/.../seed<k>: the path below the results folder that holds runs/."""
    parts = run_dir.resolve().parts
    if "runs" not in parts:
        return str(run_dir)
    start = len(parts) - 1 - parts[::-1].index("runs")
    return str(Path(*parts[start:]))


def _read_summary(path: Path) -> dict | None:
    try:
        return read_json(path)
    except DamagedFile:
        return None       # the engine rebuilds a damaged summary from metrics.jsonl


def move_run(run_dir: Path) -> Path:
    """Move a run out of an `<extra>` folder named by an old key; its folder afterwards."""
    extra = new_extra(run_dir.parent.name)
    if extra == run_dir.parent.name:
        return run_dir
    target = run_dir.parent.with_name(extra) / run_dir.name
    if target.exists():
        raise MigrationError(f"{target} exists already; move one of the two runs away")
    target.parent.mkdir(parents=True, exist_ok=True)
    run_dir.rename(target)
    if not any(run_dir.parent.iterdir()):
        run_dir.parent.rmdir()
    return target


def migrate(results: Path, dry_run: bool = False) -> list[tuple[Path, str]]:
    """Migrate every run under `results`, going on past the ones that cannot be; those, each
    with why, in the order met."""
    failed = []
    for path in sorted(results.rglob("config.yaml")):
        run_dir = path.parent
        try:
            if dry_run:
                optim = migrate_optim(optim_node(read_config(path)))
                changes = [] if optim is None else [f"optim -> {optim}"]
            else:
                changes = migrate_config(run_dir)
                moved = move_run(run_dir)
                if moved != run_dir:
                    changes.append(f"moved to {moved}")
                changes += relocate(moved)
        except (MigrationError, OSError, AttributeError) as err:
            reason = " ".join(str(err).split())          # one line, whatever the error
            print(f"{run_dir}: not migrated: {reason}")
            failed.append((run_dir, reason))
            continue
        for change in changes:
            print(f"{run_dir}: {change}")
    return failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="a results folder (out_dir), or one run's")
    parser.add_argument("--dry-run", action="store_true", help="print, change nothing")
    args = parser.parse_args()
    if not args.results.is_dir():
        print(f"{args.results} is not a folder; give a results folder such as results/")
        return 2
    failed = migrate(args.results, args.dry_run)
    if failed:
        print(f"error: {len(failed)} run folder(s) not migrated, the rest were; fix or move these "
              "away, then run the command again:", file=sys.stderr)
        for run_dir, reason in failed:
            print(f"  {run_dir}: {reason}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
