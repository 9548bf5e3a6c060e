"""Block partitions: which parameters are normalized together.

This module is the one place that defines a block. :func:`resolve_blocks` turns a spec
(``"layer"``, ``"conv_bn"``, ``"child"``, ``"param"``, ``"global"`` or a dict) into named blocks, and
:func:`plan_blocks` builds the one :class:`BlockPlan` an optimizer uses from then on.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import repeat

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from bng.functional import BlockIndex, block_index, processing_order

BlockSpec = str | Mapping[str, Sequence[nn.Parameter]]
SPECS = ("layer", "conv_bn", "child", "param", "global")

# nn.LSTM / nn.GRU / nn.RNN name their tensors weight_ih_l0, bias_hh_l1_reverse, weight_hr_l0...
_RNN_LAYER = re.compile(r"_(l\d+(?:_reverse)?)$")


def _layers(model: nn.Module) -> Iterator[tuple[str, nn.Module, nn.Parameter]]:
    """(layer name, owning module, parameter) for each trainable parameter, in model order."""
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
            yield name, module, param


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
    for name, _, param in _layers(model):
        blocks.setdefault(name, []).append(param)
    return blocks


def conv_bn_blocks(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Layer blocks, except that each BatchNorm's weight and bias join the block before it.

    The block before a BatchNorm is the nearest preceding module with trainable parameters
    in registration order: in a conv -> BN network, the convolution it normalizes (which has
    no bias there, so BN's beta plays the bias's role). The merged block keeps the
    convolution's name. A BatchNorm with no module before it stays a block of its own.
    """
    blocks: dict[str, list[nn.Parameter]] = {}
    previous: str | None = None
    for name, module, param in _layers(model):
        if isinstance(module, _BatchNorm) and previous is not None and name not in blocks:
            blocks[previous].append(param)
            continue
        if name not in blocks:
            blocks[name] = []
        blocks[name].append(param)
        previous = name
    return blocks


