"""The two task loops, classification and language modelling, read top to bottom.

One training epoch is a plain loop over the data layer's batches. Its running sums live on the
device and are read back (a host sync) only every `log_every` steps, for the progress bar and
the NaN check, and at the end of the epoch. The loop can stop between two steps, when a signal
asks it to, and be resumed from that batch: `EpochState` is everything it needs to go on.
The epoch's terminal line and the dead-layer warning are here too, beside the rows they show.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm import tqdm

import bng

from .distributed import Dist, all_sum, any_rank
from .errors import Diverged


@dataclass
class EpochState:
    """The running sums of one epoch, saved in a mid-epoch checkpoint."""

    batch: int = 0                           # batches done in this epoch
    loss_sum: torch.Tensor | None = None     # () sum of per-sample (per-token) losses
    correct: torch.Tensor | None = None      # () correct predictions (classification)
    count: float = 0.0                       # samples (tokens) seen: known on the host
    norm_sum: torch.Tensor | None = None     # (B,) sum of each block's grad norm over samples
    norm_steps: int = 0                      # steps sampled into norm_sum
    hidden: tuple | None = None              # the LSTM state carried into the next window
    seconds: float = 0.0                     # time spent in this epoch before an interruption

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, saved: dict) -> EpochState:
        saved = dict(saved)
        if "steps" in saved:    # an older version's state: it measured the norms at every step
            saved["norm_steps"] = saved.pop("steps")
        count = saved.get("count")  # and kept the count on the device (None before a step)
        saved["count"] = 0.0 if count is None else float(count)
        return cls(**saved)


@dataclass
class Task:
    """What one run trains: the pieces the loops need, built once by experiments.train."""

    model: torch.nn.Module           # what the step calls (maybe DDP- or compile-wrapped)
    net: torch.nn.Module             # the plain module, for eval and state_dict
    optimizer: torch.optim.Optimizer
    plan: bng.BlockPlan              # the blocks whose gradient norms are sampled
    data: object                     # the data layer's dataset (see docs/DESIGN.md)
    kind: str                        # "classification" or "lm"
    device: torch.device
    dist: Dist
    batch_size: int                  # per rank
    grad_norm_every: int             # sample the block gradient norms every this many steps
    amp: str = "off"
    log_every: int = 25
    top5: bool = False
    extra_step: list[Callable[[], None]] = field(default_factory=list)


def _autocast(task: Task):
    if task.amp == "bf16":
        return torch.autocast(task.device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _detach(hidden):
    return None if hidden is None else tuple(h.detach() for h in hidden)


def _forward(task: Task, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, hidden):
    """(logits flattened to (N, C) in fp32, targets (N,), new hidden state)."""
    with _autocast(task):
        if task.kind == "lm":
            logits, hidden = model(x, hidden)           # (B, T, V)
        else:
            logits = model(x)                           # (B, C)
    return logits.float().flatten(0, -2), y.flatten(), hidden


def train_epoch(task: Task, epoch: int, state: EpochState, should_stop: Callable[[], bool],
                show_progress: bool) -> bool:
    """Train one epoch from `state.batch` on; True when it ran to the end, False if stopped."""
    task.model.train()
    zero = torch.zeros((), device=task.device)
    state.loss_sum = zero.clone() if state.loss_sum is None else state.loss_sum.to(task.device)
    state.correct = zero.clone() if state.correct is None else state.correct.to(task.device)
    total = task.data.num_train_batches(task.batch_size)
    bar = tqdm(total=total, initial=state.batch, desc=f"epoch {epoch}", unit="batch",
               leave=False, dynamic_ncols=True, file=sys.stdout,
               disable=not (show_progress and sys.stdout.isatty()))
    hidden = state.hidden
    started = time.time() - state.seconds
    try:
        for x, y in task.data.train_batches(epoch, task.batch_size, start=state.batch):
            hidden = _detach(hidden)          # truncated BPTT: no gradient into the last window
            logits, targets, hidden = _forward(task, task.model, x, y, hidden)
            loss = F.cross_entropy(logits, targets)
            task.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if state.batch % task.grad_norm_every == 0:
                # (B,) block norms of the gradients as the optimizer gets them: a sample of the
                # per-layer diagnostics (every step: MLP-18 on digits ~10% slower).
                norms = bng.grad_norms(task.plan)
                state.norm_sum = norms if state.norm_sum is None else state.norm_sum.add_(norms)
                state.norm_steps += 1
            task.optimizer.step()
            for hook in task.extra_step:
                hook()
            # Per-step bookkeeping stays on the device, in place: three small kernels a step
            # (count_nonzero costs half of a bool .sum() on a CPU).
            n = targets.numel()
            state.loss_sum.add_(loss.detach(), alpha=n)
            if task.kind == "classification":
                state.correct.add_(torch.count_nonzero(logits.detach().argmax(-1) == targets))
            state.count += n
            state.batch += 1
            bar.update(1)
            if state.batch % task.log_every == 0 or state.batch == total:
                seen = float(state.count)
                running = state.loss_sum.item() / max(seen, 1.0)      # one sync
                if any_rank(task.dist, not math.isfinite(running), task.device):
                    raise Diverged(f"the training loss became {running} at epoch {epoch}, "
                                   f"batch {state.batch}")
                rate = seen * task.dist.world_size / max(time.time() - started, 1e-9)
                bar.set_postfix({"loss": f"{running:.4f}", "samples/s": f"{rate:.0f}"})
                stop = any_rank(task.dist, should_stop(), task.device)
            else:
                stop = (not task.dist.enabled) and should_stop()
            if stop and state.batch < total:
                state.hidden = _detach(hidden)
                return False
    finally:
        bar.close()
    state.hidden = None
    return True


def epoch_metrics(task: Task, state: EpochState) -> dict:
    """The epoch's training metrics, summed over ranks: one sync."""
    count = state.loss_sum.new_tensor(float(state.count))
    sums = all_sum(task.dist, torch.stack([state.loss_sum, state.correct, count]))
    loss_sum, correct, count = sums.tolist()
    count = max(count, 1.0)
    out = {"train_loss": loss_sum / count}
    if task.kind == "classification":
        out["train_acc"] = correct / count
    else:
        out["train_ppl"] = math.exp(min(out["train_loss"], 50.0))
    return out


