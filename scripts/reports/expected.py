"""The config a cell asks for, and how a run's stored config differs from it.

A cell's expected config is what `python run.py` resolves for it, composed from configs/ as
plain YAML in Hydra's order: the dataset, model and optimizer group configs (with their
`defaults:` chains), the root config's own values, the experiment config's body (a quick twin's
`epochs: 3` and `dataset.limit: 2000`), the cell's sweep overrides, then the report's
`--run-args`. Simple interpolations (`${dataset.train.epochs}`, `${oc.select:key,default}`) are
resolved; a value that depends on the machine or on the loaded data (`data_root`, a vocabulary
size) is left undetermined and not compared. A run counts for the cell only if its config.yaml
agrees on every key that decides a result: every key but the identity-exempt ones, which are
read from the root config's exclude list, as the engine reads them (tests/test_report_trust.py
keeps the two lists equal)."""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from .sweeps import (
    exclude_keys,
    experiment_exists,
    group_config,
    merge,
    read_sweep,
    root_values,
    same_value,
)

# What a run's folder path names (its other parts), not a config value to compare.
CELL_CHOICES = ("dataset", "model", "optim", "seed", "experiment")
# Keys a run's config.yaml holds that no override sets: its provenance block, Hydra's own node,
# and the vocabulary size the engine fills in from the loaded data.
ENGINE_SET = ("meta", "hydra", "dataset.vocab_size")
# Keys that pick where and how a run goes, not its result: the root config's exclude list less
# the cell's own choices, and ENGINE_SET. The engine's list (experiments/record.py) is the same.
IGNORED = tuple(key for key in exclude_keys() if key not in CELL_CHOICES) + ENGINE_SET
SHOWN = 4  # differences named in one line; the rest are counted


class Unknown:
    """A value the configs alone cannot tell (set by the engine or by the machine)."""

    def __repr__(self) -> str:
        return "?"


UNKNOWN = Unknown()
_MISSING = object()
_INTERPOLATION = re.compile(r"^\$\{([^{}]*)\}$")


def is_ignored(key: str) -> bool:
    """`key` or one of its parents is identity-exempt (`meta.command`, `dataset.workers`)."""
    parts = key.split(".")
    return any(".".join(parts[:n]) in IGNORED for n in range(1, len(parts) + 1))


def parse_value(text: str) -> Any:
    """An override's value as Hydra types it, near enough for comparing: YAML scalars and lists."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_overrides(words: str | Iterable[str]) -> dict[str, str | None]:
    """`"epochs=10 +dataset.limit=500 ~model.net.max_norm"` -> {key: value text}; a deletion
    (`~key`) gives None. Words without `=` (`-m`) are skipped; a text that does not split as
    shell words gives {}."""
    if isinstance(words, str):
        try:
            words = shlex.split(words)
        except ValueError:
            return {}
    found: dict[str, str | None] = {}
    for word in words:
        if word.startswith("~"):
            found[word[1:].partition("=")[0]] = None
            continue
        key, sep, value = word.lstrip("+").partition("=")
        if sep and key:
            found[key] = value
    return found


def _set(tree: dict, dotted: str, value: Any) -> None:
    """tree[a][b] = value for "a.b", making (or replacing non-mapping) parents as needed."""
    *parents, last = dotted.split(".")
    node = tree
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[last] = value


def _select(tree: dict, dotted: str, depth: int) -> Any:
    if is_ignored(dotted):          # filled by the engine or the machine: not the config's
        return UNKNOWN
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return _resolve(node, tree, depth + 1)


def _resolve(value: Any, tree: dict, depth: int = 0) -> Any:
    """`value` with `${key}` and `${oc.select:key,default}` replaced; other resolvers
    (`oc.env`), string templates and cycles give UNKNOWN."""
    if isinstance(value, dict):
        return {key: _resolve(item, tree, depth) for key, item in value.items()}
    if isinstance(value, list):
        return [_resolve(item, tree, depth) for item in value]
    if not isinstance(value, str) or "${" not in value:
        return value
    match = _INTERPOLATION.match(value.strip())
    if match is None or depth > 20:
        return UNKNOWN
    body = match.group(1).strip()
    if body.startswith("oc.select:"):
        key, _, default = body.removeprefix("oc.select:").partition(",")
        found = _select(tree, key.strip(), depth)
        return _resolve(parse_value(default.strip()), tree, depth + 1) if found is _MISSING \
            else found
    if ":" in body:
        return UNKNOWN
    found = _select(tree, body, depth)
    return UNKNOWN if found is _MISSING else found


def flatten(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    """{dotted key: leaf} with the identity-exempt keys left out; lists are leaves."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if is_ignored(name):
            continue
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def compose(dataset: str, model: str, optim: str, experiment: str | None,
            overrides: Iterable[tuple[str, str]] = (),
            run_args: Iterable[tuple[str, str | None]] = ()) -> dict[str, Any]:
    """The flat expected config (UNKNOWN where undetermined). `run_args` may name another
    experiment (`experiment=table4_quick`); the other group choices are the cell's own."""
    extra = dict(run_args)
    experiment = extra.pop("experiment", None) or experiment
    tree: dict = {group: group_config(group, name)
                  for group, name in (("dataset", dataset), ("model", model), ("optim", optim))}
    tree = merge(tree, root_values())
    if experiment and experiment_exists(experiment):
        tree = merge(tree, read_sweep(experiment).body)
    tree = _deep_copy(tree)         # _set below must never touch the cached group configs
    for key, value in [*overrides, *extra.items()]:
        if key in CELL_CHOICES:
            continue
        _set(tree, key, None if value is None else parse_value(value))
    flat = flatten(_resolve(tree, tree))
    flat.pop("seed", None)          # the seed is matched from the run's folder and meta
    return flat


def _deep_copy(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {key: _deep_copy(value) for key, value in tree.items()}
    if isinstance(tree, list):
        return [_deep_copy(value) for value in tree]
    return tree


def same(stored: Any, wanted: Any) -> bool:
    """Equal as a config value: numbers as numbers ("1e-4" == 0.0001), lists item by item."""
    if isinstance(stored, list) or isinstance(wanted, list):
        return (isinstance(stored, list) and isinstance(wanted, list)
                and len(stored) == len(wanted)
                and all(same(a, b) for a, b in zip(stored, wanted, strict=True)))
    if isinstance(stored, float) and isinstance(wanted, float) and math.isnan(stored):
        return math.isnan(wanted)
    return same_value(stored, wanted)


def _known(value: Any) -> bool:
    return all(_known(item) for item in value) if isinstance(value, list) else value is not UNKNOWN


def show(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, list):
        return "[" + ", ".join(show(item) for item in value) + "]"
    return str(value)


def differences(expected: Mapping[str, Any], config: Mapping) -> list[str]:
    """`key stored (expected wanted)` for each key whose stored value differs; a null and an
    absent key are the same (the engine's identity drops nulls)."""
    stored = flatten(config)
    stored.pop("seed", None)
    out = [f"{key} {show(stored.get(key))} (expected {show(wanted)})"
           for key, wanted in expected.items()
           if _known(wanted) and not same(stored.get(key), wanted)]
    out += [f"{key} {show(value)} (expected unset)" for key, value in stored.items()
            if key not in expected and value is not None]
    return out


def summarize(found: list[str]) -> str:
    """The first few differences, then a count of the rest."""
    text = ", ".join(found[:SHOWN])
    return text + (f" and {len(found) - SHOWN} more" if len(found) > SHOWN else "")
