"""Plain per-block loop: the readable reference that the vectorized path must equal.

It is deliberately slow (one Python iteration and several kernels per block and tensor)
and is used by the tests, never by the optimizers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor


def normalize_blocks_reference_(
    blocks: Mapping[str, Sequence[Tensor]],
    mode: str,
    *,
    alpha: float = 0.02,
    threshold: float = 0.1,
) -> dict[str, float]:
    """Normalize ``p.grad`` of each block in place, block by block; return the grad norms.

    Same rule as :func:`bng.functional.block_scales`, written as the paper states it.
    Parameters whose ``.grad`` is ``None`` are skipped.
    """
    norms: dict[str, float] = {}
    for name, params in blocks.items():
        grads = [p.grad for p in params if p.grad is not None]
        weights = [p for p in params if p.grad is not None]
        grad_norm = math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads))
        weight_norm = math.sqrt(sum(float(w.detach().double().pow(2).sum()) for w in weights))
        norms[name] = grad_norm
        if mode == "none" or not grads:
            continue
        if mode == "ng":
            scale = 1.0 / grad_norm if grad_norm > 0 else 0.0
        elif mode == "adap":
            weight_norm = weight_norm if weight_norm > 0 else 1.0  # LARS convention
            scale = alpha * weight_norm / grad_norm if grad_norm > 0 else 0.0
        elif mode == "clip":
            scale = min(1.0, threshold / grad_norm) if grad_norm > 0 else 1.0
        else:
            raise ValueError(f"unknown mode {mode!r}")
        with torch.no_grad():
            for g in grads:
                g.mul_(scale)
    return norms
