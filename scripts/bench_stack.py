"""K seeds trained stacked in one process against the same K seeds trained one after another:
seeds x epochs per second, on the same threads, interleaved.

Each repetition trains one epoch of every variant, in turn:
- ``separate``: K seeds, one after another, each through the suite's own epoch
  (experiments.loops.train_epoch) with the optimizer its config builds;
- ``stacked``: the same K seeds as one stacked task (experiments.stacked_loop), built from
  those seeds' tasks as `stack_seeds=K` builds it;
- ``separate-again``: the separate seeds' code once more, on its own copies: its ratio to
  ``separate`` is the run's noise (identical code; its distance from 1 is what a ratio can
  not resolve).
The data are random tensors of the real shapes (no files): MNIST (784 pixels, batch 100) for
the MLPs, RT sentences (vocabulary 18,766, 5-56 tokens, batch 50) for Kim's CNN, CIFAR
(3x32x32, the crop-and-flip augmentation, batch 128) for the ResNets. The speedup is the median
over repetitions of separate / stacked epoch time; seeds x epochs per second are K / median time.

    python scripts/bench_stack.py --models MLP-18 --seeds 10 --threads 1 --clock cpu
    python scripts/bench_stack.py --models KimCNN ResNet-20 --seeds 4 --threads 1 --batches 3

Target (2-core CPU, one thread): MLP-18 at K = 10 stacked >= 2x the separate runs.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from bench_optim import interleaved

REPO = Path(__file__).resolve().parents[1]

# model name -> (dataset, model, optimizer config names, batch size): the paper's settings
MODELS = {
    "MLP-18": ("mnist", "mlp18", "adamng"),
    "MLP-6": ("mnist", "mlp6", "adamng"),
    "KimCNN": ("rt", "kimcnn", "adamng"),
    "ResNet-20": ("cifar10", "resnet20", "sgdmng"),
    "ResNet-56": ("cifar10", "resnet56", "sgdmng"),
}
RT_VOCAB = 18_766           # Kim's rt-polarity vocabulary, padding and unknown included
RT_LENGTHS = (5, 56)        # its sentences' token counts, shortest and longest


def config(name: str):
    from hydra import compose, initialize_config_dir

    dataset, model, optim = MODELS[name]
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base=None):
        cfg = compose("config", overrides=[f"dataset={dataset}", f"model={model}",
                                           f"optim={optim}"])
    if dataset == "rt":
        from omegaconf import OmegaConf

        OmegaConf.update(cfg, "dataset.vocab_size", RT_VOCAB)
    return cfg


def synthetic_data(cfg, batches: int, device: torch.device, seed: int):
    """A dataset of the config's shapes with `batches` training batches, random contents."""
    from data.text import SentenceDataset
    from data.vision import DeviceDataset

    size = batches * int(cfg.batch_size)
    generator = torch.Generator().manual_seed(0)
    if cfg.dataset.name == "rt":
        def split(n: int) -> dict:
            lengths = torch.randint(*RT_LENGTHS, (n,), generator=generator)
            x = torch.randint(2, RT_VOCAB, (n, RT_LENGTHS[1]), generator=generator)
            x[torch.arange(RT_LENGTHS[1]) >= lengths[:, None]] = 0       # id 0 pads
            return {"x": x, "lengths": lengths, "y": torch.randint(0, 2, (n,))}
        return SentenceDataset(split(size), split(100), [""] * RT_VOCAB, 5, device, seed)
    shape = (3, 32, 32) if cfg.dataset.name == "cifar10" else (int(cfg.dataset.in_features),)
    images = torch.randint(0, 256, (size + 100, *shape), generator=generator, dtype=torch.uint8)
    labels = torch.randint(0, 10, (size + 100,), generator=generator)
    return DeviceDataset(images[:size], labels[:size], images[size:], labels[size:],
                         prepare=lambda t: t.float().div_(255.0), device=device, seed=seed,
                         augment=cfg.dataset.name == "cifar10")


