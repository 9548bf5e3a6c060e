"""The ``peer`` part of bench_optim: bng's per-tensor NG_adap against pytorch_optimizer's LARS.

Both take SGD with momentum 0.9 on ``α·‖w‖/‖g‖ · g`` per tensor (α = 0.02, the paper's best
NG_adap α, as LARS's trust coefficient; weight decay 0), on ResNet-110's parameters with fixed
random gradients: bng as ``block_normalize(SGD(..., foreach=True), model, mode="adap",
blocks="param")``, LARS with ``foreach=True``. LARS applies the factor to the >= 2-D tensors
only and leaves the 1-D ones unscaled; bng scales every tensor, so it does that much more work.
``optimizer.step()`` alone is timed, two copies of each, the caches flushed before every step
and the copies interleaved (bench_optim's ``interleaved``). The LARS copies against each other
give the run's noise; the two updates of the >= 2-D weights after one step from one state show
that both compute the same step. pytorch_optimizer is a bench-only dependency (``pip install -e
'.[bench]'``); without it the part says so in one line and is skipped.

    python3 scripts/bench_optim.py --parts peer --threads 1 --clock cpu --repeats 120
"""

from __future__ import annotations

import statistics

import torch
from bench_optim import cache_flusher, interleaved

import bng
import models

PEER_ALPHA = 0.02  # NG_adap's α (the paper's best), as LARS's trust coefficient


def peer_optimizer(kind: str) -> torch.optim.Optimizer:
    """SGD with momentum 0.9 on ``α·‖w‖/‖g‖ · g`` per tensor, over ResNet-110's parameters with
    fixed random gradients: bng's per-tensor NG_adap on torch's SGD (foreach=True), or
    pytorch_optimizer's LARS (foreach=True, weight decay 0), whose trust ratio is the same
    factor on the >= 2-D tensors (it leaves the 1-D ones unscaled)."""
    from pytorch_optimizer import LARS

    torch.manual_seed(0)
    model = models.resnet110()
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    if kind == "LARS":
        return LARS(model.parameters(), lr=0.1, momentum=0.9, trust_coefficient=PEER_ALPHA,
                    weight_decay=0.0, foreach=True)
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, foreach=True)
    return bng.block_normalize(sgd, model, mode="adap", blocks="param", alpha=PEER_ALPHA)


def bench_peer(repeats: int, copies: int = 2) -> None:
    try:
        import pytorch_optimizer  # noqa: F401
    except ImportError:
        print("\n## peer: skipped: pytorch_optimizer is not installed (pip install -e '.[bench]')")
        return
    print(f"\n## peer: optimizer.step() alone on ResNet-110's parameters, {copies} copies of "
          f"each, median of {repeats} interleaved steps, caches flushed before each; NG_adap/LARS "
          "step time (<= 0.95 is the target) and noise (the LARS copies against each other): "
          "medians over repetitions of the copies' summed step times")
    groups = {kind: [f"{kind} #{c}" for c in range(copies)] for kind in ("NG_adap", "LARS")}
    variants = {copy: peer_optimizer(kind).step for kind, names in groups.items()
                for copy in names}
    t = interleaved(variants, repeats, warmup=max(3, repeats // 10), before=cache_flusher())
    ms = {kind: statistics.median(t[k] for k in names) * 1e3 for kind, names in groups.items()}
    # The same update: after one step from one state, the >= 2-D tensors must agree.
    stepped = [peer_optimizer(kind) for kind in groups]
    for optimizer in stepped:
        optimizer.step()
    weights = [[p for group in opt.param_groups for p in group["params"]] for opt in stepped]
    gap = max((p - q).abs().max().item() for p, q in zip(*weights, strict=True) if p.dim() >= 2)
    noise = t.noise(groups["LARS"])
    print(f"{'LARS ms':>8} {'NG_adap ms':>10} {'NG_adap/LARS':>12} {'noise':>6} "
          f"{'max |gap| of the >= 2-D weights after one step':>47}")
    print(f"{ms['LARS']:>8.3f} {ms['NG_adap']:>10.3f} "
          f"{t.group_ratio(groups['NG_adap'], groups['LARS']):>12.3f} "
          f"{'-' if noise is None else f'{noise:.3f}':>6} {gap:>47.1e}", flush=True)
