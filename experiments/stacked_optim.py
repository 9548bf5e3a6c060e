"""The optimizer of K stacked seeds: each seed's block norms its own, each seed's state its own.

The block normalization is bng's (`bng.functional.block_scales`, the one definition of the
factors) over a block plan that a member's own optimizer built (`bng.BlockPlan`, the one
definition of a block), mapped onto the stacked tensors: block i of seed k is the (k, ...)
slices of block i's tensors, so its norm is `sqrt(sum over them of ||t[k]||^2)`, a (K, B)
table. The step itself is the member's torch optimizer class over the stacked tensors: SGD,
Adam, AdamW, Adagrad and RMSprop are elementwise, so seed k's slice of every state tensor
(momentum, moments, sums) moves exactly as its separate run's would. Other classes (bng's
AdaGradBNG keeps a block-wise factor) are not stacked: `stackable` says why.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor

import bng
from bng.functional import block_scales

ELEMENTWISE = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW, torch.optim.Adagrad,
               torch.optim.RMSprop)
SHARED_STATE = ("step",)   # per-parameter step counters: every seed has taken the same steps


def stackable(optimizer: torch.optim.Optimizer) -> str | None:
    """None when `optimizer`'s class steps elementwise (seeds can share one), else why not."""
    if type(optimizer) in ELEMENTWISE:
        return None
    return (f"{type(optimizer).__name__} is not an elementwise torch optimizer "
            f"({', '.join(c.__name__ for c in ELEMENTWISE)} are)")


class StackedBlocks:
    """A member's block plan over the stacked tensors: `tensors` in the plan's order, the
    block of each, and the (K, B) block norms of any list of such tensors."""

    def __init__(self, plan: bng.BlockPlan, stacked: dict[str, Tensor],
                 names: dict[int, str]) -> None:
        self.names = plan.names
        self.tensors = [stacked[names[id(p)]] for p in plan.params]       # each (K, *shape)
        self.block_of = plan.block_of
        self.blocks = torch.tensor(plan.block_of, device=self.tensors[0].device)   # (P,)
        self.num_blocks, self.dtype = plan.num_blocks, plan.norm_dtype

    def norms(self, tensors: list[Tensor | None]) -> Tensor:
        """(K, B) L2 norm of each seed's block; a missing tensor counts as zero."""
        size = self.tensors[0].shape[0]
        squared = torch.zeros(size, self.num_blocks, device=self.blocks.device, dtype=self.dtype)
        present = [k for k, t in enumerate(tensors) if t is not None]
        if present:
            parts = torch.stack([self._norm(tensors[k].detach().reshape(size, -1))
                                 for k in present], dim=1).square_()                # (K, P)
            squared.index_add_(1, self.blocks[present], parts)
        return squared.sqrt_()

    def _norm(self, rows: Tensor) -> Tensor:
        """(K,) norm of each row in the norm dtype; a dtype argument would copy the input
        even when it already is in that dtype."""
        wider = None if rows.dtype == self.dtype else self.dtype
        return torch.linalg.vector_norm(rows, dim=1, dtype=wider)

    def grad_norms(self) -> Tensor:
        """(K, B) norms of the present gradients."""
        return self.norms([t.grad for t in self.tensors])


class StackedNormalizer:
    """bng.block_normalize's hook for stacked seeds: a step pre-hook that rescales each seed's
    blocks by its own factors (mode ng, adap, clip or none) and records the (K, B) norms."""

    def __init__(self, blocks: StackedBlocks, mode: str, alpha: float, threshold: float) -> None:
        self.blocks, self.mode, self.alpha, self.threshold = blocks, mode, alpha, threshold
        self.last_norms: Tensor | None = None

    def __call__(self, optimizer: torch.optim.Optimizer, args: object, kwargs: object) -> None:
        norms = self.blocks.grad_norms()                                          # (K, B)
        self.last_norms = norms
        if self.mode == "none":
            return
        weights = None
        if self.mode == "adap":
            with torch.no_grad():
                weights = self.blocks.norms(self.blocks.tensors)
        scales = block_scales(norms, self.mode, weight_norms=weights, alpha=self.alpha,
                              threshold=self.threshold)                           # (K, B)
        for tensor, block in zip(self.blocks.tensors, self.blocks.block_of, strict=True):
            if tensor.grad is not None:
                factor = scales[:, block].to(tensor.grad.dtype)                   # (K,)
                tensor.grad.mul_(factor.view(-1, *([1] * (tensor.dim() - 1))))


def stacked_optimizer(member: torch.optim.Optimizer, member_states: list[dict],
                      stacked: dict[str, Tensor], names: dict[int, str],
                      plan: bng.BlockPlan) -> tuple[torch.optim.Optimizer, StackedBlocks]:
    """The member optimizer's class and settings over the stacked tensors (in the member's
    parameter order), with each member's state (`member_states`, their state_dicts) stacked in,
    and its normalization per seed. Returns it and the stacked diagnostics plan."""
    params = [stacked[names[id(p)]] for group in member.param_groups for p in group["params"]]
    optimizer = type(member)(params, **member.defaults)
    optimizer.load_state_dict(stack_states(member_states))
    normalizer = getattr(member, "block_normalizer", None)
    if normalizer is not None:
        hook = StackedNormalizer(StackedBlocks(normalizer.plan, stacked, names), normalizer.mode,
                                 normalizer.alpha, normalizer.threshold)
        optimizer.register_step_pre_hook(hook)
        optimizer.stacked_normalizer = hook
    return optimizer, StackedBlocks(plan, stacked, names)


def stack_states(states: list[dict]) -> dict:
    """K optimizer state_dicts of one class and layout as one over the stacked tensors."""
    first = states[0]
    stacked = {}
    for index, entry in first["state"].items():
        stacked[index] = {
            key: value if not torch.is_tensor(value)
            else value.clone() if key in SHARED_STATE
            else torch.stack([state["state"][index][key] for state in states])
            for key, value in entry.items()}
    return {"state": stacked, "param_groups": copy.deepcopy(first["param_groups"])}


def member_state(stacked: dict, member: int) -> dict:
    """Member `member`'s state_dict out of the stacked optimizer's (the inverse of
    stack_states): what its separate run's optimizer would hold."""
    state = {index: {key: value if not torch.is_tensor(value)
                     else value.clone() if key in SHARED_STATE else value[member].clone()
                     for key, value in entry.items()}
             for index, entry in stacked["state"].items()}
    return {"state": state, "param_groups": copy.deepcopy(stacked["param_groups"])}
