"""The CUDA path: data on the device, bf16 + channels_last models, bng on the GPU, compile,
nccl, resume, and each paper artifact's first epoch. Marked `cuda`; skipped without a GPU.

    python -m pytest -m cuda tests/test_cuda.py                       # on a CUDA machine
    BNG_TEST_DEVICE=cpu python -m pytest -m cuda tests/test_cuda.py   # the same bodies on the CPU

BNG_TEST_DEVICE=cpu runs every test body on the CPU instead (and gloo instead of nccl), with
smaller batches: it checks the tests themselves on a machine without a GPU, where comparisons
of the device against the CPU are then trivially equal. `make gpu-check` runs this file.
"""

from __future__ import annotations

import copy
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

import bng
from bng_helpers import SmallCNN, assert_same_params
from conftest import REPO, cli_env, compose_config, run_cli, train_in_process

DEVICE = torch.device(os.environ.get("BNG_TEST_DEVICE") or "cuda")
ON_GPU = DEVICE.type == "cuda"
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(ON_GPU and not torch.cuda.is_available(),
                       reason="needs a CUDA device (BNG_TEST_DEVICE=cpu runs it on the CPU)"),
]
ARTIFACTS = ("table1", "table2", "table3", "table4", "figure1", "figure2", "figure3")


def host_sync(step) -> str | None:
    """Run `step` with CUDA's sync check set to raise; the sync's message, or None if there was
    none (always None on the CPU, which has nothing to sync with)."""
    if not ON_GPU:
        step()
        return None
    torch.cuda.set_sync_debug_mode("error")
    try:
        step()
    except RuntimeError as err:
        if "synchroniz" not in str(err):
            raise
        return str(err).splitlines()[0]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return None


# -- data: every dataset's batches on the device equal the CPU's --------------------------------
# ~14k PTB tokens (100 columns x 3 windows, and a test stream for 100 columns), 200 RT
# sentences, 140 ImageNet images (two batches of 64): conftest's fixture_root reads these.
FIXTURE_SIZES = {"mnist": (250, 40), "cifar": (300, 40), "ptb_repeat": 40, "rt_repeat": 25,
                 "imagenet_per_class": 70}


DATA_CASES = {"digits": 32, "mnist": 32, "cifar10": 64, "cifar100": 64, "ptb": 5, "rt": 16,
              "imagenet": 8}


def _as_cpu(batches) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for x, y in batches:
        assert x.device.type == DEVICE.type and y.device.type == DEVICE.type
        out.append((x.cpu(), y.cpu()))
    return out


def _assert_same_batches(on_device: list, on_cpu: list) -> None:
    assert len(on_device) == len(on_cpu) > 0
    for (xd, yd), (xc, yc) in zip(on_device, on_cpu, strict=True):
        assert torch.equal(yd, yc)
        if xc.is_floating_point():   # normalization may round differently; a wrong crop differs by far more
            torch.testing.assert_close(xd, xc, rtol=1e-6, atol=1e-6)
        else:
            assert torch.equal(xd, xc)


@pytest.mark.parametrize("name", sorted(DATA_CASES))
def test_batches_on_the_device_equal_the_cpu(name: str, fixture_root: Path):
    """Same seed, same epoch: the same crops, flips, order and windows on both devices."""
    from data import build_dataset

    cfg = {**yaml.safe_load((REPO / "configs" / "dataset" / f"{name}.yaml").read_text()),
           "verify_md5": False, "workers": 1, "bptt": 7, "windows": [3, 4, 5]}
    batch = DATA_CASES[name]
    cpu = build_dataset(cfg, root=fixture_root, device="cpu", seed=3)
    dev = build_dataset(cfg, root=fixture_root, device=DEVICE, seed=3)
    for epoch in (1, 2):
        expected = _as_cpu(cpu.train_batches(epoch, batch))
        _assert_same_batches(_as_cpu(dev.train_batches(epoch, batch)), expected)
        if name != "imagenet":        # a resumed ImageNet epoch draws fresh crops (data/imagenet.py)
            _assert_same_batches(_as_cpu(dev.train_batches(epoch, batch, start=1)), expected[1:])
    _assert_same_batches(_as_cpu(dev.test_batches(batch)), _as_cpu(cpu.test_batches(batch)))


