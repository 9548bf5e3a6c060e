"""The classification loop of K stacked seeds, read top to bottom as experiments/loops.py's.

Each step takes one batch per seed, each from that seed's own epoch order (the data layer's
(seed, epoch) generator), stacks them to (K, B, ...), and runs one forward, one backward and
one optimizer step for all seeds. The loss is the sum of the seeds' batch means, so seed k's
gradient is exactly the gradient of its own loss. Running sums are (K,) tensors on the device,
read back every `log_every` steps (the NaN check, as loops.train_epoch does it per seed).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .loops import EpochState, Task
from .stacked_model import StackedNet
from .stacked_optim import StackedBlocks, stacked_optimizer


@dataclass
class StackedTask:
    """What the K seeds train: one stacked net, optimizer and plan, and each seed's data."""

    net: StackedNet
    optimizer: torch.optim.Optimizer
    plan: StackedBlocks              # the blocks whose gradient norms are sampled
    datasets: list                   # one per seed: the same data, each with its seed's order
    device: torch.device
    batch_size: int
    log_every: int
    grad_norm_every: int
    extra_step: list[Callable[[], None]] = field(default_factory=list)


def stack_tasks(tasks: list[Task], generators: list[torch.Generator]) -> StackedTask:
    """One stacked task from K seeds' tasks (each built as its run builds it, maybe resumed):
    their nets, optimizer states and data, and each seed's generator for its dropout masks."""
    nets = [task.net for task in tasks]
    net = StackedNet(nets, generators)
    net.record_dropout_shapes(next(iter(tasks[0].data.test_batches(2)))[0])
    names = {id(p): name for name, p in nets[0].named_parameters()}
    first = tasks[0]
    optimizer, plan = stacked_optimizer(first.optimizer,
                                        [task.optimizer.state_dict() for task in tasks],
                                        net.params, names, first.plan)
    stacked = StackedTask(net=net, optimizer=optimizer, plan=plan,
                          datasets=[task.data for task in tasks], device=first.device,
                          batch_size=first.batch_size, log_every=first.log_every,
                          grad_norm_every=first.grad_norm_every)
    max_norm = getattr(nets[0], "max_norm", None)
    if max_norm is not None:                  # Kim's constraint, on each seed's fc rows
        weight = net.params["fc.weight"]      # (K, C, F)

        def apply_max_norm() -> None:
            with torch.no_grad():
                rows = weight.view(-1, weight.shape[-1])
                rows.copy_(torch.renorm(rows, p=2, dim=0, maxnorm=max_norm))
        stacked.extra_step.append(apply_max_norm)
    return stacked


@dataclass
class StackedSums:
    """The K seeds' running sums of one epoch: (K,) tensors; count is the same for all."""

    loss_sum: torch.Tensor
    correct: torch.Tensor
    count: float
    batch: int
    norm_sum: torch.Tensor | None    # (K, B)
    norm_steps: int

    @classmethod
    def gather(cls, states: list[EpochState], device: torch.device) -> StackedSums:
        """Stack the seeds' EpochStates (all at one batch of one epoch)."""
        def stacked(values):
            return torch.stack([torch.zeros((), device=device) if v is None else v.to(device)
                                for v in values])
        norms = None
        if states[0].norm_sum is not None:
            norms = torch.stack([s.norm_sum.to(device) for s in states])
        return cls(stacked(s.loss_sum for s in states), stacked(s.correct for s in states),
                   states[0].count, states[0].batch, norms, states[0].norm_steps)

    def scatter(self, states: list[EpochState], members: list[int]) -> None:
        """Write the sums back into the seeds' EpochStates (`members`: their rows here)."""
        for state, row in zip(states, members, strict=True):
            state.loss_sum, state.correct = self.loss_sum[row].clone(), self.correct[row].clone()
            state.count, state.batch, state.norm_steps = self.count, self.batch, self.norm_steps
            state.norm_sum = None if self.norm_sum is None else self.norm_sum[row].clone()


