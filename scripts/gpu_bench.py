"""The measuring half of `make gpu-check`: runs a list of items, one JSON line per result.

Run by scripts/gpu_check.py as a child process, so a step that hangs or overruns is killed
without losing what was measured before it. Each item prints `@@ {"id": ..., "event":
"start"}` when it begins and `@@ {... "event": "result"}` when it ends.

Item kinds (dicts; see gpu_check.py for the lists it sends):
- train: one model's whole training step as the engine takes it (zero_grad, forward under the
  item's autocast, cross-entropy, backward, SGDMNG step, and every `grad_norm_every`-th step the
  block norms summed on the device) on synthetic device tensors of the real shapes; median of
  timed windows; then the eager forward in eval mode (the engine evaluates with the plain
  module). With `duration` and `go_file` it instead says `ready` after warming up, waits for
  the go file, and counts steps for `duration` seconds (processes that train at the same time).
- data: the CIFAR data layer on the device (crop + flip batches of a fixture file set).
- optim: optimizer.step() on ResNet-110's parameters: bng's NG against torch's foreach and
  fused optimizers, interleaved.

    python scripts/gpu_bench.py --device cuda items.json
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import statistics
import sys
import tempfile
import time
import traceback
from collections import deque
from pathlib import Path

import torch
import torch.nn.functional as F

import bng

REPO = Path(__file__).resolve().parents[1]

# bench name -> (configs/model name, the dataset fields the model config reads)
MODELS = {
    **{f"resnet{d}": (f"resnet{d}", {"num_classes": 10}) for d in (20, 32, 44, 56, 110)},
    "preact_resnet34": ("preact_resnet34", {"num_classes": 1000}),
    **{f"lstm_bptt{t}": ("lstm", {"vocab_size": 10_000}) for t in (40, 400, 1000)},
    "kimcnn": ("kimcnn", {"vocab_size": 18_765, "num_classes": 2, "windows": [3, 4, 5]}),
    **{f"mlp{d}": (f"mlp{d}", {"in_features": 784, "num_classes": 10}) for d in (6, 12, 18)},
}


def emit(payload: dict) -> None:
    print("@@ " + json.dumps(payload), flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_model(name: str, device: torch.device) -> tuple[torch.nn.Module, object]:
    """The net of configs/model/<name>.yaml on a stand-in dataset, and its norm_dtype."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    config, dataset = MODELS[name]
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base=None):
        model = compose("config", overrides=[f"model={config}"]).model   # its base merged in
    cfg = OmegaConf.merge({"dataset": dataset}, {"model": OmegaConf.to_container(model)})
    torch.manual_seed(0)
    net = instantiate(cfg.model.net).to(device)
    if device.type == "cuda" and (name.startswith("resnet") or name.startswith("preact")):
        net = net.to(memory_format=torch.channels_last)      # as the engine does on CUDA
    return net, cfg.model.get("norm_dtype")


def grad_norm_every() -> int:
    """The engine's default: the loop samples the block norms every this many steps."""
    from omegaconf import OmegaConf

    return int(OmegaConf.load(REPO / "configs" / "config.yaml").grad_norm_every)


