"""The run's optimizer, from `cfg.optim`: whatever optimizer its `_target_` names, and the block
plan over which the loop samples each layer's gradient norm.

- A `bng` target (`bng.build`, `bng.AdamNG`, `bng.AdaGradBNG`, ...) is called with the model,
  since it defines the blocks itself, and gets every key.
- Any other target (`torch.optim.RMSprop`, another library's `torch.optim.Optimizer`) is called
  with the model's trainable parameters. The block-normalization keys it does not take itself
  (`mode`, `blocks`, `alpha`, `threshold`, `norm_dtype`) go to `bng.block_normalize`, so one
  `mode: ng` line block-normalizes any optimizer. Without `mode` it stays torch's own object.

The per-layer diagnostics of metrics.jsonl do not depend on the optimizer: every
`grad_norm_every` steps the loop measures the gradients with `bng.grad_norms(plan)`, where
`plan` is the optimizer's own block plan when it has one (so an NG run reports the blocks it
normalizes), else the model's layers. A hook in mode "none" would only record the same norms at
every step, so it is removed: the baselines built by `bng.build(mode="none")` then cost what
torch's optimizer costs.
"""

from __future__ import annotations

import inspect

import torch
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

import bng

from .config import ConfigError

NORMALIZE_KEYS = ("mode", "blocks", "alpha", "threshold", "norm_dtype")


def build_optimizer(optim_cfg: DictConfig,
                    net: torch.nn.Module) -> tuple[torch.optim.Optimizer, bng.BlockPlan]:
    """`optim_cfg` instantiated over `net`, and the block plan of its diagnostics."""
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
            optimizer = factory(net, **kwargs)
            hook = {}
        else:
            accepted = _parameters_of(factory)
            hook = {k: kwargs.pop(k) for k in NORMALIZE_KEYS if k in kwargs and k not in accepted}
            optimizer = factory([p for p in net.parameters() if p.requires_grad], **kwargs)
            if hook.get("mode", "none") != "none":
                bng.block_normalize(optimizer, net, **hook)
        normalizer = getattr(optimizer, "block_normalizer", None)
        if normalizer is None:
            plan = bng.plan_blocks(net, hook.get("blocks", "layer"),
                                   norm_dtype=hook.get("norm_dtype"))
        else:
            plan = normalizer.plan
            if normalizer.mode == "none":       # it would only record the norms, every step
                normalizer.handle.remove()
                del optimizer.block_normalizer
        return optimizer, plan
    except (ValueError, TypeError) as err:
        raise ConfigError(f"optim ({name}): {err}") from None


def _parameters_of(factory: object) -> set[str]:
    try:
        return set(inspect.signature(factory).parameters)
    except (TypeError, ValueError):  # no introspectable signature: it takes none of our keys
        return set()
