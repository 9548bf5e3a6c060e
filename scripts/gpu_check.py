"""`make gpu-check`: does the CUDA path work, and how fast is it? One short run, for the first GPU.

Without CUDA it prints one line and exits 0. With CUDA it runs these steps in this order, each
with a time cap, all inside one wall-clock budget (default 460 s, under 8 minutes):

  env          torch, CUDA, cuDNN, NCCL, the GPU, the suite's packages
  measure      training step and eval forward of each paper model at the paper's batch, on
               synthetic device tensors of the real shapes, fp32 and bf16, eager; the CIFAR
               data layer's crop + flip batches on the device; bng's NG step against torch's
               foreach and fused optimizers on ResNet-110's parameters
  pytest       `pytest -m cuda tests/test_cuda.py`
  ddp          `torchrun --nproc_per_node=N run.py ...` (N = visible GPUs) for one epoch on
               fixture CIFAR files
  concurrency  1, 4, 2 and 8 ResNet-20 training processes at once on one GPU, then ResNet-56
  stacked      K = 1, 4, 8 seeds stacked in one process against K separate seeds
               (scripts/bench_stack.py): MLP-18, ResNet-20, ResNet-56
  compile      the paper models' training step under torch.compile (what is left of the budget)

A step that overruns its cap is killed and recorded as such; the next step runs. After every
step, <out>/gpu_check.json and <out>/gpu_check.md are rewritten (a temporary file, then a
rename), so a run killed from outside still leaves everything measured until then, with the
GPU-hours projection of every paper artifact (scripts/gpu_report.py).

    python3 scripts/gpu_check.py --out results/gpu_check
    python3 scripts/gpu_check.py --device cpu --out /tmp/gc   # the script itself, on a CPU, tiny
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from gpu_report import render, write_atomic  # beside this script, in scripts/
from gpu_workers import run_concurrent, run_items, run_logged

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

BUDGET = 460.0                               # seconds for all steps: under 8 minutes
CAPS = {"env": 20, "measure": 110, "pytest": 180, "ddp": 60, "concurrency": 70,
        "stacked": 90, "compile": 240}   # seconds at the default budget, scaled with --budget; the budget bounds all
STEPS = tuple(CAPS)
MIN_START = 12                                # a step needs this much budget left to start
PAPER = [  # bench name, batch, per-item shape: the paper's settings (configs/dataset, model)
    ("resnet110", 128, {"size": 32}), ("resnet20", 128, {"size": 32}),
    ("resnet56", 128, {"size": 32}), ("preact_resnet34", 64, {"size": 224}),
    ("lstm_bptt40", 100, {"bptt": 40}), ("kimcnn", 50, {"length": 50}),
]
EXTRA = [  # measured if the throughput step has time: the other cells of the sweeps
    ("mlp6", 100, {}), ("mlp12", 100, {}), ("mlp18", 100, {}),
    ("lstm_bptt400", 100, {"bptt": 400}), ("lstm_bptt1000", 100, {"bptt": 1000}),
    ("resnet32", 128, {"size": 32}), ("resnet44", 128, {"size": 32}),
]


def no_cuda_line() -> str:
    return (f"gpu-check: no CUDA device here (torch {torch.__version__}, CUDA build "
            f"{torch.version.cuda or 'none'}); nothing to do")


def train_items(tiny: bool, compiled: bool) -> list[dict]:
    """The paper models in fp32 and bf16 and, eager only, the other models in fp32; with
    `tiny` (the CPU check of the script) at a fraction of the sizes."""
    plan = [(spec, amp) for spec in PAPER for amp in ("off", "bf16")]
    if compiled:  # bf16 first: the likeliest to be used
        plan = [p for p in plan if p[1] == "bf16"] + [p for p in plan if p[1] == "off"]
    else:
        plan += [(spec, "off") for spec in EXTRA]
    items = []
    for (name, batch, shape), amp in plan:
        if tiny:
            batch = max(2, batch // 32)
            shape = {k: min(v, 64 if k == "size" else 16) for k, v in shape.items()}
        mode = ("bf16" if amp == "bf16" else "fp32") + ("+compile" if compiled else "")
        items.append({"id": f"{name}:{mode}", "kind": "train", "name": name, "batch": batch,
                      **shape, "amp": amp, "compile": compiled, "mode": mode,
                      **({"window_s": 0.05, "windows": 2} if tiny else {})})
    return items


class Check:
    """The run's state: what each step found, written out after every step."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.out = args, args.out
        self.started = time.monotonic()
        self.deadline = self.started + args.budget
        self.device = args.device
        self.tiny = args.device == "cpu"
        self.state: dict = {"schema": 1, "budget_s": args.budget, "device": args.device,
                            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                            "finished": None, "steps": {}, "env": {}, "throughput": [],
                            "data": None, "optim": None, "pytest": [], "ddp": None,
                            "concurrency": {}, "stacked": {}, "command": " ".join(sys.argv)}

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def save(self) -> None:
        self.state["elapsed_s"] = time.monotonic() - self.started
        write_atomic(self.out / "gpu_check.json", json.dumps(self.state, indent=1) + "\n")
        write_atomic(self.out / "gpu_check.md", render(self.state))

    def step(self, name: str, function) -> None:
        cap = min(CAPS[name] * self.args.budget / BUDGET, self.left() - 3)
        record = {"status": "skipped", "budget_s": round(cap, 1), "seconds": 0.0, "detail": ""}
        self.state["steps"][name] = record
        if name not in self.args.steps:
            record["detail"] = "not asked for (--steps)"
        elif cap < MIN_START:
            record["detail"] = f"out of time: {self.left():.0f} s of the budget left"
        else:
            print(f"[gpu-check] {name}: up to {cap:.0f} s ...", flush=True)
            start = time.monotonic()
            try:
                record["status"], record["detail"] = function(time.monotonic() + cap)
            except Exception as err:  # a step's own bug: record it, go on with the next step
                record["status"], record["detail"] = "error", f"{type(err).__name__}: {err}"
            record["seconds"] = round(time.monotonic() - start, 1)
        print(f"[gpu-check] {name}: {record['status']} ({record['seconds']} s) "
              f"{record['detail']}", flush=True)
        self.save()

    # -- the steps: each returns (status, one-line detail) ---------------------------------
    def env(self, deadline: float) -> tuple[str, str]:
        import importlib.util

        env = {"torch": torch.__version__, "cuda_build": torch.version.cuda,
               "python": sys.version.split()[0],
               "packages": {m: importlib.util.find_spec(m) is not None
                            for m in ("hydra", "omegaconf", "pytest", "torchvision", "triton",
                                      "yaml", "tqdm", "PIL")}}
        if self.device == "cuda":
            props = torch.cuda.get_device_properties(0)
            env.update(gpu=props.name, gpus=torch.cuda.device_count(),
                       memory_gb=round(props.total_memory / 2**30, 1),
                       capability=f"{props.major}.{props.minor}",
                       cudnn=torch.backends.cudnn.version(),
                       nccl=_nccl_version(),
                       tf32_conv=torch.backends.cudnn.allow_tf32,
                       tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
                       bf16_supported=torch.cuda.is_bf16_supported())
            try:
                smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,clocks.max.sm,"
                                      "power.limit", "--format=csv,noheader"],
                                     capture_output=True, text=True, timeout=10)
                env["nvidia_smi"] = smi.stdout.strip()
            except (OSError, subprocess.SubprocessError) as err:
                env["nvidia_smi"] = f"unavailable: {err}"
        self.state["env"] = env
        missing = [m for m, ok in env["packages"].items() if not ok]
        detail = f"{env.get('gpu', 'cpu')}, torch {env['torch']}, CUDA {env['cuda_build']}"
        if missing:
            return "warning", detail + f"; missing packages: {', '.join(missing)} (make install)"
        return "ok", detail

    def _bench(self, items: list[dict], deadline: float, item_cap: float) -> list[dict]:
        def keep(result: dict) -> None:
            if result["kind"] == "train":
                self.state["throughput"].append(result)
            else:
                self.state[result["kind"]] = result
            self.save()
        return run_items(items, self.device, deadline, item_cap, self.out / "logs", keep)

    def measure(self, deadline: float) -> tuple[str, str]:
        """The paper models' eager steps, then the data layer and the optimizer step, then the
        other models of the sweeps (the projection interpolates those it has to)."""
        items = train_items(self.tiny, compiled=False)
        paper = [i for i in items if i["name"] in {n for n, _, _ in PAPER}]
        extra = [i for i in items if i not in paper]
        data = {"id": "data:cifar10", "kind": "data", "batch": 128,
                "images": 1024 if self.tiny else 20_000}
        optim = {"id": "optim:resnet110", "kind": "optim", "repeats": 3 if self.tiny else 50}
        return _summarize(self._bench([*paper, data, optim, *extra], deadline, 40))

    def compile(self, deadline: float) -> tuple[str, str]:
        items = train_items(self.tiny, compiled=True)
        return _summarize(self._bench(items, deadline, 120))

    def concurrency(self, deadline: float) -> tuple[str, str]:
        rounds = [("resnet20", 1), ("resnet20", 4), ("resnet20", 2), ("resnet20", 8),
                  ("resnet56", 1), ("resnet56", 4)]
        if self.tiny:
            rounds = [("resnet20", 1), ("resnet20", 2)]
        found = self.state["concurrency"]
        for name, procs in rounds:
            item = {"kind": "train", "name": name, "batch": 8 if self.tiny else 128, "size": 32,
                    "amp": "off", "compile": False, "mode": "fp32",
                    "duration": 1.0 if self.tiny else 4.0}
            total = run_concurrent(item, procs, self.device, deadline, self.out / "logs")
            if total is None:
                break
            entry = found.setdefault(name, {"rates": {}, "mode": item["mode"]})
            entry["rates"][str(procs)] = total
            base = entry["rates"].get("1")
            if base:
                best = max(entry["rates"], key=lambda n: entry["rates"][n])
                entry.update(best=int(best), speedup=entry["rates"][best] / base)
            self.save()
        done = sum(len(v["rates"]) for v in found.values())
        return ("ok" if done == len(rounds) else "partial"), \
            "; ".join(f"{n}: best {v.get('best')} processes, x{v.get('speedup', 1):.2f}"
                      for n, v in found.items())

    def stacked(self, deadline: float) -> tuple[str, str]:
        """Seeds x epochs per second, K seeds stacked against K separate, per model and K."""
        models, seeds = ("MLP-18", "ResNet-20", "ResNet-56"), ("1", "4", "8")
        extra = ["--batches", "4", "--repeats", "3"]
        if self.tiny:
            models, seeds = ("MLP-18", "ResNet-20"), ("1", "2")
            extra = ["--batches", "1", "--repeats", "1", "--batch-size", "4"]
        found = self.state["stacked"]
        for name in models:
            cmd = [sys.executable, str(HERE / "bench_stack.py"), "--models", name, "--seeds",
                   *seeds, "--device", self.device, "--json", *extra]
            code, output = run_logged(cmd, dict(os.environ, PYTHONUNBUFFERED="1"), deadline,
                                      self.out / "logs" / f"stacked-{name}.log")
            rows = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
            if rows:
                found[name.lower().replace("-", "")] = stacked_entry(rows)
                self.save()
            if code is None:
                break
        done = sum(len(v["rows"]) for v in found.values())
        return ("ok" if done == len(models) * len(seeds) else "partial"), \
            "; ".join(f"{n}: x{v['speedup']:.2f} at K={v['best']}" for n, v in found.items())

    def pytest(self, deadline: float) -> tuple[str, str]:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if self.device == "cpu":
            env["BNG_TEST_DEVICE"] = "cpu"
        cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-v", "-p", "no:cacheprovider",
               "-rfE", "--tb=short", "tests/test_cuda.py"]
        code, output = run_logged(cmd, env, deadline, self.out / "logs" / "pytest.log")
        outcomes = re.findall(r"^(tests/\S+::\S+) (PASSED|FAILED|SKIPPED|ERROR)", output, re.M)
        self.state["pytest"] = [{"test": t.split("::", 1)[1], "outcome": o} for t, o in outcomes]
        counts = {o: sum(1 for _, x in outcomes if x == o) for o in ("PASSED", "FAILED",
                                                                     "SKIPPED", "ERROR")}
        detail = ", ".join(f"{n} {o.lower()}" for o, n in counts.items() if n)
        if code is None:
            return "timeout", f"killed at the cap after {detail or 'no test'}"
        return ("passed" if code == 0 else "failed"), detail or output[-300:]

    def ddp(self, deadline: float) -> tuple[str, str]:
        procs = self.args.ddp_procs or (torch.cuda.device_count() if self.device == "cuda" else 1)
        from data.fixtures import make_cifar

        with tempfile.TemporaryDirectory() as tmp:
            make_cifar(tmp, "cifar10", n_train=128 * 8, n_test=128)
            out = Path(tmp) / "out"
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   f"--nproc_per_node={procs}", "run.py", "dataset=cifar10", "model=resnet20",
                   "optim=sgdmng", "epochs=1", "batch_size=128", f"data_root={tmp}",
                   "++dataset.verify_md5=false", f"device={self.device}", f"out_dir={out}"]
            code, output = run_logged(cmd, dict(os.environ, PYTHONUNBUFFERED="1",
                                                 WANDB_MODE="disabled"),
                                       deadline, self.out / "logs" / "ddp.log")
            runs = list(out.glob("runs/**/summary.json"))
            summary = json.loads(runs[0].read_text()) if runs else {}
            config = (runs[0].parent / "config.yaml").read_text() if runs else ""
        world = re.search(r"world_size: (\d+)", config)
        self.state["ddp"] = {"procs": procs, "command": "torchrun " + " ".join(cmd[3:]),
                             "exit": code,
                             "status": summary.get("status"),
                             "world_size": int(world.group(1)) if world else None,
                             "final": {k: v for k, v in summary.get("final", {}).items()
                                       if k != "grad_norms"}}
        if code is None:
            return "timeout", f"torchrun with {procs} process(es) killed at the cap"
        ok = (code == 0 and summary.get("status") == "completed"
              and self.state["ddp"]["world_size"] == procs)
        note = "" if procs > 1 else " (one process: the engine forms no process group)"
        return ("ok" if ok else "failed"), \
            f"{procs} process(es), exit {code}, run {summary.get('status')}{note}"