def synthetic_batch(item: dict, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(x, y, samples per step) of the item's shape: images, token windows or sentences."""
    g = torch.Generator().manual_seed(0)
    name, batch = item["name"], item["batch"]
    if name.startswith("lstm"):
        x = torch.randint(0, 10_000, (batch, item["bptt"] + 1), generator=g)
        return x[:, :-1].to(device), x[:, 1:].to(device), batch * item["bptt"]
    if name == "kimcnn":
        x = torch.randint(2, 18_765, (batch, item["length"]), generator=g)
        return x.to(device), torch.randint(0, 2, (batch,), generator=g).to(device), batch
    if name.startswith("mlp"):
        x = torch.rand(batch, 784, generator=g)
        return x.to(device), torch.randint(0, 10, (batch,), generator=g).to(device), batch
    size = item["size"]
    classes = 1000 if name.startswith("preact") else 10
    x = torch.randn(batch, 3, size, size, generator=g)
    return x.to(device), torch.randint(0, classes, (batch,), generator=g).to(device), batch


def timed_windows(run, device: torch.device, window_s: float, windows: int) -> float:
    """Median seconds per call over `windows` windows of about `window_s` each."""
    sync(device)
    start = time.perf_counter()
    run()
    sync(device)
    calls = max(1, min(500, int(window_s / max(time.perf_counter() - start, 1e-6))))
    per_call = []
    for _ in range(windows):
        sync(device)
        start = time.perf_counter()
        for _ in range(calls):
            run()
        sync(device)
        per_call.append((time.perf_counter() - start) / calls)
    return statistics.median(per_call)


def train_item(item: dict, device: torch.device) -> dict:
    net, norm_dtype = build_model(item["name"], device)
    lm = item["name"].startswith("lstm")
    decay = 1e-4 if item["name"].startswith(("resnet", "preact")) else 0.0
    optimizer = bng.SGDMNG(net, lr=0.01, momentum=0.9, weight_decay=decay, norm_dtype=norm_dtype)
    model = torch.compile(net) if item["compile"] else net
    x, y, samples = synthetic_batch(item, device)
    amp = (torch.autocast(device.type, dtype=torch.bfloat16) if item["amp"] == "bf16"
           else contextlib.nullcontext())
    state = {"hidden": None, "norm_sum": None, "loss_sum": torch.zeros((), device=device),
             "step": 0}
    plan = optimizer.block_normalizer.plan
    every = grad_norm_every()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with amp:
            if lm:
                logits, hidden = model(x, state["hidden"])
                state["hidden"] = tuple(h.detach() for h in hidden)
            else:
                logits = model(x)
        loss = F.cross_entropy(logits.float().flatten(0, -2), y.flatten())
        loss.backward()
        if state["step"] % every == 0:
            norms = bng.grad_norms(plan)
            state["norm_sum"] = norms if state["norm_sum"] is None else state["norm_sum"] + norms
        state["step"] += 1
        optimizer.step()
        state["loss_sum"] += loss.detach()

    started = time.perf_counter()
    for _ in range(item.get("warmup", 3)):       # the compiled model compiles here
        step()
    sync(device)
    first_s = time.perf_counter() - started
    if "duration" in item:                        # concurrent processes: a common time window
        return {**_fixed_window(item, step, device, samples), "warmup_s": first_s}
    step_s = timed_windows(step, device, item.get("window_s", 0.4), item.get("windows", 5))

    @torch.no_grad()
    def evaluate() -> None:
        with amp:
            net(x) if not lm else net(x, None)

    net.eval()
    eval_s = timed_windows(evaluate, device, item.get("window_s", 0.4) / 2, 3)
    net.train()
    finite = bool(torch.isfinite(state["loss_sum"]).item())
    out = {"step_ms": step_s * 1e3, "train_per_s": samples / step_s,
           "eval_per_s": samples / eval_s, "warmup_s": first_s, "loss_finite": finite,
           "samples_per_step": samples}
    if device.type == "cuda":
        out["peak_mem_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


def _fixed_window(item: dict, step, device: torch.device, samples: int) -> dict:
    """Say `ready`, wait for the driver's go file (every process is ready), then count steps."""
    emit({"id": item["id"], "event": "ready"})
    go = Path(item["go_file"])
    while not go.exists():
        time.sleep(0.002)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < item["duration"]:
        step()
        steps += 1
    sync(device)
    elapsed = time.perf_counter() - start
    return {"train_per_s": steps * samples / elapsed, "steps": steps, "window_s": elapsed}


def data_item(item: dict, device: torch.device) -> dict:
    """CIFAR crop + flip batches through the data layer, on the device: images per second."""
    from data import build_dataset
    from data.fixtures import make_cifar

    with tempfile.TemporaryDirectory() as root:
        make_cifar(root, "cifar10", n_train=item["images"], n_test=16)
        ds = build_dataset({"_target_": "data.vision.load_cifar", "name": "cifar10",
                            "verify_md5": False}, root=root, device=device, seed=1)
        for _ in ds.train_batches(1, item["batch"]):          # the first epoch warms up
            pass
        seconds = []
        for epoch in (2, 3, 4):
            sync(device)
            start = time.perf_counter()
            (x, _), = deque(ds.train_batches(epoch, item["batch"]), maxlen=1)
            sync(device)
            seconds.append(time.perf_counter() - start)
        assert x.shape[1:] == (3, 32, 32) and x.device.type == device.type
    return {"data_per_s": ds.num_train / statistics.median(seconds), "images": ds.num_train}


def optim_item(item: dict, device: torch.device) -> dict:
    """optimizer.step() on ResNet-110's parameters, gradients kept between steps."""
    import models

    bases = {"SGDM": (torch.optim.SGD, bng.SGDMNG,
                      {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4}),
             "Adam": (torch.optim.Adam, bng.AdamNG, {"lr": 1e-3})}
    variants = {}
    for base, (cls, ng_cls, kwargs) in bases.items():
        for label, ng, extra in (("foreach", False, {"foreach": True}),
                                 ("fused", False, {"fused": True}),
                                 ("NG foreach", True, {"foreach": True}),
                                 ("NG fused", True, {"fused": True})):
            torch.manual_seed(0)
            net = models.resnet110().to(device)
            for p in net.parameters():
                p.grad = torch.randn_like(p)
            try:
                opt = (ng_cls(net, **extra, **kwargs) if ng
                       else cls(net.parameters(), **extra, **kwargs))
                opt.step()
                variants[f"{base} {label}"] = opt.step
            except (RuntimeError, ValueError, TypeError) as err:   # fused not on this device
                variants[f"{base} {label}"] = str(err).splitlines()[0][:200]
    runnable = {k: v for k, v in variants.items() if callable(v)}
    for step in runnable.values():
        step()
    samples = {k: [] for k in runnable}
    for _ in range(item.get("repeats", 50)):
        for label, step in runnable.items():
            sync(device)
            start = time.perf_counter()
            step()
            sync(device)
            samples[label].append(time.perf_counter() - start)
    rows = {k: {"ms": statistics.median(v) * 1e3} for k, v in samples.items()}
    rows.update({k: {"error": v} for k, v in variants.items() if not callable(v)})
    return {"step_ms": rows, "tensors": sum(1 for _ in net.parameters()),
            "numel": sum(p.numel() for p in net.parameters())}


KINDS = {"train": train_item, "data": data_item, "optim": optim_item}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("items", type=Path, help="a JSON file holding a list of items")
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    device = torch.device(args.device)
    for item in json.loads(args.items.read_text()):
        emit({"id": item["id"], "event": "start"})
        started = time.perf_counter()
        try:
            result = {"status": "ok", **KINDS[item["kind"]](item, device)}
        except torch.cuda.OutOfMemoryError as err:
            result = {"status": "oom", "message": str(err).splitlines()[0][:300]}
        except Exception as err:  # one item's failure is a result; the next item still runs
            traceback.print_exc()
            result = {"status": "error", "message": f"{type(err).__name__}: "
                                                    f"{str(err).splitlines()[0][:300] if str(err) else ''}"}
        result.update(id=item["id"], event="result", seconds=time.perf_counter() - started)
        emit({**{k: v for k, v in item.items() if k != "id"}, **result})
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