# -- models: forward and backward under bf16 autocast and channels_last -------------------------
STAND_INS = {  # the dataset fields each model config reads, and an input of the real shape
    "image32": ({"num_classes": 10}, lambda b: torch.randn(b, 3, 32, 32)),
    "image224": ({"num_classes": 1000}, lambda b: torch.randn(b, 3, 224, 224)),
    "vector": ({"in_features": 784, "num_classes": 10}, lambda b: torch.rand(b, 784)),
    "stream": ({"vocab_size": 100}, lambda b: torch.randint(0, 100, (b, 40))),
    "sentence": ({"vocab_size": 100, "num_classes": 2, "windows": [3, 4, 5]},
                 lambda b: torch.randint(1, 100, (b, 50))),
}
MODEL_NAMES = sorted(p.stem for p in (REPO / "configs" / "model").glob("*.yaml"))


def build_model(name: str) -> tuple[nn.Module, str]:
    cfg = OmegaConf.load(REPO / "configs" / "model" / f"{name}.yaml")
    kind = cfg.inputs[0]
    cfg = OmegaConf.merge({"dataset": STAND_INS[kind][0]}, {"model": cfg})
    torch.manual_seed(0)
    return instantiate(cfg.model.net), kind


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return (out[0] if isinstance(out, tuple) else out).flatten(0, -2)   # (N, C)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_trains_under_bf16_and_channels_last(name: str):
    model, kind = build_model(name)
    image = kind.startswith("image")
    model = model.to(DEVICE)
    reference = copy.deepcopy(model)                       # fp32, contiguous weights
    if image:
        model = model.to(memory_format=torch.channels_last)  # as the engine does on CUDA
        conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
        assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    x = STAND_INS[kind][1](4 if image and not ON_GPU else 8).to(DEVICE)
    with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
        logits = _logits(model, x)
    assert logits.dtype == torch.bfloat16
    loss = F.cross_entropy(logits.float(), torch.zeros(len(logits), dtype=torch.long,
                                                       device=DEVICE))
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()), pname
    # The same weights in fp32 and contiguous memory give the same logits within bf16 rounding
    # (eval mode for the models with dropout, whose masks need not match between the two runs).
    dropout = any(isinstance(m, nn.Dropout) for m in model.modules())
    for m in (model, reference):
        m.train(not dropout)
    with torch.no_grad():
        with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
            low = _logits(model, x).float()
        full = _logits(reference, x)
    assert float((low - full).norm() / full.norm()) < 0.05


# -- bng on the device against a plain float64 reference on the CPU -----------------------------
def reference_hook(blocks: dict[str, list[nn.Parameter]], mode: str, record: dict):
    """The paper's rule, block by block in float64 on the CPU (alpha 0.02, threshold 0.1)."""
    def hook(optimizer, args, kwargs) -> None:
        for name, params in blocks.items():
            grads = [p.grad for p in params if p.grad is not None]
            norm = math.sqrt(sum(float(g.pow(2).sum()) for g in grads))
            record[name] = norm
            weight = math.sqrt(sum(float(p.detach().pow(2).sum()) for p in params)) or 1.0
            if norm == 0:
                scale = 1.0 if mode == "clip" else 0.0
            else:
                scale = {"ng": 1 / norm, "adap": 0.02 * weight / norm,
                         "clip": min(1.0, 0.1 / norm)}[mode]
            for g in grads:
                g.mul_(scale)
    return hook


OPTIMIZERS = {"SGDMNG": (torch.optim.SGD, {"lr": 0.1, "momentum": 0.9}),
              "AdamNG": (torch.optim.Adam, {"lr": 0.01}),
              "AdaGradNG": (torch.optim.Adagrad, {"lr": 0.1})}