def child_blocks(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """One block per direct child module of ``model``, holding all its parameters at any depth
    (parameters of ``model`` itself form the block ``"root"``), in model order.

    Where a network keeps parallel branches of one layer in a container, this makes them one
    block: Kim's CNN holds its three filter widths in one ``ModuleList`` (``convs``), the
    "single layer" of the paper, so its blocks are ``embedding``, ``convs`` and ``fc``.
    """
    blocks: dict[str, list[nn.Parameter]] = {}
    seen: set[int] = set()
    parts = [("root", model.parameters(recurse=False)), *((name, child.parameters())
                                                          for name, child in model.named_children())]
    for name, params in parts:
        for param in params:
            if param.requires_grad and id(param) not in seen:
                seen.add(id(param))
                blocks.setdefault(name, []).append(param)
    return blocks


def resolve_blocks(
    model: nn.Module | None,
    blocks: BlockSpec = "layer",
    params: Iterable[Tensor] | None = None,
) -> dict[str, list[Tensor]]:
    """Turn a block spec into ``{name: [param, ...]}`` over trainable parameters.

    Args:
        model: the module whose layers define ``"layer"``/``"conv_bn"`` blocks. May be
            ``None`` when ``params`` is given and ``blocks`` is ``"param"``/``"global"``,
            or a dict.
        blocks: ``"layer"`` (one block per module, see :func:`layer_blocks`), ``"conv_bn"``
            (layers, with each BatchNorm joined to the layer before it, see
            :func:`conv_bn_blocks`), ``"child"`` (one block per direct child module, see
            :func:`child_blocks`), ``"param"`` (each tensor alone), ``"global"`` (one
            block, the paper's Remark 1, B = 1) or an explicit ``{name: [param, ...]}``.
        params: restrict to these parameters (for example an optimizer's); blocks left empty
            are dropped. Every one of them must belong to some block.

    Raises:
        ValueError: unknown spec, no parameters at all, or a parameter in ``params`` that no
            block covers.
    """
    if isinstance(blocks, Mapping):
        resolved = {str(k): [p for p in v if p.requires_grad] for k, v in blocks.items()}
    elif blocks in ("layer", "conv_bn", "child"):
        if model is None:
            raise ValueError(f"blocks={blocks!r} needs a model (nn.Module) to find the layers")
        build = {"layer": layer_blocks, "conv_bn": conv_bn_blocks, "child": child_blocks}
        resolved = build[blocks](model)
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
            f"blocks must be one of {', '.join(map(repr, SPECS))} or a dict of name -> "
            f"parameters, got {blocks!r}"
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
    """One optimizer's partition, resolved once, with the index the functional core takes.

    - ``names``: block names, in block order (the order of every (B,) norm vector);
    - ``blocks``: ``{name: [param, ...]}`` in that order;
    - ``params``: every parameter once, in :func:`bng.functional.processing_order` (grouped by
      device and dtype, small 1-D tensors last in each group), and ``index``: their
      :class:`bng.functional.BlockIndex`, built once;
    - ``device``, ``norm_dtype``: where and in what dtype block norms are computed.

    :meth:`gather` collects a step's gradients. The one cache is for steps where some
    ``p.grad`` is ``None`` (a Python-visible pattern, never tensor data): their index is
    built once per pattern and kept.
    """

    def __init__(
        self, blocks: Mapping[str, Sequence[Tensor]], norm_dtype: torch.dtype | str | None = None
    ) -> None:
        self.names: list[str] = list(blocks)
        self.blocks: dict[str, list[Tensor]] = {name: list(blocks[name]) for name in self.names}
        flat: list[Tensor] = []
        block_of: list[int] = []
        seen: set[int] = set()
        for b, name in enumerate(self.names):
            for p in self.blocks[name]:
                if id(p) in seen:
                    raise ValueError(f"parameter in more than one block (again in {name!r})")
                seen.add(id(p))
                flat.append(p)
                block_of.append(b)
        if not flat:
            raise ValueError("no parameters to normalize: the block partition is empty")
        self.num_blocks = len(self.names)
        order = processing_order(flat)
        self.params: list[Tensor] = [flat[k] for k in order]
        self.block_of: list[int] = [block_of[k] for k in order]
        # All block arithmetic happens on the first parameter's device, like clip_grad_norm_.
        self.device = flat[0].device
        self.norm_dtype = _norm_dtype(norm_dtype, flat)
        self.index: BlockIndex = self._index(range(len(self.params)))
        self._partial: dict[tuple[int, ...], tuple[list[Tensor], BlockIndex]] = {}

    def _index(self, positions: Iterable[int]) -> BlockIndex:
        positions = list(positions)
        return block_index([self.params[k] for k in positions],
                           [self.block_of[k] for k in positions], self.num_blocks,
                           device=self.device, dtype=self.norm_dtype)

    def gather(self) -> tuple[list[Tensor], list[Tensor], BlockIndex] | None:
        """This step's ``(params, grads, index)`` over the parameters whose grad is set, in
        processing order; ``None`` when no parameter has a gradient. Host-side only."""
        grads = [p.grad for p in self.params]
        if not any(map(operator.is_, grads, repeat(None))):
            return self.params, grads, self.index
        present = tuple(k for k, g in enumerate(grads) if g is not None)
        if not present:
            return None
        cached = self._partial.get(present)
        if cached is None:
            if len(self._partial) >= 64:  # grad-None patterns are few; never grow unbounded
                self._partial.clear()
            cached = self._partial[present] = ([self.params[k] for k in present],
                                               self._index(present))
        params, index = cached
        return params, [grads[k] for k in present], index


def _norm_dtype(requested: torch.dtype | str | None, params: list[Tensor]) -> torch.dtype:
    """float64 when asked, or when any parameter is float64 (double models stay exact);
    float32 otherwise. Float32 squares underflow for gradient entries below ~1e-19."""
    if isinstance(requested, str):
        named = getattr(torch, requested, None)
        if not isinstance(named, torch.dtype) or not named.is_floating_point:
            raise ValueError(f"norm_dtype must be a floating dtype such as 'float64', got "
                             f"{requested!r}")
        requested = named
    dtype = requested or (
        torch.float64 if any(p.dtype == torch.float64 for p in params) else torch.float32
    )
    widest = max((p.dtype for p in params if p.dtype.is_floating_point),
                 key=lambda d: torch.finfo(d).bits, default=dtype)
    if torch.finfo(dtype).bits < torch.finfo(widest).bits:
        raise ValueError(f"norm_dtype={dtype} is narrower than the {widest} parameters; use at "
                         "least their dtype (or leave it unset)")
    return dtype


def plan_blocks(
    model: nn.Module | Iterable[Tensor] | None,
    blocks: BlockSpec = "layer",
    *,
    params: Iterable[Tensor] | None = None,
    norm_dtype: torch.dtype | str | None = None,
) -> BlockPlan:
    """The :class:`BlockPlan` of ``model`` (a module, or a parameter iterable for the
    ``"param"``/``"global"``/dict specs), restricted to ``params`` when given."""
    if model is not None and not isinstance(model, nn.Module):
        if params is not None:
            raise ValueError("pass either a module or a parameter list, not both")
        model, params = None, list(model)
    return BlockPlan(resolve_blocks(model, blocks, params=params), norm_dtype=norm_dtype)
