"""Datasets of the bng-suite reproduction; the contract is docs/DESIGN.md, section `data/`.

    from data import build_dataset, DataError, default_data_root
    ds = build_dataset(cfg.dataset, root, download=False, device="cuda", seed=1)

Each dataset config names its loader with `_target_` (configs/dataset/<name>.yaml), as the
model and optimizer configs name theirs; the loader's module is imported only when it loads
(torchvision and sklearn load only when needed).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from data.common import DataError, cfg_get, default_data_root

__all__ = ["DataError", "build_dataset", "default_data_root"]


def build_dataset(
    cfg_dataset: Any,
    root: str | Path | None = None,
    download: bool = False,
    device: str | torch.device = "cpu",
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
):
    """The dataset that `cfg_dataset` describes, loaded by the function its `_target_` names
    (`loader(cfg, root, download, device, seed, rank=, world_size=)`), with its splits ready to
    batch on `device`.

    root: the data folder (None: `default_data_root()`, i.e. $BNG_DATA_ROOT or
    ~/.cache/bng/data). download: fetch missing files (md5-checked) instead of raising
    DataError. seed: the run seed; epoch randomness comes from (seed, epoch) only.
    rank, world_size: this process's disjoint shard of each epoch under DDP.
    """
    loader = _loader(cfg_dataset)
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world_size {world_size}")
    root = Path(root).expanduser() if root is not None else default_data_root()
    return loader(cfg_dataset, root, bool(download), torch.device(device), int(seed),
                  rank=rank, world_size=world_size)


def _loader(cfg_dataset: Any) -> Callable[..., Any]:
    """The function the config's `_target_` names; DataError in one line when it names none."""
    name, target = cfg_get(cfg_dataset, "name"), cfg_get(cfg_dataset, "_target_")
    fix = ("its config, configs/dataset/<name>.yaml, names the loader as "
           "`_target_: data.<module>.<function>`")
    if not isinstance(target, str) or "." not in target:
        raise DataError(f"unknown dataset {name!r}: no loader named by `_target_` ({fix})")
    module, _, function = target.rpartition(".")
    try:
        loader = getattr(importlib.import_module(module), function)
    except (ImportError, AttributeError) as err:
        raise DataError(f"dataset {name!r}: its _target_ {target} cannot be imported ({err}); "
                        f"{fix}") from None
    if not callable(loader):
        raise DataError(f"dataset {name!r}: its _target_ {target} is not a function; {fix}")
    return loader
