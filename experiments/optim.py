"""The run's optimizer, from `cfg.optim`, and the block plan over which the loop samples each
layer's gradient norm.

One path: `_target_` names the optimizer class itself (`torch.optim.Adam`, another library's
`torch.optim.Optimizer`), which is called with the model's trainable parameters and the config's
other keys; a null key takes the class's own default. The `normalize` node holds the settings of
`bng.block_normalize` (`mode`, `blocks`, `alpha`, `threshold`, `norm_dtype`); a mode other than
"none" applies it, so one line, `optim.normalize.mode=ng`, block-normalizes any optimizer. A
`_target_` that is a `bng` factory over a model (`bng.AdaGradBNG`, whose step needs the hook)
is called with the model, the config's keys and the node's settings, and checks them itself.

The per-layer diagnostics of metrics.jsonl do not depend on the optimizer: every
`grad_norm_every` steps the loop measures the gradients with `bng.grad_norms(plan)`, where
`plan` is the normalization's own block plan (so an NG run reports the blocks it normalizes),
else the plan of the node's `blocks` (default: the model's layers) in its `norm_dtype`.
"""

from __future__ import annotations

import torch
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

import bng
from bng.normalize import SETTINGS

from .config import ConfigError


def build_optimizer(optim_cfg: DictConfig,
                    net: torch.nn.Module) -> tuple[torch.optim.Optimizer, bng.BlockPlan]:
    """`optim_cfg` instantiated over `net`'s trainable parameters, block-normalized as its
    `normalize` node says, and the block plan of its diagnostics."""
    kwargs = OmegaConf.to_container(optim_cfg, resolve=True)
    name = kwargs.pop("name", "?")
    target = kwargs.pop("_target_", None)
    normalize = kwargs.pop("normalize", None) or {}
    try:
        cls = get_object(target)
    except Exception as err:
        raise ConfigError(f"optim._target_={target!r} cannot be imported ({err}); fix "
                          f"configs/optim/{name}.yaml") from None
    unknown = sorted(set(normalize) - set(SETTINGS))
    if unknown:
        raise ConfigError(f"optim.normalize has no key {', '.join(unknown)} (it takes "
                          f"{', '.join(SETTINGS)}); fix configs/optim/{name}.yaml")
    # A null takes the class's default: sgdm.yaml's nesterov is null outside the ResNets.
    kwargs = {key: value for key, value in kwargs.items() if value is not None}
    try:
        if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
            optimizer = cls(net, **kwargs, **normalize)          # a bng factory: it hooks itself
            normalizer = getattr(optimizer, "block_normalizer", None)
            if normalizer is None:
                raise TypeError(f"{target} is neither a torch.optim.Optimizer class nor a bng "
                                "factory that returns a block-normalized optimizer")
            return optimizer, normalizer.plan
        optimizer = cls([p for p in net.parameters() if p.requires_grad], **kwargs)
        if normalize.get("mode", "none") != "none":
            bng.block_normalize(optimizer, net, **normalize)
            return optimizer, optimizer.block_normalizer.plan
        return optimizer, bng.plan_blocks(net, normalize.get("blocks", "layer"),
                                          norm_dtype=normalize.get("norm_dtype"))
    except (ValueError, TypeError) as err:
        raise ConfigError(f"optim ({name}): {err}") from None
