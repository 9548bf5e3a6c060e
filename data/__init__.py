"""Datasets of the bng-suite reproduction; the contract is docs/DESIGN.md, section `data/`.

    from data import build_dataset, DataError, default_data_root
    ds = build_dataset(cfg.dataset, root, download=False, device="cuda", seed=1)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from data.common import DataError, cfg_get, default_data_root

__all__ = ["DataError", "build_dataset", "default_data_root", "LOADERS"]


def _loader(module: str, function: str):
    def load(*args, **kwargs):  # imported on use: torchvision and sklearn load only when needed
        import importlib

        return getattr(importlib.import_module(module), function)(*args, **kwargs)

    return load


# dataset config `name` -> loader(cfg, root, download, device, seed, rank, world_size)
LOADERS = {
    "digits": _loader("data.vision", "load_digits"),
    "mnist": _loader("data.vision", "load_mnist"),
    "cifar10": _loader("data.vision", "load_cifar"),
    "cifar100": _loader("data.vision", "load_cifar"),
    "imagenet": _loader("data.imagenet", "load_imagenet"),
    "ptb": _loader("data.text", "load_ptb"),
    "rt": _loader("data.text", "load_rt"),
}


def build_dataset(
    cfg_dataset: Any,
    root: str | Path | None = None,
    download: bool = False,
    device: str | torch.device = "cpu",
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
):
    """The dataset named by `cfg_dataset.name`, with its splits ready to batch on `device`.

    root: the data folder (None: `default_data_root()`, i.e. $BNG_DATA_ROOT or
    ~/.cache/bng/data). download: fetch missing files (md5-checked) instead of raising
    DataError. seed: the run seed; epoch randomness comes from (seed, epoch) only.
    rank, world_size: this process's disjoint shard of each epoch under DDP.
    """
    name = cfg_get(cfg_dataset, "name")
    if name not in LOADERS:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(LOADERS)} "
                        f"(configs/dataset/<name>.yaml)")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world_size {world_size}")
    root = Path(root).expanduser() if root is not None else default_data_root()
    return LOADERS[name](cfg_dataset, root, bool(download), torch.device(device), int(seed),
                         rank=rank, world_size=world_size)
