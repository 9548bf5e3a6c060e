"""K copies of one network trained as one: each parameter and buffer stacked to (K, *shape).

Member k's tensors are exactly its own network's (`torch.func.stack_module_state` copies them
bitwise), and its forward pass sees only them: `torch.func.vmap` over `functional_call` runs
the K members' convolutions as one grouped convolution and their BatchNorms each with its own
batch statistics and running buffers. The paper's MLPs (sigmoid Linear stacks) take a faster
path, one `baddbmm` per layer, which the MLP-18 benchmark of scripts/bench_stack.py needs.

Dropout draws each member's mask from that member's own generator, with the same call and the
same shape as `F.dropout` makes on a CPU, so a member sees the masks its separate run sees
(that run draws them from the global generator, which then holds the same state).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from models.kim_cnn import KimCNN
from models.mlp import MLP

ACTIVATIONS = {nn.Sigmoid: torch.sigmoid, nn.ReLU: torch.relu, nn.Tanh: torch.tanh}


class StackedLinear(torch.autograd.Function):
    """K Linear layers at once: (K, B, in) @ (K, out, in)^T + (K, 1, out). Its own backward
    gives the weight's gradient as one (K, out, in) bmm; autograd's through a transposed view
    would leave a transposed gradient that the accumulation then copies, layer by layer."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        ctx.save_for_backward(x, weight)
        return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor, Tensor]:
        x, weight = ctx.saved_tensors
        grad_x = torch.bmm(grad, weight) if ctx.needs_input_grad[0] else None
        return grad_x, torch.bmm(grad.transpose(1, 2), x), grad.sum(1)


