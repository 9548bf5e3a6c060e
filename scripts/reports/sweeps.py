"""The sweep grids and config defaults, read from configs/ (the one place they are written).

`read_sweep("table1")` follows an experiment config's `defaults:` (its base experiment and its
`override /dataset: ...` lines) and returns the groups it selects and its `hydra.sweeper.params`
as value lists, the way Hydra's basic sweeper expands them. `config_default("dataset", "ptb",
"bptt")` is a key's value in a group config, following that config's `defaults:` chain.
Plain YAML reads: the reports never import the training code or compose with Hydra."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import yaml

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
CELL_KEYS = ("dataset", "model", "optim", "seed")  # what a run folder's path names


class SweepError(ValueError):
    pass


@dataclass(frozen=True)
class Sweep:
    """One experiment config: its group choices, its sweep params (key -> values) and its body
    (the values it sets itself, base experiments' first: a quick twin's `epochs: 3`)."""

    name: str
    groups: dict[str, str]
    params: dict[str, tuple[str, ...]]
    body: dict = field(default_factory=dict)

    def values(self, key: str) -> tuple[str, ...]:
        """A key's swept values, or the group's own choice (`dataset`, `model`, `optim`)."""
        if key in self.params:
            return self.params[key]
        return (self.groups[key],) if key in self.groups else ()


@cache
def _load(path: Path) -> dict:
    try:
        value = yaml.safe_load(path.read_text())
    except FileNotFoundError as error:
        raise SweepError(f"no such config: {path}") from error
    return value if isinstance(value, dict) else {}


def _split(value) -> tuple[str, ...]:
    """A sweep value as Hydra's basic sweeper expands it: `a,b,c` (only plain comma lists)."""
    text = str(value).strip()
    if "(" in text or "[" in text:
        raise SweepError(f"sweep value {text!r}: only plain comma lists are read by the reports")
    return tuple(item.strip() for item in text.split(",") if item.strip())


def root_groups() -> dict[str, str]:
    """The root config's group choices (configs/config.yaml: dataset, model, optim, ...)."""
    groups = {}
    for entry in _load(CONFIGS / "config.yaml").get("defaults", []):
        if isinstance(entry, dict):
            for key, value in entry.items():
                if "/" not in key and " " not in key and isinstance(value, str):
                    groups[key] = value
    return groups


def root_values() -> dict:
    """The root config's own values (configs/config.yaml less `defaults:` and `hydra:`)."""
    config = _load(CONFIGS / "config.yaml")
    return {key: value for key, value in config.items() if key not in ("defaults", "hydra")}


@cache
def read_sweep(name: str) -> Sweep:
    """configs/experiment/<name>.yaml with its base experiments merged in, Hydra's order."""
    groups, params, body = dict(root_groups()), {}, {}
    config = _load(CONFIGS / "experiment" / f"{name}.yaml")
    for entry in config.get("defaults", []):
        if isinstance(entry, str) and entry != "_self_":       # a base experiment
            base = read_sweep(entry)
            groups.update(base.groups)
            params.update(base.params)
            body = merge(body, base.body)
        elif isinstance(entry, dict):                          # override /dataset: cifar10
            for key, value in entry.items():
                group = key.removeprefix("override").strip().lstrip("/")
                groups[group] = str(value)
    swept = (((config.get("hydra") or {}).get("sweeper") or {}).get("params")) or {}
    params.update({str(key): _split(value) for key, value in swept.items()})
    own = {key: value for key, value in config.items() if key not in ("defaults", "hydra")}
    return Sweep(name, groups, params, merge(body, own))


def exclude_keys() -> tuple[str, ...]:
    """The root config's `override_dirname.exclude_keys`: the overrides that do not name a run's
    folder, `+`/`++` prefixes dropped."""
    hydra = _load(CONFIGS / "config.yaml").get("hydra") or {}
    keys = lookup(hydra, "job.config.override_dirname.exclude_keys") or []
    return tuple(dict.fromkeys(str(key).lstrip("+") for key in keys))


def experiment_exists(name: str) -> bool:
    return (CONFIGS / "experiment" / f"{name}.yaml").is_file()


def experiment_names() -> list[str]:
    return sorted(path.stem for path in (CONFIGS / "experiment").glob("*.yaml"))


@cache
def swept_keys() -> frozenset[str]:
    """Every key some experiment sweeps, other than the ones a run's path names: the keys a run
    must agree on to answer a cell (a learning rate, a BPTT length, the holdout, the blocks)."""
    keys = set()
    for name in experiment_names():
        keys.update(read_sweep(name).params)
    return frozenset(keys - set(CELL_KEYS))


@cache
def group_config(group: str, name: str) -> dict:
    """A group config with its `defaults:` chain merged (adamng.yaml = adam.yaml + its lines).
    Cached: treat the result as read-only."""
    config = _load(CONFIGS / group / f"{name}.yaml")
    merged: dict = {}
    for entry in config.get("defaults", []):
        if isinstance(entry, str) and entry != "_self_":   # `base/mlp@_here_`: same package
            merged = merge(merged, group_config(group, entry.partition("@")[0]))
    own = {key: value for key, value in config.items() if key != "defaults"}
    return merge(merged, own)


def merge(base: dict, update: dict) -> dict:
    """`update` over `base`, nested mappings merged key by key (OmegaConf's merge of plain
    values); neither argument is changed."""
    out = dict(base)
    for key, value in update.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(
            out.get(key), dict) else value
    return out


def lookup(tree: dict, dotted: str):
    """tree["a"]["b"] for "a.b"; None where any part is missing."""
    node = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


@cache
def config_default(group: str, name: str, key: str):
    """`key` (relative to the group) in configs/<group>/<name>.yaml; None if not set there."""
    try:
        return lookup(group_config(group, name), key)
    except SweepError:
        return None


def same_value(a, b) -> bool:
    """Equal as numbers when both read as numbers ("0.001" == 1.0e-3), else as text; None
    (and the text "null") only equals None."""
    a, b = (None if v in (None, "null", "None") else v for v in (a, b))
    if a is None or b is None:
        return a is b
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return str(a).lower() == str(b).lower()