def seed_tasks(cfg, seeds: int, batches: int, device: torch.device) -> list:
    """K tasks, each as train.py builds a seed's: weights after torch.manual_seed(seed), the
    config's optimizer and block plan, its own data order."""
    from hydra.utils import instantiate

    from experiments.distributed import Dist
    from experiments.loops import Task
    from experiments.optim import build_optimizer

    data = synthetic_data(cfg, batches, device, seed=1)
    tasks = []
    for seed in range(1, seeds + 1):
        torch.manual_seed(seed)
        net = instantiate(cfg.model.net).to(device)
        optimizer, plan = build_optimizer(cfg.optim, net)
        seed_data = copy.copy(data)
        seed_data.seed = seed
        tasks.append(Task(model=net, net=net, optimizer=optimizer, plan=plan, data=seed_data,
                          kind="classification", device=device, dist=Dist(),
                          batch_size=int(cfg.batch_size), log_every=int(cfg.log_every),
                          grad_norm_every=int(cfg.grad_norm_every)))
    return tasks


def separate_epoch(tasks: list) -> Callable[[], None]:
    from experiments.loops import EpochState, train_epoch

    def run() -> None:
        for task in tasks:
            train_epoch(task, 1, EpochState(), lambda: False, show_progress=False)
    return run


def stacked_epoch(tasks: list) -> Callable[[], None]:
    from experiments.loops import EpochState
    from experiments.stacked_loop import StackedSums, stack_tasks, train_epoch

    generators = [torch.Generator().manual_seed(seed) for seed in range(len(tasks))]
    task = stack_tasks(tasks, generators)

    def run() -> None:
        sums = StackedSums.gather([EpochState() for _ in tasks], task.device)
        train_epoch(task, 1, sums, lambda: False, lambda losses: None)
    return run


def bench(name: str, seeds: int, batches: int, repeats: int, device: torch.device,
          batch_size: int | None = None, clock: Callable[[], float] = time.perf_counter) -> dict:
    cfg = config(name)
    if batch_size is not None:
        cfg.batch_size = batch_size
    variants = {"separate": separate_epoch(seed_tasks(cfg, seeds, batches, device)),
                "stacked": stacked_epoch(seed_tasks(cfg, seeds, batches, device)),
                "separate-again": separate_epoch(seed_tasks(cfg, seeds, batches, device))}
    timing = interleaved(variants, repeats=repeats, warmup=1, clock=clock)
    return {"model": name, "seeds": seeds, "batches": batches,
            "separate": seeds / timing["separate"], "stacked": seeds / timing["stacked"],
            "speedup": timing.ratio("separate", "stacked"),
            "noise": timing.ratio("separate-again", "separate")}


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=["MLP-18"])
    parser.add_argument("--seeds", type=positive, nargs="+", default=[10],
                        help="K, the seeds stacked (several: one row each)")
    parser.add_argument("--batches", type=positive, default=20, help="training batches an epoch")
    parser.add_argument("--repeats", type=positive, default=5, help="interleaved repetitions")
    parser.add_argument("--threads", type=positive, default=1, help="torch threads, all variants")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--batch-size", type=positive, default=None,
                        help="instead of the paper's (a tiny check of the script)")
    parser.add_argument("--json", action="store_true", help="one JSON object a row instead")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="cpu: this process's CPU time, without the time others hold the "
                             "cores (one thread only; a GPU's work is not CPU time)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda, and no CUDA device is visible; use --device cpu",
              file=sys.stderr)
        sys.exit(2)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    if not args.json:
        print(f"# {args.threads} thread(s) on {device}, {args.clock} clock, "
              f"{args.repeats} interleaved repetitions; "
              "seeds x epochs/s = K / median epoch time; noise = separate code against itself")
        print("| model | K | batches/epoch | separate seeds x epochs/s | stacked | speedup | "
              "noise |")
        print("|---|---|---|---|---|---|---|")
    for name in args.models:
        for seeds in args.seeds:
            row = bench(name, seeds, args.batches, args.repeats, device, args.batch_size, clock)
            if args.json:
                print(json.dumps(row), flush=True)
                continue
            print(f"| {name} | {row['seeds']} | {row['batches']} | {row['separate']:.3f} | "
                  f"{row['stacked']:.3f} | {row['speedup']:.2f}x | {row['noise']:.3f} |",
                  flush=True)


if __name__ == "__main__":
    main()
