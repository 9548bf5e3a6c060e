"""Ready-made block-normalized optimizers: a torch optimizer plus the normalizing hook.

Each factory returns a real ``torch.optim`` optimizer (``SGDMNG`` is a ``torch.optim.SGD``)
over the model's trainable parameters, with :func:`bng.block_normalize` applied.
"Compose, don't add flags": AdamNG is "normalize the blocks, then Adam's step".

Paper: Yu et al., "Block-normalized gradient method: an empirical study for training deep
neural network", arXiv:1707.04822.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from bng.blocks import BlockSpec, plan_blocks
from bng.normalize import block_normalize

ModelOrParams = nn.Module | Iterable[Tensor]


def _wrap(
    base: type[torch.optim.Optimizer],
    model: ModelOrParams,
    mode: str,
    blocks: BlockSpec,
    alpha: float,
    threshold: float,
    norm_dtype: torch.dtype | str | None = None,
    **base_kwargs: Any,
) -> torch.optim.Optimizer:
    """The base optimizer over the blocks' parameters (in block order), plus the hook; the
    blocks are resolved once, here, and the hook takes the same plan."""
    plan = plan_blocks(model, blocks, norm_dtype=norm_dtype)
    optimizer = base([p for block in plan.blocks.values() for p in block], **base_kwargs)
    return block_normalize(optimizer, mode=mode, blocks=plan, alpha=alpha, threshold=threshold)


def SGDMNG(  # noqa: N802 - the paper's name
    model: ModelOrParams,
    lr: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    *,
    mode: str = "ng",
    blocks: BlockSpec = "layer",
    alpha: float = 0.02,
    threshold: float = 0.1,
    norm_dtype: torch.dtype | str | None = None,
    **sgd_kwargs: Any,
) -> torch.optim.SGD:
    """SGD with momentum on block-normalized gradients (``torch.optim.SGD`` + hook).

    Update: ``ĝ_i = c_i · g_i`` (see :func:`bng.block_normalize`), then torch's SGD:
    ``b ← μ·b + (ĝ + λ·x)``, ``x ← x − η·b``.
    """
    return _wrap(torch.optim.SGD, model, mode, blocks, alpha, threshold, norm_dtype,
                 lr=lr, momentum=momentum, weight_decay=weight_decay, **sgd_kwargs)


def AdamNG(  # noqa: N802
    model: ModelOrParams,
    lr: float = 1e-3,
    *,
    mode: str = "ng",
    blocks: BlockSpec = "layer",
    alpha: float = 0.02,
    threshold: float = 0.1,
    norm_dtype: torch.dtype | str | None = None,
    **adam_kwargs: Any,
) -> torch.optim.Adam:
    """Adam on block-normalized gradients (``torch.optim.Adam`` + hook).

    Update: ``ĝ_i = c_i · g_i``, then Adam: ``m ← β₁m + (1−β₁)ĝ``, ``v ← β₂v + (1−β₂)ĝ²``,
    ``x ← x − η·m̂/(√v̂ + ε)``.
    """
    return _wrap(torch.optim.Adam, model, mode, blocks, alpha, threshold, norm_dtype,
                 lr=lr, **adam_kwargs)


def AdaGradNG(  # noqa: N802
    model: ModelOrParams,
    lr: float = 0.01,
    *,
    mode: str = "ng",
    blocks: BlockSpec = "layer",
    alpha: float = 0.02,
    threshold: float = 0.1,
    norm_dtype: torch.dtype | str | None = None,
    **adagrad_kwargs: Any,
) -> torch.optim.Adagrad:
    """AdaGrad on block-normalized gradients (``torch.optim.Adagrad`` + hook).

    Update: ``ĝ_i = c_i · g_i``, then ``s ← s + ĝ²``, ``x ← x − η·ĝ/(√s + ε)``.
    Not the appendix's Algorithm 2; that is :class:`bng.AdaGradBNG`.
    """
    return _wrap(torch.optim.Adagrad, model, mode, blocks, alpha, threshold, norm_dtype,
                 lr=lr, **adagrad_kwargs)


def _resolve_class(base: str | type[torch.optim.Optimizer]) -> type[torch.optim.Optimizer]:
    if not isinstance(base, str):
        return base
    module_name, _, class_name = base.rpartition(".")
    if not module_name:
        module_name = "torch.optim"
    cls = getattr(importlib.import_module(module_name), class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise ValueError(f"base={base!r} is not a torch.optim.Optimizer class")
    return cls


def build(
    model: ModelOrParams,
    base: str | type[torch.optim.Optimizer] = "torch.optim.Adam",
    mode: str = "none",
    blocks: BlockSpec = "layer",
    alpha: float = 0.02,
    threshold: float = 0.1,
    norm_dtype: torch.dtype | str | None = None,
    **base_kwargs: Any,
) -> torch.optim.Optimizer:
    """Any base optimizer plus the block hook; what the Hydra optimizer configs target.

    ``instantiate(cfg.optim, model)`` with ``_target_: bng.build``. ``base`` is a class or a
    dotted path (``"torch.optim.SGD"``; a bare ``"SGD"`` means ``torch.optim.SGD``).
    ``mode="none"`` gives the plain base optimizer whose trajectory is torch's exactly, and
    still records the block norms for :func:`bng.block_grad_norms`. A base argument given as
    ``None`` takes the base optimizer's own default: the configs resolve a setting that does not
    apply to a dataset (``nesterov`` outside the ResNets) to null.
    """
    base_kwargs = {key: value for key, value in base_kwargs.items() if value is not None}
    return _wrap(_resolve_class(base), model, mode, blocks, alpha, threshold, norm_dtype,
                 **base_kwargs)