@pytest.mark.parametrize("set_to_none", [False, True], ids=["kept-grads", "new-grads"])
@pytest.mark.parametrize("mode", ["ng", "adap", "clip"])
@pytest.mark.parametrize("factory", sorted(OPTIMIZERS))
def test_bng_on_the_device_matches_the_cpu_reference(factory: str, mode: str, set_to_none: bool):
    base, kwargs = OPTIMIZERS[factory]
    torch.manual_seed(0)
    cpu_model = SmallCNN().double()
    dev_model = copy.deepcopy(cpu_model).float().to(DEVICE)
    norms: dict[str, float] = {}
    reference = base(cpu_model.parameters(), **kwargs)
    reference.register_step_pre_hook(reference_hook(bng.layer_blocks(cpu_model), mode, norms))
    optimizer = getattr(bng, factory)(dev_model, mode=mode, **kwargs)
    for step in range(5):
        g = torch.Generator().manual_seed(step)
        x, y = torch.randn(4, 3, 6, 6, generator=g), torch.randint(0, 4, (4,), generator=g)
        for model, opt, inputs in ((cpu_model, reference, x.double()),
                                   (dev_model, optimizer, x.to(DEVICE))):
            opt.zero_grad(set_to_none=set_to_none)
            F.cross_entropy(model(inputs), y.to(inputs.device)).backward()
            opt.step()
    for (name, p), q in zip(cpu_model.named_parameters(), dev_model.parameters(), strict=True):
        torch.testing.assert_close(q.detach().cpu().double(), p.detach(), rtol=1e-4, atol=1e-5,
                                   msg=name)
    measured = {k: float(v) for k, v in bng.block_grad_norms(optimizer).items()}
    assert list(measured) == list(norms)
    for name, norm in norms.items():
        assert measured[name] == pytest.approx(norm, rel=1e-4, abs=1e-7), name


@pytest.mark.parametrize("set_to_none", [False, True], ids=["kept-grads", "new-grads"])
@pytest.mark.parametrize("factory", ["SGDMNG", "AdamNG"])
def test_ng_step_makes_no_host_sync(factory: str, set_to_none: bool):
    """After the first steps, optimizer.step() and the norms the engine reads never sync
    (when torch's own step of the base optimizer does not)."""
    import models

    base, kwargs = OPTIMIZERS[factory]
    torch.manual_seed(0)
    nets = [models.resnet20().to(DEVICE) for _ in range(2)]
    plain, hooked = base(nets[0].parameters(), **kwargs), getattr(bng, factory)(nets[1], **kwargs)
    x = torch.randn(8, 3, 32, 32, device=DEVICE)
    y = torch.randint(0, 10, (8,), device=DEVICE)
    def hooked_step() -> None:          # what the engine does each step
        hooked.step()
        hooked.block_normalizer.last_norms.sum()

    found = []
    for net, opt in zip(nets, (plain, hooked), strict=True):
        for step in range(5):
            opt.zero_grad(set_to_none=set_to_none)
            F.cross_entropy(net(x), y).backward()
            if step < 2:                 # the first steps create the optimizer's state
                opt.step()
            else:
                found.append(host_sync(plain.step if opt is plain else hooked_step))
    if any(found[:3]):
        pytest.skip(f"torch's own {base.__name__} step syncs on this build: {found[0]}")
    assert not any(found[3:]), found[3:]
    assert all(bool(torch.isfinite(p).all()) for p in nets[1].parameters())


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return SmallCNN().to(DEVICE)


