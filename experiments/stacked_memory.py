"""Whether K stacked seeds fit in the device's memory: asked once, before any seed trains.

A group holds K times one seed's tensors: weights, gradients and the optimizer's state, and
the activations one training step saves for its backward pass. One seed's are measured on a
throwaway copy of its network (one forward of one batch, its saved tensors summed by
`torch.autograd.graph.saved_tensors_hooks`), under a forked RNG so that no seed's random
stream moves; the free memory is CUDA's `mem_get_info` or Linux's MemAvailable.
"""

from __future__ import annotations

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from .errors import ConfigError

GiB = 2**30
STATE_COPIES = 4        # weights, gradients and at most two optimizer state tensors (Adam)
HEADROOM = 1.25         # the stacked step's temporaries (inputs, logits, masks) and allocator slack


def seed_bytes(cfg: DictConfig, batch: torch.Tensor, device: torch.device) -> int:
    """Bytes one seed's training step holds: its tensors and one batch's saved activations."""
    saved = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        saved += tensor.numel() * tensor.element_size()
        return tensor

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        net = instantiate(cfg.model.net).to(device)
        net.train()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            net(batch.to(device))
    weights = sum(p.numel() * p.element_size() for p in net.parameters())
    buffers = sum(b.numel() * b.element_size() for b in net.buffers())
    return STATE_COPIES * weights + buffers + saved


def free_bytes(device: torch.device) -> int:
    """Memory the group may use on `device`."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 2**62                      # unknown: nothing to refuse on


def check_fits(cfg: DictConfig, size: int, batch: torch.Tensor, device: torch.device,
               free: int | None = None) -> None:
    """ConfigError (one line, before training) when `size` seeds cannot fit."""
    need = int(size * seed_bytes(cfg, batch, device) * HEADROOM)
    have = free_bytes(device) if free is None else free
    if need > have:
        most = max(1, int(size * have / need))
        raise ConfigError(
            f"stack_seeds={size} needs about {need / GiB:.1f} GiB on {device} for "
            f"{cfg.model.name} at batch {batch.shape[0]}, and {have / GiB:.1f} GiB are free; "
            f"use stack_seeds={most} or fewer. Nothing was trained.")