@torch.no_grad()
def evaluate(task: Task) -> dict:
    """Loss and accuracy (top-1/top-5) or perplexity on the data layer's test split.

    Every rank evaluates the whole split with the same weights, so no reduction is needed.
    """
    task.net.eval()
    zero = torch.zeros((), device=task.device)
    loss_sum, top1, top5 = zero.clone(), zero.clone(), zero.clone()     # sums over the split
    count = 0
    hidden = None
    for x, y in task.data.test_batches(task.batch_size):
        logits, targets, hidden = _forward(task, task.net, x, y, hidden)
        loss_sum += F.cross_entropy(logits, targets, reduction="sum")
        count += targets.numel()
        if task.top5:
            hits = logits.topk(min(5, logits.shape[-1]), dim=-1).indices == targets[:, None]
            top1 += hits[:, 0].sum()                                       # hits: (N, k)
            top5 += hits.any(-1).sum()
        elif task.kind == "classification":
            top1 += torch.count_nonzero(logits.argmax(-1) == targets)
    loss_sum, top1, top5 = torch.stack([loss_sum, top1, top5]).tolist()   # one sync
    count = max(count, 1.0)
    out = {"test_loss": loss_sum / count}
    if task.kind == "classification":
        out["test_acc"] = top1 / count
        if task.top5:
            out["test_top1"], out["test_top5"] = top1 / count, top5 / count
    else:
        out["test_ppl"] = math.exp(min(out["test_loss"], 50.0))
    return out


def warn_dead_layers(row: dict, epoch: int, main: bool, warned: frozenset[str],
                     norm_dtype: object = None, prefix: str = "") -> frozenset[str]:
    """Warn about layers whose gradient was zero all epoch, each layer once: the line comes only
    when a layer not named before joins them (dead layers come and go from epoch to epoch; a
    line for each change would flood the output). `prefix` leads the line (a stacked run names
    its seed). Returns every layer named so far."""
    dead = [name for name, mean in row["grad_norms"].items() if mean == 0.0]
    new = [name for name in dead if name not in warned]
    if new and main:
        print(prefix + dead_layer_line(epoch, new, norm_dtype), flush=True)
    return warned | frozenset(dead)


def dead_layer_line(epoch: int, names: list[str], norm_dtype: object = None) -> str:
    """One line of at most ~150 characters. The float64 advice only where the run does not
    already use it: entries below ~1e-19 square to 0 in float32, so a tiny gradient reads 0."""
    shown = ", ".join(names[:2]) + (f" and {len(names) - 2} more" if len(names) > 2 else "")
    line = f"[warning] epoch {epoch}: zero gradient all epoch in {shown}; they do not move"
    if str(norm_dtype) not in ("float64", "torch.float64", "double"):
        line += "; if tiny, not zero: optim.normalize.norm_dtype=float64"
    return line


def epoch_line(row: dict, epochs: int) -> str:
    parts = [f"epoch {row['epoch']:>3}/{epochs}", f"train_loss {row['train_loss']:.4f}",
             f"test_loss {row['test_loss']:.4f}"]
    for key in ("test_acc", "test_top5", "test_ppl"):
        if key in row:
            parts.append(f"{key} {row[key]:.4f}")
    parts += [f"lr {row['lr']:.3g}", f"{row['samples_per_s']:.0f} samples/s",
              f"{row['epoch_seconds']:.1f}s"]
    return "  ".join(parts)