# -- torch.compile: the hook traces into a graph, with no graph break of its own ---------------
@pytest.mark.parametrize("mode", ["ng", "adap", "clip"])
def test_hook_compiles_without_graph_breaks(mode: str):
    """The only break in a hooked step is torch's own deliberate one in torch/optim (it
    separates the pre-hooks' graph from the base step's graph)."""
    x = torch.randn(8, 3, 6, 6, device=DEVICE)
    model = small_cnn()
    hooked = bng.SGDMNG(model, lr=0.1, momentum=0.9, mode=mode)
    model(x).square().mean().backward()
    torch._dynamo.reset()
    explained = torch._dynamo.explain(hooked.step)()
    frames = [reason.user_stack[-1].filename for reason in explained.break_reasons]
    assert all(f"torch{os.sep}optim{os.sep}" in f for f in frames), explained.break_reasons
    assert explained.graph_break_count <= 1
    assert explained.op_count > 0                      # the hook's norms and scales were traced



# -- DDP: a one-rank process group on the device (nccl on CUDA, gloo on the CPU) ----------------
def test_ddp_one_rank_matches_plain_training(tmp_path: Path):
    import torch.distributed as dist

    import models

    dist.init_process_group("nccl" if ON_GPU else "gloo", init_method=f"file://{tmp_path}/pg",
                            rank=0, world_size=1)
    try:
        ones = torch.ones(3, device=DEVICE)
        dist.all_reduce(ones)
        assert ones.tolist() == [1.0, 1.0, 1.0]
        torch.manual_seed(0)
        plain_net = models.resnet20().to(DEVICE)
        ddp_net = copy.deepcopy(plain_net)
        wrapped = nn.parallel.DistributedDataParallel(ddp_net,
                                                      device_ids=[DEVICE] if ON_GPU else None)
        opts = [bng.SGDMNG(plain_net, lr=0.1), bng.SGDMNG(ddp_net, lr=0.1)]
        x = torch.randn(8, 3, 32, 32, device=DEVICE)
        y = torch.randint(0, 10, (8,), device=DEVICE)
        for _ in range(3):
            for model, opt in zip((plain_net, wrapped), opts, strict=True):
                opt.zero_grad()
                F.cross_entropy(model(x), y).backward()
                opt.step()
        assert_same_params(plain_net, ddp_net)
    finally:
        dist.destroy_process_group()


# -- the real CLI on the device: a killed run resumes to the same metrics ----------------------
TIMINGS = {"epoch_seconds", "samples_per_s"}
RESUME_CASES = {  # exact: cuBLAS GEMMs repeat bitwise; cuDNN convolutions need not
    "mlp_digits": (("dataset=digits", "model=mlp6", "epochs=5", "batch_size=8"), True),
    "resnet20_cifar": (("dataset=cifar10", "model=resnet20", "epochs=6", "batch_size=16"), False),
}


def _metrics(out_dir: Path) -> list[dict]:
    (path,) = out_dir.glob("runs/**/metrics.jsonl")
    return [{k: v for k, v in json.loads(line).items() if k not in TIMINGS}
            for line in path.read_text().splitlines()]


