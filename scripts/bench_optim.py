"""Speed of bng against its torch base and a peer library, and of the suite's loop against a
hand-written one. Each part interleaves its variants repetition by repetition (noise from other
processes hits all alike; no variant runs twice in a row) and reports medians and ratios to a
baseline measured in the same run (the median of the per-repetition ratios):

- ``step``: ``optimizer.step()`` alone on fixed gradients (ResNet-110, MLP-18 and PTB-LSTM
  parameter sets): the torch optimizer (foreach=True), the bng optimizer built on it, its
  normalization alone ("hook"), a per-parameter-loop NG hook, and a lower bound on any
  in-place hook ("floor": one norm and one rescaling kernel over the >= 2-D gradients). Each
  variant has its own model, and the caches are flushed before every timed step.
- ``e2e``: forward + backward + step with ``zero_grad()``: ResNet-20 on CIFAR-shaped batches of
  128, MLP-18 on MNIST-shaped batches of 100, the PTB LSTM on 100 x 40 token windows; NG
  against its base (foreach=True both) and the base with the "floor" hook, each as several
  separately built copies (``--e2e-copies``); "noise": the base's copies against each other.
- ``loop``: the suite's epoch (``train_epoch`` with its bookkeeping and sampled diagnostics,
  ``epoch_metrics``, ``evaluate``; the optimizer of ``configs/optim/adam.yaml``) against a
  minimal hand-written epoch with its test pass: MLP-18 on digits, Adam, batch 20, with the
  default ``grad_norm_every`` and with the diagnostics at every step; ``--copies`` copies of
  each, and the hand-written copies against each other as the noise.
- ``peer`` (scripts/bench_peer.py): the step alone on ResNet-110's parameters, bng's
  per-tensor NG_adap (torch's SGD, momentum 0.9, ``block_normalize(mode="adap",
  blocks="param")``) against pytorch_optimizer's ``LARS`` with the same rule; the LARS copies
  against each other as the noise. Skipped, in one line, without pytorch_optimizer.

    python3 scripts/bench_optim.py                       # all four parts, ~4-5 min on 2 cores
    python3 scripts/bench_optim.py --parts step --repeats 50
    python3 scripts/bench_optim.py --parts e2e --e2e-repeats 150 --e2e-copies 4 --models MLP-18
    python3 scripts/bench_optim.py --parts loop --epochs 20 --copies 4
    python3 scripts/bench_optim.py --parts peer --threads 1 --clock cpu --repeats 120

Targets (2-core CPU): step alone on ResNet-110, AdamNG/Adam <= 1.15 and SGDMNG/SGDM <= 1.25;
end to end NG/base throughput >= 0.97; suite loop / hand loop throughput >= 0.98; NG_adap/LARS
step time <= 0.95.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import bng
import models

REPO = Path(__file__).resolve().parents[1]

PAIRS: dict[str, tuple[type[torch.optim.Optimizer], dict]] = {
    "SGDM": (torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4}),
    "Adam": (torch.optim.Adam, {"lr": 1e-3}),
    "AdaGrad": (torch.optim.Adagrad, {"lr": 1e-2}),
}


CLOCK = [time.perf_counter]  # or time.process_time: --clock cpu


class Timing(dict):
    """Seconds per call of each variant: ``t[name]`` is the median, ``t.ratio(a, b)`` the
    median over repetitions of ``a_r / b_r`` (pairs measured back to back, so slow drifts
    in the machine's load cancel)."""

    def __init__(self, samples: dict[str, list[float]]) -> None:
        super().__init__({k: statistics.median(v) for k, v in samples.items()})
        self.samples = samples

    def ratio(self, a: str, b: str) -> float:
        pairs = zip(self.samples[a], self.samples[b], strict=True)
        return statistics.median(x / y for x, y in pairs)

    def group_ratio(self, a: list[str], b: list[str]) -> float:
        """Median over repetitions of ``sum(a_r) / sum(b_r)``: copies of one variant summed,
        so that how each copy's memory happened to be laid out averages out."""
        sums_a = [sum(r) for r in zip(*(self.samples[k] for k in a), strict=True)]
        sums_b = [sum(r) for r in zip(*(self.samples[k] for k in b), strict=True)]
        return statistics.median(x / y for x, y in zip(sums_a, sums_b, strict=True))

    def noise(self, copies: list[str]) -> float | None:
        """``group_ratio`` of the first half of one variant's copies against the next half:
        identical code, so its distance from 1 is the run's noise; None for a single copy."""
        half = len(copies) // 2
        return self.group_ratio(copies[:half], copies[half:2 * half]) if half else None


def interleaved(variants: dict[str, Callable[[], object]], repeats: int, warmup: int,
                before: Callable[[], object] | None = None,
                clock: Callable[[], float] | None = None) -> Timing:
    """One call of each variant per repetition, in turn, each after ``before()`` (untimed). With
    three or more variants the order rotates by one each repetition, so that none always runs
    first; no variant ever runs twice in a row, which would find its own data still in the
    caches. ``clock``: what times a call (default: --clock's, CLOCK[0])."""
    now = clock or CLOCK[0]
    for _ in range(warmup):
        for run in variants.values():
            run()
    samples: dict[str, list[float]] = {k: [] for k in variants}
    names = list(variants)
    for r in range(repeats):
        shift = r % len(names) if len(names) > 2 else 0
        for name in names[shift:] + names[:shift]:
            if before is not None:
                before()
            start = now()
            variants[name]()
            samples[name].append(now() - start)
    return Timing(samples)


# --- step: the optimizer step alone ----------------------------------------------------------

def mlp18_mnist() -> nn.Module:
    return models.mlp(18, in_features=784)


def ptb_lstm() -> nn.Module:
    return models.lstm_lm(10000)


STEP_MODELS: dict[str, Callable[[], nn.Module]] = {
    "ResNet-110": models.resnet110, "MLP-18": mlp18_mnist, "PTB-LSTM": ptb_lstm,
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


def cache_flusher(megabytes: int = 128) -> Callable[[], None]:
    """Writing a buffer several times the size of the last-level cache (32 MB here) evicts
    every variant's tensors alike, so that each timed step starts from the same cold state
    whatever ran before it."""
    buffer = torch.zeros(megabytes * 2**20 // 4)

    def flush() -> None:
        buffer.add_(1.0)

    return flush


def floor_hook(optimizer: torch.optim.Optimizer, args: object, kwargs: object) -> None:
    """Less than any in-place normalization hook must do: one norm and one rescaling kernel
    over the gradients of the matrices and kernels (the >= 2-D tensors, nearly all the
    elements), with no block bookkeeping and nothing for the small tensors. Not a correct NG
    hook; a lower bound on the cost of one."""
    grads = [p.grad for group in optimizer.param_groups for p in group["params"]
             if p.grad is not None and p.grad.dim() >= 2]
    torch._foreach_mul_(grads, torch._foreach_reciprocal(torch._foreach_norm(grads)))


def step_variants(make_model: Callable[[], nn.Module], base: str) -> dict[str, Callable]:
    cls, kwargs = PAIRS[base]
    variants: dict[str, Callable] = {}
    for kind in ("base", "NG", "naive", "hook", "floor"):
        torch.manual_seed(0)
        model = make_model()
        for p in model.parameters():
            p.grad = torch.randn_like(p)
        opt = cls(model.parameters(), foreach=True, **kwargs)
        if kind in ("NG", "hook"):
            bng.block_normalize(opt, model, mode="ng")
        elif kind == "naive":
            opt.register_step_pre_hook(naive_ng_hook(bng.layer_blocks(model)))
        elif kind == "floor":
            opt.register_step_pre_hook(floor_hook)
        # "hook": the normalization alone (block norms, then the in-place rescaling)
        variants[kind] = opt.block_normalizer.normalize_ if kind == "hook" else opt.step
    return variants


def bench_step(repeats: int, only: list[str] | None) -> None:
    print(f"\n## step: optimizer.step() alone, median of {repeats} interleaved steps; "
          "ratios to the torch optimizer (foreach=True), median of per-step ratios")
    flush = cache_flusher()
    header = (f"{'params':<11} {'tensors':>7} {'numel':>9}  {'pair':<16} {'base ms':>8} "
              f"{'NG ms':>8} {'NG/base':>7} {'hook ms':>8} {'naive ms':>8} {'/base':>6} "
              f"{'floor/base':>10}")
    print(header + "\n" + "-" * len(header))
    for name, make in STEP_MODELS.items():
        if only and name not in only:
            continue
        params = list(make().parameters())
        numel = sum(p.numel() for p in params)
        for base in PAIRS:
            t = interleaved(step_variants(make, base), repeats, warmup=max(3, repeats // 10),
                            before=flush)
            print(f"{name:<11} {len(params):>7} {numel:>9}  {base + '/' + base + 'NG':<16} "
                  f"{t['base'] * 1e3:>8.3f} {t['NG'] * 1e3:>8.3f} {t.ratio('NG', 'base'):>7.3f} "
                  f"{t['hook'] * 1e3:>8.3f} {t['naive'] * 1e3:>8.3f} "
                  f"{t.ratio('naive', 'base'):>6.3f} {t.ratio('floor', 'base'):>10.3f}", flush=True)


# --- e2e: forward + backward + step ------------------------------------------------------------

def e2e_task(name: str) -> tuple[nn.Module, Callable[[nn.Module], torch.Tensor]]:
    """A model and its loss on one fixed batch of the stated shape."""
    g = torch.Generator().manual_seed(0)
    if name == "ResNet-20":
        model = models.resnet20()
        x, y = torch.randn(128, 3, 32, 32, generator=g), torch.randint(0, 10, (128,), generator=g)
        return model, lambda m: F.cross_entropy(m(x), y)
    if name == "MLP-18":
        model = models.mlp(18, in_features=784)
        x, y = torch.randn(100, 784, generator=g), torch.randint(0, 10, (100,), generator=g)
        return model, lambda m: F.cross_entropy(m(x), y)
    model = models.lstm_lm(10000)
    x = torch.randint(0, 10000, (100, 40), generator=g)
    y = torch.randint(0, 10000, (100, 40), generator=g)
    return model, lambda m: F.cross_entropy(m(x)[0].flatten(0, 1), y.flatten())


E2E = {"ResNet-20": "SGDM", "MLP-18": "Adam", "PTB-LSTM": "Adam"}


def bench_e2e(repeats: int, copies: int, pairs: list[str] | None, only: list[str] | None) -> None:
    print(f"\n## e2e: forward + backward + step, {copies} copies of each variant, {repeats} "
          "interleaved steps each; ratios: median over repetitions of the copies' summed step "
          "times; NG/base throughput (>= 0.97 is the target)")
    header = (f"{'model':<10} {'batch':<13} {'pair':<12} {'base ms':>9} {'NG ms':>9} "
              f"{'NG/base throughput':>18} {'floor/base':>10} {'noise':>6}")
    print(header + "\n" + "-" * len(header))
    shapes = {"ResNet-20": "128x3x32x32", "MLP-18": "100x784", "PTB-LSTM": "100x40 tokens"}
    for name, default_pair in E2E.items():
        if only and name not in only:
            continue
        for base in pairs or [default_pair]:
            cls, kwargs = PAIRS[base]
            groups = {kind: [f"{kind} #{c}" for c in range(copies)]
                      for kind in ("base", "NG", "floor")}
            variants = {}
            for kind, names in groups.items():
                for copy in names:
                    torch.manual_seed(0)
                    model, loss_of = e2e_task(name)
                    opt = cls(model.parameters(), foreach=True, **kwargs)
                    if kind == "NG":
                        bng.block_normalize(opt, model, mode="ng")
                    elif kind == "floor":
                        opt.register_step_pre_hook(floor_hook)

                    def step(model=model, opt=opt, loss_of=loss_of) -> None:
                        opt.zero_grad()
                        loss_of(model).backward()
                        opt.step()

                    variants[copy] = step
            t = interleaved(variants, repeats, warmup=2)
            ms = {kind: statistics.median(t[k] for k in names) * 1e3
                  for kind, names in groups.items()}
            noise = t.noise(groups["base"])
            print(f"{name:<10} {shapes[name]:<13} {base + '/' + base + 'NG':<12} "
                  f"{ms['base']:>9.1f} {ms['NG']:>9.1f} "
                  f"{t.group_ratio(groups['base'], groups['NG']):>18.3f} "
                  f"{t.group_ratio(groups['base'], groups['floor']):>10.3f} "
                  f"{'-' if noise is None else f'{noise:.3f}':>6}", flush=True)
    if copies > 1:
        print("noise: the first half of the base's copies against as many others (same code)")


# --- loop: the suite's epoch against a hand-written one ----------------------------------------

def bench_loop(epochs: int, copies: int) -> None:
    from hydra import compose, initialize_config_dir

    from data import build_dataset
    from experiments.distributed import Dist
    from experiments.loops import EpochState, Task, epoch_metrics, evaluate, train_epoch
    from experiments.optim import build_optimizer

    # The config `python run.py dataset=digits model=mlp18 optim=adam` trains with.
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base=None):
        cfg = compose("config", overrides=["dataset=digits", "model=mlp18", "optim=adam"])
    optim_cfg, dataset_cfg = cfg.optim, cfg.dataset
    batch = int(dataset_cfg.train.batch_size)
    data = build_dataset(dataset_cfg, device="cpu", seed=1)  # digits: bundled, no files
    device = torch.device("cpu")

    every = int(cfg.grad_norm_every)
    torch.manual_seed(1)
    init = models.mlp(18, in_features=64).state_dict()

    def suite_epoch(grad_norm_every: int) -> Callable[[], None]:
        net = models.mlp(18, in_features=64)
        net.load_state_dict(init)
        optimizer, plan = build_optimizer(optim_cfg, net)
        task = Task(model=net, net=net, optimizer=optimizer, plan=plan, data=data,
                    kind="classification", device=device, dist=Dist(), batch_size=batch,
                    grad_norm_every=grad_norm_every)
        epoch = [0]

        def run() -> None:
            epoch[0] += 1
            state = EpochState()
            train_epoch(task, epoch[0], state, lambda: False, show_progress=False)
            epoch_metrics(task, state)
            evaluate(task)

        return run

    def hand_epoch() -> Callable[[], None]:
        net = models.mlp(18, in_features=64)
        net.load_state_dict(init)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        epoch = [0]

        def run() -> None:
            epoch[0] += 1
            net.train()
            for x, y in data.train_batches(epoch[0], batch):
                opt.zero_grad()
                F.cross_entropy(net(x), y).backward()
                opt.step()
            net.eval()
            correct = torch.zeros(())
            with torch.no_grad():
                for x, y in data.test_batches(batch):
                    correct += (net(x).argmax(-1) == y).sum()
            correct.item()

        return run

    # Each variant runs as `copies` separately built copies, summed per repetition: where a
    # copy's tensors happen to lie in memory moves one copy's epoch by up to ~5% on this VM.
    makers = {"hand": hand_epoch, f"suite, grad_norm_every={every} (default)":
              lambda: suite_epoch(every), "suite, grad_norm_every=1": lambda: suite_epoch(1)}
    groups = {name: [f"{name} #{c}" for c in range(copies)] for name in makers}
    variants = {copy: makers[name]() for name, names in groups.items() for copy in names}
    steps = data.num_train_batches(batch)
    print(f"\n## loop: one epoch ({steps} steps of {batch}) plus its test pass, MLP-18 on digits, "
          f"Adam; {copies} copies of each variant, {epochs} interleaved epochs each; ratios: "
          "median over repetitions of the copies' summed epoch times")
    t = interleaved(variants, epochs, warmup=2)
    hand = groups["hand"]
    print(f"{'loop':<36} {'ms/epoch':>9} {'throughput/hand':>16}")
    for name, names in groups.items():
        ms = statistics.median(t[k] for k in names) * 1e3
        print(f"{name:<36} {ms:>9.1f} {t.group_ratio(hand, names):>16.3f}")
    noise = t.noise(hand)
    if noise is not None:
        print(f"noise: the first half of the hand-written copies against as many others, same code: "
              f"{noise:.3f}")
    print("target: the default suite >= 0.98 of the hand-written loop's throughput")


def positive(text: str) -> int:
    """argparse type: an integer of at least 1, or a one-line usage error."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="*", default=["step", "e2e", "loop", "peer"],
                        choices=["step", "e2e", "loop", "peer"])
    parser.add_argument("--threads", type=positive, default=2, help="torch.set_num_threads")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="cpu: this process's CPU time (time.process_time), which leaves out "
                             "the time other processes hold the cores; meaningful with --threads 1")
    parser.add_argument("--repeats", type=positive, default=40, help="steps per variant (step, "
                        "peer)")
    parser.add_argument("--e2e-repeats", type=positive, default=10, help="steps per variant (e2e)")
    parser.add_argument("--e2e-copies", type=positive, default=2, help="separately built "
                        "copies of each variant (e2e)")
    parser.add_argument("--e2e-pairs", nargs="*", choices=list(PAIRS),
                        help="base optimizers for e2e (default: SGDM for ResNet-20, else Adam)")
    parser.add_argument("--models", nargs="*", help="only these models in step/e2e "
                        "(ResNet-110, ResNet-20, MLP-18, PTB-LSTM)")
    parser.add_argument("--epochs", type=positive, default=20, help="epochs per copy (loop)")
    parser.add_argument("--copies", type=positive, default=4, help="separately built copies of each "
                        "loop variant (loop)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.clock == "cpu":
        CLOCK[0] = time.process_time
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.clock} clock")
    if "step" in args.parts:
        bench_step(args.repeats, args.models)
    if "e2e" in args.parts:
        bench_e2e(args.e2e_repeats, args.e2e_copies, args.e2e_pairs, args.models)
    if "loop" in args.parts:
        bench_loop(args.epochs, args.copies)
    if "peer" in args.parts:
        from bench_peer import bench_peer  # imports this module's helpers

        bench_peer(args.repeats)


if __name__ == "__main__":
    main()