def stacked_entry(rows: list[dict]) -> dict:
    """One model's bench_stack rows as the projection reads them: each K's row, and the K with
    the largest speedup (separate / stacked epoch time)."""
    best = max(rows, key=lambda row: row["speedup"])
    return {"mode": "fp32", "rows": {str(row["seeds"]): row for row in rows},
            "best": best["seeds"], "speedup": best["speedup"]}


def _nccl_version() -> str:
    try:
        version = torch.cuda.nccl.version()
    except (AttributeError, RuntimeError) as err:   # a torch built without NCCL
        return f"unavailable ({err})"
    return ".".join(map(str, version)) if isinstance(version, tuple) else str(version)


def _summarize(results: list[dict]) -> tuple[str, str]:
    counts: dict[str, int] = {}
    for r in results:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    status = "ok" if results and set(counts) == {"ok"} else ("partial" if "ok" in counts
                                                              else "failed")
    return status, ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "nothing ran"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/gpu_check"),
                        help="folder for gpu_check.json, gpu_check.md and logs/")
    parser.add_argument("--budget", type=float, default=BUDGET,
                        help=f"wall seconds for all steps together (default {BUDGET:.0f}); "
                             "each step's cap scales with it")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cpu: run every step tiny on the CPU, to check the script itself")
    parser.add_argument("--ddp-procs", type=int, default=0,
                        help="processes of the ddp step (default: every visible GPU)")
    parser.add_argument("--steps", default=",".join(STEPS),
                        help=f"comma-separated subset of {','.join(STEPS)}")
    args = parser.parse_args(argv)
    args.steps = set(args.steps.split(","))
    if unknown := args.steps - set(STEPS):
        print(f"gpu-check: unknown step(s) {', '.join(sorted(unknown))}; choose from "
              f"{', '.join(STEPS)}", file=sys.stderr)
        return 2
    if args.device == "cuda" and not torch.cuda.is_available():
        print(no_cuda_line())
        return 0
    check = Check(args)
    check.out.mkdir(parents=True, exist_ok=True)
    for name in STEPS:
        check.step(name, getattr(check, name))
    check.state["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    check.save()
    print(render(check.state), flush=True)
    print(f"[gpu-check] done in {time.monotonic() - check.started:.0f} s: "
          f"{check.out / 'gpu_check.md'}, {check.out / 'gpu_check.json'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