@pytest.mark.parametrize("case", sorted(RESUME_CASES))
def test_killed_run_resumes_to_the_same_metrics(case: str, fixture_root: Path, tmp_path: Path):
    overrides, exact = RESUME_CASES[case]
    args = (*overrides, "optim=sgdmng", f"device={DEVICE.type}", f"data_root={fixture_root}",
            "++dataset.verify_md5=false")
    env = cli_env(CUBLAS_WORKSPACE_CONFIG=":4096:8")
    run_cli(*args, f"out_dir={tmp_path / 'straight'}", env=env)
    crashed = tmp_path / "crashed"
    proc = subprocess.Popen([sys.executable, str(REPO / "run.py"), *args, f"out_dir={crashed}"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while not any(p.read_text() for p in crashed.glob("runs/**/metrics.jsonl")):
        assert proc.poll() is None and time.time() < deadline, "the run ended before epoch 1"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed = run_cli(*args, f"out_dir={crashed}", env=env)
    assert "[resume]" in resumed.stdout
    straight, again = _metrics(tmp_path / "straight"), _metrics(crashed)
    if exact:
        assert again == straight
        return
    assert [r["epoch"] for r in again] == [r["epoch"] for r in straight]
    for a, b in zip(again, straight, strict=True):   # 40 test images: one flip moves acc 0.025
        for key, tolerance in (("train_loss", 1e-3), ("test_loss", 1e-3), ("train_acc", 0.02),
                               ("test_acc", 0.05)):
            assert a[key] == pytest.approx(b[key], rel=tolerance, abs=tolerance), (key, a, b)


# -- each paper artifact's first cell: one epoch through the engine on fixture files ----------


def first_cell(artifact: str) -> list[str]:
    params = compose_config([f"experiment={artifact}"]).hydra.sweeper.params
    return [f"experiment={artifact}", *(f"{k}={str(v).split(',')[0]}" for k, v in params.items())]


# The engine's compile path on a small model (the compile step of gpu-check times the big ones).
ENGINE_CASES = [*((a, "off", False) for a in ARTIFACTS), ("figure3", "bf16", False),
                ("figure1", "bf16", True)]


@pytest.mark.parametrize(("artifact", "amp", "compiled"), ENGINE_CASES,
                         ids=[f"{a}-{m}{'-compile' if c else ''}" for a, m, c in ENGINE_CASES])
def test_artifact_cell_trains_an_epoch(artifact: str, amp: str, compiled: bool,
                                       fixture_root: Path, tmp_path: Path):
    """The cell's own batch size (two batches of fixture data) on the GPU; tiny on the CPU."""
    cell = first_cell(artifact)
    size = ["batch_size=4", "dataset.limit=8"] if not ON_GPU else []
    if ON_GPU:   # two batches of the cell's own size, or the fixture's 140 images for ImageNet
        batch = compose_config(cell).batch_size
        size = [f"dataset.limit={min(2 * batch, 140)}"] if artifact != "figure3" else []
    overrides = [*cell, *size, f"data_root={fixture_root}", "epochs=1", f"amp={amp}",
                 f"compile={str(compiled).lower()}", "++dataset.verify_md5=false",
                 "++dataset.workers=2", f"device={DEVICE.type}", f"out_dir={tmp_path}"]
    summary = train_in_process(overrides, tmp_path / "run")
    assert summary["status"] == "completed", summary
    (row,) = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert math.isfinite(row["train_loss"]) and math.isfinite(row["test_loss"])
    assert row["grad_norms"] and all(math.isfinite(v) for v in row["grad_norms"].values())
    meta = OmegaConf.load(tmp_path / "run" / "config.yaml").meta
    if ON_GPU:
        assert meta.device == torch.cuda.get_device_name(0)


def test_cells_cover_every_artifact():
    assert {c[0] for c in ENGINE_CASES} == set(ARTIFACTS)
    # The paper's tables and figures, as the reports define them. The tuning and ablation sweeps
    # train the same models on the same datasets; tests/test_experiments.py runs each on fixtures.
    from reports.registry import artifacts

    assert set(ARTIFACTS) == {n for n in artifacts() if n.startswith(("table", "figure"))}
    assert first_cell("figure3") == ["experiment=figure3", "dataset.bptt=40", "optim=sgdm"]


# -- last, as the slowest: the compiled step (Inductor) equals the eager one -------------------
def test_compiled_step_matches_eager():
    x = torch.randn(8, 3, 6, 6, device=DEVICE)
    torch._dynamo.reset()
    eager_model, compiled_model = small_cnn(), small_cnn()
    eager = bng.SGDMNG(eager_model, lr=0.1, momentum=0.9, mode="ng")
    compiled = bng.SGDMNG(compiled_model, lr=0.1, momentum=0.9, mode="ng")
    step = torch.compile(compiled.step)
    for _ in range(3):
        for model, opt, run in ((eager_model, eager, eager.step), (compiled_model, compiled, step)):
            opt.zero_grad()
            model(x).square().mean().backward()
            run()
    assert_same_params(eager_model, compiled_model)
