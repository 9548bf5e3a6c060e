"""Optimizer step time: bng's block-normalized optimizers against their torch base.

For each parameter set (MLP-18, CIFAR ResNet-110, PTB LSTM) and each pair (SGDM/SGDMNG,
Adam/AdamNG, AdaGrad/AdaGradNG) it times ``optimizer.step()`` on gradients that stay the
same tensors from step to step, as with ``zero_grad(set_to_none=False)``:

- ``base``: the torch optimizer (foreach=True);
- ``NG flat``: the bng optimizer as built (after two steps its gradients are views of one
  flat buffer, see :class:`bng.normalize.BlockNormalizer`);
- ``NG foreach``: the bng optimizer with ``flat_grads=False``, the path taken when the
  gradients are new tensors every step (torch's default ``zero_grad()``);
- ``naive``: a per-parameter-loop NG hook, as a second reference.

Variants are interleaved step by step so that CPU noise from other processes hits all of
them alike; the table reports medians and ratios to the base.

    python3 scripts/bench_optim.py            # full run
    python3 scripts/bench_optim.py --quick    # a few seconds
Targets (2-core CPU, ResNet-110): AdamNG/Adam <= 1.10, SGDMNG/SGDM <= 1.25.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import bng  # noqa: E402


def mlp18() -> nn.Module:
    """784-100x16-10: 17 Linear layers, 34 tensors."""
    widths = [784] + [100] * 16 + [10]
    return nn.Sequential(*[nn.Linear(a, b) for a, b in zip(widths, widths[1:], strict=False)])


def resnet110() -> nn.Module:
    """CIFAR ResNet-110's parameter tensors (option A shortcuts): 329 tensors, 1.73M."""
    layers: list[nn.Module] = [nn.Conv2d(3, 16, 3, bias=False), nn.BatchNorm2d(16)]
    in_ch = 16
    for width in (16, 32, 64):
        for _ in range(18):
            layers += [nn.Conv2d(in_ch, width, 3, bias=False), nn.BatchNorm2d(width),
                       nn.Conv2d(width, width, 3, bias=False), nn.BatchNorm2d(width)]
            in_ch = width
    layers.append(nn.Linear(64, 10))
    return nn.Sequential(*layers)


def ptb_lstm() -> nn.Module:
    """PTB LSTM: vocab 10000, embedding 200, 2x200 LSTM, decoder."""
    model = nn.Module()
    model.embedding = nn.Embedding(10000, 200)
    model.lstm = nn.LSTM(200, 200, num_layers=2)
    model.decoder = nn.Linear(200, 10000)
    return model


MODELS: dict[str, Callable[[], nn.Module]] = {
    "MLP-18": mlp18, "ResNet-110": resnet110, "PTB-LSTM": ptb_lstm,
}
PAIRS: dict[str, tuple[type[torch.optim.Optimizer], dict]] = {
    "SGDM": (torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4}),
    "Adam": (torch.optim.Adam, {"lr": 1e-3}),
    "AdaGrad": (torch.optim.Adagrad, {"lr": 1e-2}),
}


def naive_ng_hook(blocks: dict[str, list[nn.Parameter]]) -> Callable:
    """Per-parameter loop (one norm and one mul kernel per tensor), no host sync."""

    def hook(optimizer: torch.optim.Optimizer, args: object, kwargs: object) -> None:
        for params in blocks.values():
            grads = [p.grad for p in params if p.grad is not None]
            norm = torch.stack([g.norm() for g in grads]).norm()
            scale = torch.where(norm > 0, norm.reciprocal(), 0.0)
            for g in grads:
                g.mul_(scale)

    return hook


def make_variants(make_model: Callable[[], nn.Module], base: str) -> dict[str, Callable]:
    cls, kwargs = PAIRS[base]
    variants: dict[str, Callable] = {}
    for kind in ("base", "flat", "foreach", "naive"):
        torch.manual_seed(0)
        model = make_model()
        for p in model.parameters():
            p.grad = torch.randn_like(p)
        params = list(model.parameters())
        if kind in ("flat", "foreach"):
            opt = bng.build(model, base=cls, mode="ng", foreach=True,
                            flat_grads=kind == "flat", **kwargs)
        else:
            opt = cls(params, foreach=True, **kwargs)
            if kind == "naive":
                opt.register_step_pre_hook(naive_ng_hook(bng.layer_blocks(model)))
        variants[kind] = opt.step
    return variants


def time_interleaved(variants: dict[str, Callable], repeats: int, warmup: int) -> dict[str, float]:
    for _ in range(warmup):
        for step in variants.values():
            step()
    samples: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(repeats):
        for kind, step in variants.items():
            start = time.perf_counter()
            step()
            samples[kind].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a few seconds)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    repeats = args.repeats or (7 if args.quick else 100)
    warmup = 2 if args.quick else 10
    print(f"torch {torch.__version__}, {args.threads} thread(s), median of {repeats} steps, "
          f"interleaved; ratios are to the base torch optimizer (foreach=True)")
    header = (f"{'params':<11} {'tensors':>7} {'numel':>9}  {'optimizer':<18} {'base ms':>8} "
              f"{'NG flat':>8} {'/base':>6} {'NG foreach':>10} {'/base':>6} "
              f"{'naive':>8} {'/base':>6}")
    print(header)
    print("-" * len(header))
    for model_name in args.models:
        params = list(MODELS[model_name]().parameters())
        numel = sum(p.numel() for p in params)
        for base in PAIRS:
            t = time_interleaved(make_variants(MODELS[model_name], base), repeats, warmup)
            ms = {k: v * 1e3 for k, v in t.items()}
            print(f"{model_name:<11} {len(params):>7} {numel:>9}  {base + '/' + base + 'NG':<18} "
                  f"{ms['base']:>8.3f} {ms['flat']:>8.3f} {t['flat'] / t['base']:>6.3f} "
                  f"{ms['foreach']:>10.3f} {t['foreach'] / t['base']:>6.3f} "
                  f"{ms['naive']:>8.3f} {t['naive'] / t['base']:>6.3f}", flush=True)


if __name__ == "__main__":
    main()