def train_epoch(task: StackedTask, epoch: int, sums: StackedSums,
                should_stop: Callable[[], bool], alive: Callable[[list[float]], None]) -> bool:
    """Train one epoch of every seed from `sums.batch` on; True when it ran to the end.
    `alive(running_losses)` hears the seeds' running mean losses at every check, and raises
    for the group or marks a seed diverged (experiments/stacked.py)."""
    task.net.train()
    total = task.datasets[0].num_train_batches(task.batch_size)
    seeds = len(task.datasets)
    streams = [data.train_batches(epoch, task.batch_size, start=sums.batch)
               for data in task.datasets]
    for batches in zip(*streams, strict=True):
        x, widths = stack_inputs([b[0] for b in batches])           # (K, B, ...)
        y = torch.stack([b[1] for b in batches])                     # (K, B)
        logits = task.net(x, widths=widths)                          # (K, B, C)
        losses = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(),
                                 reduction="none").view(seeds, -1).mean(1)      # (K,)
        task.optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        task.net.after_backward()
        if sums.batch % task.grad_norm_every == 0:
            norms = task.plan.grad_norms()                          # (K, B), before the step
            sums.norm_sum = norms if sums.norm_sum is None else sums.norm_sum.add_(norms)
            sums.norm_steps += 1
        task.optimizer.step()
        for hook in task.extra_step:
            hook()
        n = y.shape[1]
        sums.loss_sum.add_(losses.detach(), alpha=n)
        sums.correct.add_(torch.count_nonzero(logits.detach().argmax(-1) == y, dim=1))
        sums.count += n
        sums.batch += 1
        if sums.batch % task.log_every == 0 or sums.batch == total:
            alive((sums.loss_sum / max(sums.count, 1.0)).tolist())   # one sync
        if should_stop() and sums.batch < total:
            return False
    return True


def stack_inputs(inputs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The seeds' batches as one (K, B, ...) tensor. Sentence batches, each as wide as its own
    longest sentence, are right-padded with id 0 to the widest; `widths` (K,) keeps each one's
    own (None when all are alike)."""
    widths = [x.shape[-1] for x in inputs]
    if len(set(widths)) == 1:
        return torch.stack(inputs), None
    widest = max(widths)
    padded = [F.pad(x, (0, widest - x.shape[-1])) for x in inputs]
    return torch.stack(padded), torch.tensor(widths, device=inputs[0].device)


def epoch_metrics(sums: StackedSums) -> list[dict]:
    """Each seed's training metrics of the epoch: one sync."""
    loss, correct = torch.stack([sums.loss_sum, sums.correct.to(sums.loss_sum.dtype)]).tolist()
    count = max(sums.count, 1.0)
    return [{"train_loss": value / count, "train_acc": hits / count}
            for value, hits in zip(loss, correct, strict=True)]


@torch.no_grad()
def evaluate(task: StackedTask) -> list[dict]:
    """Each seed's loss and accuracy on the test split (one fixed order, shared by all)."""
    task.net.eval()
    seeds = len(task.datasets)
    loss_sum = torch.zeros(seeds, device=task.device)
    top1 = torch.zeros(seeds, device=task.device)
    count = 0
    for x, y in task.datasets[0].test_batches(task.batch_size):
        logits = task.net(x, shared_input=True).float()              # (K, B, C)
        targets = y.expand(seeds, -1)                                # (K, B)
        loss_sum += F.cross_entropy(logits.flatten(0, 1), targets.flatten(),
                                    reduction="none").view(seeds, -1).sum(1)
        top1 += torch.count_nonzero(logits.argmax(-1) == targets, dim=1)
        count += y.numel()
    loss, hits = torch.stack([loss_sum, top1]).tolist()
    count = max(count, 1)
    return [{"test_loss": value / count, "test_acc": right / count}
            for value, right in zip(loss, hits, strict=True)]


def finite(row: dict) -> list[str]:
    """The keys of `row` whose float value is no longer finite."""
    return [key for key, value in row.items()
            if isinstance(value, float) and not math.isfinite(value)]
