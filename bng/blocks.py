"""Block partitions: which parameters are normalized together.

This module is the one place that defines a block. Every optimizer in `bng` asks
:func:`resolve_blocks`, and the vectorized hot path asks :class:`BlockPlan` for the
precomputed index tensors.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn

BlockSpec = str | Mapping[str, Sequence[nn.Parameter]]

# nn.LSTM / nn.GRU / nn.RNN name their tensors weight_ih_l0, bias_hh_l1_reverse, weight_hr_l0...
_RNN_LAYER = re.compile(r"_(l\d+(?:_reverse)?)$")


def layer_blocks(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """One block per layer, in model order (the paper's default partition).

    A layer is the set of trainable parameters one module owns directly
    (``recurse=False``): Linear/Conv weight + bias, BatchNorm weight + bias, an Embedding.
    Recurrent modules (``nn.LSTM``, ``nn.GRU``, ``nn.RNN``) are split by their ``_l{k}`` and
    ``_reverse`` suffixes so that each recurrent layer and direction is its own block, named
    ``<module>_l{k}`` or ``<module>_l{k}_reverse``. Frozen parameters are excluded; a shared
    (tied) parameter belongs to the first module that owns it.
    """
    blocks: dict[str, list[nn.Parameter]] = {}
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        prefix = module_name or "root"
        for param_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            name = prefix
            if isinstance(module, nn.RNNBase):
                layer = _RNN_LAYER.search(param_name)
                name = f"{prefix}_{layer.group(1)}" if layer else prefix
            blocks.setdefault(name, []).append(param)
    return blocks


def resolve_blocks(
    model: nn.Module | None,
    blocks: BlockSpec = "layer",
    params: Iterable[Tensor] | None = None,
) -> dict[str, list[Tensor]]:
    """Turn a block spec into ``{name: [param, ...]}`` over trainable parameters.

    Args:
        model: the module whose layers define ``"layer"`` blocks. May be ``None`` when
            ``params`` is given and ``blocks`` is ``"param"``/``"global"``, or a dict.
        blocks: ``"layer"`` (one block per module, see :func:`layer_blocks`), ``"param"``
            (each tensor alone), ``"global"`` (one block, the paper's Remark 1, B = 1) or an
            explicit ``{name: [param, ...]}``.
        params: restrict to these parameters (for example an optimizer's); blocks left empty
            are dropped. Every one of them must belong to some block.

    Raises:
        ValueError: unknown spec, no parameters at all, or a parameter in ``params`` that no
            block covers.
    """
    if isinstance(blocks, Mapping):
        resolved = {str(k): [p for p in v if p.requires_grad] for k, v in blocks.items()}
    elif blocks == "layer":
        if model is None:
            raise ValueError('blocks="layer" needs a model (nn.Module) to find the layers')
        resolved = layer_blocks(model)
    elif blocks in ("param", "global"):
        if model is not None:
            named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        elif params is not None:
            named = [(f"param{i}", p) for i, p in enumerate(params) if p.requires_grad]
        else:
            raise ValueError(f"blocks={blocks!r} needs a model or a parameter list")
        if blocks == "param":
            resolved = {n: [p] for n, p in named}
        else:
            resolved = {"global": [p for _, p in named]} if named else {}
    else:
        raise ValueError(
            f"blocks must be 'layer', 'param', 'global' or a dict of name -> parameters, "
            f"got {blocks!r}"
        )
    if params is not None:
        wanted = {id(p) for p in params}
        resolved = {k: [p for p in v if id(p) in wanted] for k, v in resolved.items()}
        covered = {id(p) for v in resolved.values() for p in v}
        missing = wanted - covered
        if missing:
            raise ValueError(
                f"{len(missing)} optimizer parameter(s) belong to no block; pass the model "
                f"that owns them or an explicit blocks dict"
            )
    resolved = {k: v for k, v in resolved.items() if v}
    if not resolved:
        raise ValueError("no trainable parameters: the block partition is empty")
    return resolved


class BlockPlan:
    """Flat view of a partition for the vectorized path.

    ``params`` lists every parameter once, block by block; ``block_of[k]`` is the block of
    ``params[k]``. Index tensors are built once per device and cached, never per step.
    """

    def __init__(
        self, blocks: Mapping[str, Sequence[Tensor]], norm_dtype: torch.dtype | str | None = None
    ) -> None:
        self.names: list[str] = list(blocks)
        self.params: list[Tensor] = []
        self.block_of: list[int] = []
        seen: set[int] = set()
        for b, name in enumerate(self.names):
            for p in blocks[name]:
                if id(p) in seen:
                    raise ValueError(f"parameter in more than one block (again in {name!r})")
                seen.add(id(p))
                self.params.append(p)
                self.block_of.append(b)
        if not self.params:
            raise ValueError("no parameters to normalize: the block partition is empty")
        self.num_blocks = len(self.names)
        # All block arithmetic happens on the first parameter's device, like clip_grad_norm_.
        self.device = self.params[0].device
        # float64 norms when any parameter is float64, so double-precision models stay exact,
        # or when asked: float32 squares underflow for gradient entries below ~1e-19.
        if isinstance(norm_dtype, str):
            named = getattr(torch, norm_dtype, None)
            if not isinstance(named, torch.dtype) or not named.is_floating_point:
                raise ValueError(f"norm_dtype must be a floating dtype such as 'float64', got "
                                 f"{norm_dtype!r}")
            norm_dtype = named
        self.norm_dtype = norm_dtype or (
            torch.float64 if any(p.dtype == torch.float64 for p in self.params) else torch.float32
        )
        widest = max((p.dtype for p in self.params if p.dtype.is_floating_point),
                     key=lambda d: torch.finfo(d).bits, default=self.norm_dtype)
        if torch.finfo(self.norm_dtype).bits < torch.finfo(widest).bits:
            raise ValueError(f"norm_dtype={self.norm_dtype} is narrower than the {widest} "
                             "parameters; use at least their dtype (or leave it unset)")
        self._groups: dict[tuple[int, ...], list[Group]] = {}

    def groups(self, present: tuple[int, ...]) -> list[Group]:
        """The (device, dtype) groups of the parameters at positions ``present`` (cached)."""
        cached = self._groups.get(present)
        if cached is None:
            by_key: dict[tuple[torch.device, torch.dtype], list[int]] = {}
            for k in present:
                p = self.params[k]
                by_key.setdefault((p.device, p.dtype), []).append(k)
            cached = [Group(self, positions) for positions in by_key.values()]
            if len(self._groups) > 64:  # grad-None patterns are few; never grow unbounded
                self._groups.clear()
            self._groups[present] = cached
        return cached


class Group:
    """Parameters sharing one device and dtype, with their block indices on both devices."""

    def __init__(self, plan: BlockPlan, positions: list[int]) -> None:
        self.positions = positions
        self.params = [plan.params[k] for k in positions]
        blocks = [plan.block_of[k] for k in positions]
        # (P_g,) block of each parameter, on the block-arithmetic device (for index_add_)
        self.block_index = torch.tensor(blocks, dtype=torch.long, device=plan.device)
        self.device = self.params[0].device
        self.dtype = self.params[0].dtype
