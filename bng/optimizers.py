"""Ready-made block-normalized optimizers: functions that return a torch optimizer with the hook.

``SGDMNG(model)`` is ``bng.block_normalize(torch.optim.SGD(params, ...), model)``: a real
``torch.optim.SGD`` over the model's trainable parameters, stepping on block-normalized
gradients. "Compose, don't add flags": AdamNG is "normalize the blocks, then Adam's step".
Keyword arguments named like :func:`bng.block_normalize`'s settings (``mode``, ``blocks``,
``alpha``, ``threshold``, ``norm_dtype``) configure the normalization; the others go to the
torch optimizer.

Paper: Yu et al., "Block-normalized gradient method: an empirical study for training deep
neural network", arXiv:1707.04822.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from bng.normalize import SETTINGS, block_normalize

ModelOrParams = nn.Module | Iterable[Tensor]


def _compose(base: type[torch.optim.Optimizer], model: ModelOrParams,
             kwargs: dict[str, Any]) -> torch.optim.Optimizer:
    """``base`` over the trainable parameters, then :func:`bng.block_normalize` with the
    settings found in ``kwargs``."""
    settings = {key: kwargs.pop(key) for key in SETTINGS if key in kwargs}
    module = model if isinstance(model, nn.Module) else None
    params = model.parameters() if module is not None else model
    optimizer = base([p for p in params if p.requires_grad], **kwargs)
    return block_normalize(optimizer, module, **settings)


def SGDMNG(  # noqa: N802 - the paper's name
    model: ModelOrParams, lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 0.0,
    **kwargs: Any,
) -> torch.optim.SGD:
    """SGD with momentum on block-normalized gradients: a ``torch.optim.SGD`` with the hook.

    Update: ``ĝ_i = c_i · g_i`` (``c_i`` per ``mode``, default ``"ng"``: ``1/‖g_i‖₂``; see
    :func:`bng.block_normalize`), then torch's SGD: ``b ← μ·b + (ĝ + λ·x)``, ``x ← x − η·b``.

    Args:
        model: a module (its layers are the blocks), or parameters with
            ``blocks="param"``/``"global"``/a dict.
        lr, momentum, weight_decay: η, μ, λ of ``torch.optim.SGD``.
        **kwargs: the normalization's settings (``mode``, ``blocks``, ``alpha``,
            ``threshold``, ``norm_dtype``) and any other ``torch.optim.SGD`` argument.
    """
    return _compose(torch.optim.SGD, model,
                    dict(kwargs, lr=lr, momentum=momentum, weight_decay=weight_decay))


def AdamNG(model: ModelOrParams, lr: float = 1e-3, **kwargs: Any) -> torch.optim.Adam:  # noqa: N802
    """Adam on block-normalized gradients: a ``torch.optim.Adam`` with the hook.

    Update: ``ĝ_i = c_i · g_i``, then Adam: ``m ← β₁m + (1−β₁)ĝ``, ``v ← β₂v + (1−β₂)ĝ²``,
    ``x ← x − η·m̂/(√v̂ + ε)``. Arguments as :func:`SGDMNG`'s, with ``torch.optim.Adam``'s.
    """
    return _compose(torch.optim.Adam, model, dict(kwargs, lr=lr))


def AdaGradNG(model: ModelOrParams, lr: float = 0.01,  # noqa: N802
              **kwargs: Any) -> torch.optim.Adagrad:
    """AdaGrad on block-normalized gradients: a ``torch.optim.Adagrad`` with the hook.

    Update: ``ĝ_i = c_i · g_i``, then ``s ← s + ĝ²``, ``x ← x − η·ĝ/(√s + ε)``. Arguments as
    :func:`SGDMNG`'s, with ``torch.optim.Adagrad``'s. Not the appendix's Algorithm 2; that is
    :class:`bng.AdaGradBNG`.
    """
    return _compose(torch.optim.Adagrad, model, dict(kwargs, lr=lr))
