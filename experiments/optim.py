"""The run's optimizer, from `cfg.optim`: whatever optimizer its `_target_` names.

- A `bng` target (`bng.build`, `bng.AdamNG`, `bng.AdaGradBNG`, ...) is called with the model,
  since it defines the blocks itself, and gets every key.
- Any other target (`torch.optim.RMSprop`, another library's `torch.optim.Optimizer`) is called
  with the model's trainable parameters. The block-normalization keys it does not take itself
  (`mode`, `blocks`, `alpha`, `threshold`, `norm_dtype`) go to `bng.block_normalize`, so one
  `mode: ng` line block-normalizes any optimizer. Without `mode` the hook runs in mode "none":
  the gradients are untouched and it only records each block's gradient norm.

Either way the optimizer records its per-block gradient norms, which the loop reads every step
with `bng.last_block_norms` (the per-layer diagnostics of metrics.jsonl).
"""

from __future__ import annotations

import inspect

import torch
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

import bng

from .config import ConfigError

NORMALIZE_KEYS = ("mode", "blocks", "alpha", "threshold", "norm_dtype")


def build_optimizer(optim_cfg: DictConfig, net: torch.nn.Module) -> torch.optim.Optimizer:
    """`optim_cfg` instantiated over `net`, block-normalized or recording its block norms."""
    kwargs = OmegaConf.to_container(optim_cfg, resolve=True)
    name = kwargs.pop("name", "?")
    target = kwargs.pop("_target_", None)
    try:
        factory = get_object(target)
    except Exception as err:
        raise ConfigError(f"optim._target_={target!r} cannot be imported ({err}); fix "
                          f"configs/optim/{name}.yaml") from None
    try:
        if (getattr(factory, "__module__", "") or "").split(".")[0] == "bng":
            return factory(net, **kwargs)
        accepted = _parameters_of(factory)
        hook = {k: kwargs.pop(k) for k in NORMALIZE_KEYS if k in kwargs and k not in accepted}
        params = [p for p in net.parameters() if p.requires_grad]
        optimizer = factory(params, **kwargs)
        return bng.block_normalize(optimizer, net, **{"mode": "none", **hook})
    except (ValueError, TypeError) as err:
        raise ConfigError(f"optim ({name}): {err}") from None


def _parameters_of(factory: object) -> set[str]:
    try:
        return set(inspect.signature(factory).parameters)
    except (TypeError, ValueError):  # no introspectable signature: it takes none of our keys
        return set()