class MaskDropout(nn.Module):
    """Dropout whose mask is a buffer the stacked forward passes in: (B, *features) per member,
    already scaled by 1 / (1 - p). Identity in eval mode, as nn.Dropout."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p
        self.register_buffer("mask", torch.empty(0), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.mask if self.training else x


class StackedNet:
    """The K members' parameters (`params`, name -> (K, *shape) leaf tensors that require grad)
    and buffers, and the forward pass over them.

    `nets` are the members' own modules, built as their separate runs build them; they are kept
    for `unstack_into` (a checkpoint is written from them). `generators` hold each member's RNG
    (its dropout masks). `feature_shapes` (dropout module name -> input shape less the batch
    dimension) come from `record_dropout_shapes`.
    """

    def __init__(self, nets: list[nn.Module], generators: list[torch.Generator]) -> None:
        self.nets, self.generators, self.size = nets, generators, len(nets)
        params, buffers = stack_module_state(nets)       # copies: (K, *shape) per tensor
        self.params: dict[str, Tensor] = params
        self.buffers: dict[str, Tensor] = buffers
        self.template = copy.deepcopy(nets[0]).to("meta")  # the architecture only
        self.dropouts: dict[str, float] = {}
        for name, module in list(self.template.named_modules()):
            if isinstance(module, nn.Dropout):
                parent, _, child = name.rpartition(".")
                owner = self.template.get_submodule(parent) if parent else self.template
                setattr(owner, child, MaskDropout(module.p))
                self.dropouts[name] = module.p
        self.feature_shapes: dict[str, tuple[int, ...]] = {}
        # vmap's embedding backward leaves padding_idx out for member 0 only: (name, row)
        self.padding_rows = [(f"{name}.weight", module.padding_idx)
                             for name, module in nets[0].named_modules()
                             if isinstance(module, nn.Embedding) and module.padding_idx is not None]
        self.fast_mlp = isinstance(nets[0], MLP) and all(
            isinstance(m, (nn.Linear, *ACTIVATIONS)) for m in nets[0].layers)
        self.kim = isinstance(nets[0], KimCNN)
        self.training = True

    def train(self, mode: bool = True) -> None:
        self.training = mode
        self.template.train(mode)

    def eval(self) -> None:
        self.train(False)

    @torch.no_grad()
    def record_dropout_shapes(self, example: Tensor) -> None:
        """Each dropout's input shape per sample, from one eval forward of member 0 on
        `example` (a batch of inputs): eval draws nothing and changes no buffer."""
        if not self.dropouts:
            return
        net, handles = self.nets[0], []
        for name in self.dropouts:
            def hook(_module, inputs, name=name):
                self.feature_shapes[name] = tuple(inputs[0].shape[1:])
            handles.append(net.get_submodule(name).register_forward_pre_hook(hook))
        was_training = net.training
        try:
            net.eval()
            net(example)
        finally:
            net.train(was_training)
            for handle in handles:
                handle.remove()

    def _masks(self, batch: int) -> dict[str, Tensor]:
        """(K, B, *features) mask per dropout, each member's drawn from its own (CPU) generator
        as F.dropout draws it on a CPU: empty_like(input).bernoulli_(1 - p), then / (1 - p).
        On a GPU, F.dropout's fused kernel draws from the CUDA generator instead: there the
        masks are each seed's own and valid, but not its separate run's."""
        masks = {}
        device = next(iter(self.params.values())).device
        for name, p in self.dropouts.items():
            shape = (batch, *self.feature_shapes[name])
            masks[f"{name}.mask"] = torch.stack([
                torch.empty(shape).bernoulli_(1 - p, generator=gen).div_(1 - p)
                for gen in self.generators]).to(device, non_blocking=True)
        return masks

    def __call__(self, x: Tensor, shared_input: bool = False,
                 widths: Tensor | None = None) -> Tensor:
        """x: (K, B, ...) one batch per member, or (B, ...) for all when `shared_input` ->
        logits (K, B, C). Sentences of different widths come padded to the widest, with
        `widths` (K,) each member's own (Kim's CNN only)."""
        if self.kim:
            return self._kim_forward(x, shared_input, widths)
        if self.fast_mlp:
            return self._mlp_forward(x if not shared_input else x.expand(self.size, *x.shape))
        buffers = dict(self.buffers)
        if self.training and self.dropouts:
            buffers.update(self._masks(x.shape[0] if shared_input else x.shape[1]))

        def member(params: dict, member_buffers: dict, inputs: Tensor) -> Tensor:
            return functional_call(self.template, (params, member_buffers), (inputs,))

        in_dims = (0, 0, None if shared_input else 0)
        return vmap(member, in_dims=in_dims, randomness="error")(self.params, buffers, x)

    def _kim_forward(self, x: Tensor, shared_input: bool, widths: Tensor | None) -> Tensor:
        """Kim's CNN per member, where a member's batch was padded beyond its own width: the
        positions past it are zeroed before the max over time. Its ReLU features are >= 0, so
        the max is its own batch's (a zero can win only where every feature is zero, and then
        ReLU passes no gradient either way)."""
        net = self.nets[0]
        windows = [conv.kernel_size[0] for conv in net.convs]
        seeds = self.size
        if widths is None:
            widths = torch.full((seeds,), x.shape[-1], device=x.device)
        masks = self._masks(x.shape[0] if shared_input else x.shape[1]) if self.training else {}

        def member(params: dict, mask: dict, tokens: Tensor, width: Tensor) -> Tensor:
            embedded = F.embedding(tokens, params["embedding.weight"], net.embedding.padding_idx)
            embedded = embedded.transpose(1, 2)                                    # (B, emb, L)
            features = []
            for index, window in enumerate(windows):
                out = F.relu(F.conv1d(embedded, params[f"convs.{index}.weight"],
                                      params[f"convs.{index}.bias"]))      # (B, maps, L-w+1)
                inside = torch.arange(out.shape[-1], device=out.device) < width - window + 1
                features.append((out * inside).amax(dim=2))                      # (B, maps)
            joined = torch.cat(features, dim=1)
            if mask:
                joined = joined * mask["drop.mask"]
            return F.linear(joined, params["fc.weight"], params["fc.bias"])

        in_dims = (0, 0, None if shared_input else 0, 0)
        return vmap(member, in_dims=in_dims, randomness="error")(self.params, masks, x, widths)

    def after_backward(self) -> None:
        """Zero the padding rows' gradients, as nn.Embedding's own backward leaves them."""
        for name, row in self.padding_rows:
            grad = self.params[name].grad
            if grad is not None:
                grad[:, row].zero_()

    def _mlp_forward(self, x: Tensor) -> Tensor:
        """MLP layers as batched matmuls: (K, B, in) @ (K, in, out) + (K, 1, out)."""
        hidden = x.flatten(2)
        for index, layer in enumerate(self.nets[0].layers):
            if isinstance(layer, nn.Linear):
                weight = self.params[f"layers.{index}.weight"]                    # (K, out, in)
                bias = self.params[f"layers.{index}.bias"]                        # (K, out)
                hidden = StackedLinear.apply(hidden, weight, bias)
            else:
                hidden = ACTIVATIONS[type(layer)](hidden)
        return hidden

    @torch.no_grad()
    def unstack_into(self, member: int) -> nn.Module:
        """Member `member`'s module with its current weights and buffers (for its checkpoint)."""
        net = self.nets[member]
        for name, tensor in [*net.named_parameters(), *net.named_buffers()]:
            source = self.params.get(name)
            if source is None:
                source = self.buffers[name]
            tensor.copy_(source[member])
        return net
