"""`make gpu-check`'s report: the GPU-hours projection of each paper artifact, and Markdown.

The projection comes from the measured throughputs and the sweep grids.

Reads configs/experiment/<artifact>.yaml (the cells: the product of `hydra.sweeper.params`)
and configs/dataset/<name>.yaml (epochs per cell), never imports training code. A cell's
epoch costs `train / train_rate + eval / eval_rate` seconds (the engine evaluates the whole
test split after every epoch), plus the CIFAR data layer's own time where it was measured.

    from gpu_report import artifact_cells, project
    cells = artifact_cells("table1")                  # 200 dicts: dataset, model, optim, seed, ...
    table = project(throughputs, gpus=(1, 8))         # throughputs: gpu_bench "train" results
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable
from pathlib import Path

import yaml

# the suite's one atomic writer; gpu_check.py writes its state through this name
from reports.writer import write_atomic  # noqa: F401

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
ARTIFACTS = ("table1", "table2", "table3", "table4", "figure1", "figure2", "figure3")

# Samples one epoch trains on and evaluates, for the full (not `limit`ed) datasets.
DATASET_SIZES = {
    "cifar10": (50_000, 10_000),     # images: train, test
    "cifar100": (50_000, 10_000),
    "imagenet": (1_281_167, 50_000),  # ILSVRC-2012 train, val
    "ptb": (929_589, 82_430),         # tokens, <eos> included: ptb.train.txt, ptb.test.txt
    "rt": (9_596, 1_066),             # sentences: 10,662 snippets, 90/10 train/validation
    "mnist": (60_000, 10_000),
}
UNITS = {"cifar10": "images", "cifar100": "images", "imagenet": "images", "ptb": "tokens",
         "rt": "sentences", "mnist": "images"}
DEFAULT_MODE = "fp32"                 # the configs' defaults: amp=off, compile=false


@functools.cache
def _read(path: Path) -> dict:
    return yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}


@functools.cache
def _cells(artifact: str, config_dir: Path) -> tuple[dict, ...]:
    return tuple(artifact_cells(artifact, config_dir))


def artifact_cells(artifact: str, config_dir: Path = CONFIG_DIR) -> list[dict]:
    """The cells of the artifact's sweeps as dicts (dataset, model, optim, seed, epochs and swept
    extras). Which sweeps make an artifact is the reports' one mapping (Table 3 is two)."""
    from reports.registry import artifacts  # pandas: only once there is a GPU to project

    cells = []
    known = artifacts()
    sweeps = known[artifact].sweeps if artifact in known else (artifact,)
    for sweep in sweeps:
        cells += _sweep_cells(sweep, config_dir)
    return cells


def _sweep_cells(sweep: str, config_dir: Path) -> list[dict]:
    """One sweep's grid, its base experiments merged in (scripts/reports/sweeps.py reads them)."""
    from reports.sweeps import read_sweep

    grid = read_sweep(sweep)
    keys = list(grid.params)
    base = {"dataset": grid.groups.get("dataset"), "model": grid.groups.get("model"),
            "seed": "1"}
    cells = []
    for combo in itertools.product(*(grid.params[k] for k in keys)):
        cell = {**base, **dict(zip(keys, combo, strict=True))}
        dataset = _read(config_dir / "dataset" / f"{cell['dataset']}.yaml")
        cell["epochs"] = int(_sweep_epochs(sweep, config_dir) or dataset["train"]["epochs"])
        if cell["dataset"] == "ptb":
            cell.setdefault("dataset.bptt", str(dataset.get("bptt", 40)))
        cells.append(cell)
    return cells


def _sweep_epochs(sweep: str, config_dir: Path) -> int | None:
    """`epochs:` of the sweep's file, else of the experiments it builds on."""
    spec = _read(config_dir / "experiment" / f"{sweep}.yaml")
    if spec.get("epochs") is not None:
        return int(spec["epochs"])
    for entry in spec.get("defaults", []):
        if isinstance(entry, str) and entry != "_self_":
            found = _sweep_epochs(entry, config_dir)
            if found is not None:
                return found
    return None


def cell_key(cell: dict) -> tuple:
    """What names a run folder: two artifacts that share a key share the run."""
    return tuple(sorted((k, v) for k, v in cell.items() if k != "epochs"))


def bench_name(cell: dict) -> str:
    """The throughput entry a cell's model runs at: `lstm_bptt<T>` for the LSTM."""
    if cell["model"] == "lstm":
        return f"lstm_bptt{cell.get('dataset.bptt', '40')}"
    return cell["model"]


def _seconds_per_sample(entry: dict) -> tuple[float, float] | None:
    train, evaluate = entry.get("train_per_s"), entry.get("eval_per_s")
    if not train or not evaluate:
        return None
    return 1.0 / train, 1.0 / evaluate


def cost_table(results: Iterable[dict], mode: str | None) -> dict[str, dict]:
    """bench name -> {train, eval seconds per sample, mode, how}; mode None: the fastest one.

    Missing CIFAR ResNet depths are interpolated linearly in depth between measured ones,
    and a missing LSTM window falls back to BPTT 40's per-token cost; `how` says so.
    """
    best: dict[str, dict] = {}
    for entry in results:
        if entry.get("status") != "ok" or (mode is not None and entry.get("mode") != mode):
            continue
        costs = _seconds_per_sample(entry)
        if costs is None:
            continue
        name = entry["name"]
        if name not in best or costs[0] < best[name]["train"]:
            best[name] = {"train": costs[0], "eval": costs[1], "mode": entry["mode"],
                          "how": "measured"}
    depths = sorted(int(n[6:]) for n in best if n.startswith("resnet") and n[6:].isdigit())
    for depth in (20, 32, 44, 56, 110):
        name = f"resnet{depth}"
        low = [d for d in depths if d < depth]
        high = [d for d in depths if d > depth]
        if name in best or not low or not high:
            continue
        a, b = best[f"resnet{low[-1]}"], best[f"resnet{high[0]}"]
        w = (depth - low[-1]) / (high[0] - low[-1])
        best[name] = {k: a[k] + w * (b[k] - a[k]) for k in ("train", "eval")}
        best[name].update(mode=a["mode"], how=f"interpolated (resnet{low[-1]}, resnet{high[0]})")
    for window in (400, 1000):
        if f"lstm_bptt{window}" not in best and "lstm_bptt40" in best:
            best[f"lstm_bptt{window}"] = {**best["lstm_bptt40"], "how": "BPTT 40's cost per token"}
    return best


def epoch_seconds(cell: dict, costs: dict[str, dict], data_rate: float | None) -> float | None:
    entry = costs.get(bench_name(cell))
    if entry is None:
        return None
    train, test = DATASET_SIZES[cell["dataset"]]
    seconds = train * entry["train"] + test * entry["eval"]
    if data_rate and cell["dataset"] in ("cifar10", "cifar100"):
        seconds += train / data_rate                 # crop + flip batches on the device
    return seconds


def dataset_of(name: str) -> str:
    """The dataset a bench entry's model trains on in the paper."""
    prefixes = (("resnet", "cifar10"), ("preact", "imagenet"), ("lstm", "ptb"), ("kimcnn", "rt"),
                ("mlp", "mnist"))
    return next(dataset for prefix, dataset in prefixes if name.startswith(prefix))


def entry_epoch_seconds(entry: dict, data_rate: float | None = None) -> float | None:
    """One measured entry's projected epoch seconds on its paper dataset (train + eval)."""
    costs = _seconds_per_sample(entry)
    if costs is None:
        return None
    dataset = dataset_of(entry["name"])
    train, test = DATASET_SIZES[dataset]
    data = train / data_rate if data_rate and dataset == "cifar10" else 0.0
    return train * costs[0] + test * costs[1] + data


def makespan(hours: list[float], gpus: int) -> float:
    """Wall hours of independent runs on `gpus` GPUs, one run per GPU, longest first."""
    loads = [0.0] * gpus
    for h in sorted(hours, reverse=True):
        loads[loads.index(min(loads))] += h
    return max(loads) if loads else 0.0


def project(results: list[dict], *, data_rate: float | None = None,
            concurrency: dict[str, dict] | None = None, gpus: tuple[int, ...] = (1, 8),
            config_dir: Path = CONFIG_DIR, stacked: dict[str, dict] | None = None) -> dict:
    """Per artifact: cells, epochs, GPU-hours (configs' fp32 eager and fastest measured mode),
    wall hours on each GPU count, and the GPU-hours with the measured best number of
    concurrent cells per GPU where that was measured (small ResNets)."""
    tables = {"fp32": cost_table(results, DEFAULT_MODE), "best": cost_table(results, None)}
    seen: set[tuple] = set()
    rows = []
    for artifact in ARTIFACTS:
        cells = list(_cells(artifact, config_dir))
        row: dict = {"artifact": artifact, "cells": len(cells),
                     "epochs": sorted({c["epochs"] for c in cells}),
                     "models": sorted({bench_name(c) for c in cells}),
                     "shared_cells": sum(cell_key(c) in seen for c in cells)}
        for label, costs in tables.items():
            hours = [epoch_seconds(c, costs, data_rate) for c in cells]
            known = [h * c["epochs"] / 3600 for h, c in zip(hours, cells, strict=True)
                     if h is not None]
            missing = sorted({bench_name(c) for h, c in zip(hours, cells, strict=True) if h is None})
            row[label] = {
                "gpu_hours": sum(known) if not missing else None,
                "missing": missing,
                "modes": sorted({costs[bench_name(c)]["mode"] for c in cells
                                 if bench_name(c) in costs}),
                "estimated": sorted({f"{bench_name(c)}: {costs[bench_name(c)]['how']}"
                                     for c in cells if bench_name(c) in costs
                                     and costs[bench_name(c)]["how"] != "measured"}),
                "wall_hours": {str(g): makespan(known, g) if not missing else None for g in gpus},
                "new_gpu_hours": sum(h for h, c in zip(known, cells, strict=True)
                                     if cell_key(c) not in seen) if not missing else None,
            }
            if concurrency and not missing:
                row[label]["gpu_hours_concurrent"] = _with_concurrency(cells, costs, data_rate,
                                                                       concurrency)
            if stacked and not missing:       # each config's seeds stacked `best` at a time
                row[label]["gpu_hours_stacked"] = _with_concurrency(cells, costs, data_rate,
                                                                    stacked)
        seen.update(cell_key(c) for c in cells)
        rows.append(row)
    rows.append(_total_row(rows, tables, data_rate, concurrency, gpus, config_dir, stacked))
    return {"artifacts": rows, "gpus": list(gpus), "data_rate": data_rate,
            "concurrency": concurrency or {}}


def _total_row(rows: list[dict], tables: dict, data_rate: float | None,
               concurrency: dict | None, gpus: tuple[int, ...], config_dir: Path,
               stacked: dict | None = None) -> dict:
    """Every artifact at once, each distinct run counted once."""
    distinct = {cell_key(c): c for artifact in ARTIFACTS for c in _cells(artifact, config_dir)}
    cells = list(distinct.values())
    total: dict = {"artifact": "all (each run once)", "cells": len(cells),
                   "epochs": sorted({c["epochs"] for c in cells}), "shared_cells": 0}
    for label in tables:
        missing = sorted({m for row in rows for m in row[label]["missing"]})
        hours = [epoch_seconds(c, tables[label], data_rate) for c in cells]
        known = [] if missing else [h * c["epochs"] / 3600 for h, c in zip(hours, cells,
                                                                             strict=True)]
        total[label] = {
            "gpu_hours": sum(known) if not missing else None, "missing": missing,
            "modes": [], "estimated": [], "new_gpu_hours": None,
            "wall_hours": {str(g): makespan(known, g) if not missing else None for g in gpus}}
        if concurrency and not missing:
            total[label]["gpu_hours_concurrent"] = _with_concurrency(cells, tables[label],
                                                                     data_rate, concurrency)
        if stacked and not missing:
            total[label]["gpu_hours_stacked"] = _with_concurrency(cells, tables[label],
                                                                  data_rate, stacked)
    return total


def _with_concurrency(cells: list[dict], costs: dict, data_rate: float | None,
                      concurrency: dict[str, dict]) -> float:
    """GPU-hours when the models measured under concurrency run `best` cells per GPU (in the
    mode it was measured in; other models and modes run one cell per GPU)."""
    total = 0.0
    for cell in cells:
        hours = epoch_seconds(cell, costs, data_rate) * cell["epochs"] / 3600
        measured = concurrency.get(bench_name(cell), {})
        same_mode = measured.get("mode", DEFAULT_MODE) == costs[bench_name(cell)]["mode"]
        speedup = measured.get("speedup", 1.0) if same_mode else 1.0
        total += hours / max(speedup, 1.0)
    return total


def _hours(value: float | None) -> str:
    if value is None:
        return "unmeasured"
    return f"{value:,.1f}" if value >= 10 else f"{value:.2f}"


def render_markdown(projection: dict) -> list[str]:
    """The projection as Markdown lines (a table per cost basis)."""
    gpus = projection["gpus"]
    lines = []
    for label, title in (("fp32", "fp32, eager: the configs' defaults (amp=off, compile=false)"),
                         ("best", "fastest measured mode per model (bf16 and/or compile)")):
        lines += [f"#### {title}", "",
                  "| artifact | cells | epochs | GPU-hours | "
                  + " | ".join(f"wall h, {g} GPU{'s' if g > 1 else ''}" for g in gpus)
                  + " | concurrent cells: GPU-hours | stacked seeds: GPU-hours | notes |",
                  "| --- | ---: | --- | ---: | " + " | ".join("---:" for _ in gpus)
                  + " | ---: | ---: | --- |"]
        for row in projection["artifacts"]:
            entry = row[label]
            notes = []
            if entry["missing"]:
                notes.append("no throughput for " + ", ".join(entry["missing"]))
            if row["shared_cells"]:
                notes.append(f"{row['shared_cells']} cells shared with earlier rows: "
                             f"{_hours(entry['new_gpu_hours'])} new GPU-hours")
            notes += entry["estimated"]
            if label == "best" and entry["modes"]:
                notes.append("modes " + ", ".join(entry["modes"]))
            concurrent = entry.get("gpu_hours_concurrent")
            stacked = entry.get("gpu_hours_stacked")
            lines.append(
                f"| {row['artifact']} | {row['cells']} | {'/'.join(map(str, row['epochs']))} | "
                f"{_hours(entry['gpu_hours'])} | "
                + " | ".join(_hours(entry["wall_hours"][str(g)]) for g in gpus)
                + f" | {_hours(concurrent) if concurrent is not None else 'not measured'} | "
                f"{_hours(stacked) if stacked is not None else 'not measured'} | "
                f"{'; '.join(notes)} |")
        lines.append("")
    return lines


# -- the Markdown summary of a gpu_check.json state ---------------------------------------------
def _num(value: float | None, digits: int = 0) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


def _throughput_lines(rows: list[dict], data_rate: float | None) -> list[str]:
    lines = ["| model | batch | shape | mode | train /s | eval /s | step ms | epoch s "
             "(projected) | peak GB | status |",
             "| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        shape = (f"{r['bptt']} tokens" if "bptt" in r else f"{r['length']} tokens"
                 if "length" in r else f"3x{r['size']}x{r['size']}" if "size" in r else "784")
        ok = r.get("status") == "ok"
        status = "ok" if ok else f"{r.get('status')}: {r.get('message', '')}"[:120]
        epoch = entry_epoch_seconds(r, data_rate) if ok else None
        lines.append(f"| {r['name']} | {r['batch']} | {shape} | {r['mode']} | "
                     f"{_num(r.get('train_per_s'))} | {_num(r.get('eval_per_s'))} | "
                     f"{_num(r.get('step_ms'), 2)} | {_num(epoch, 1)} | "
                     f"{_num(r.get('peak_mem_gb'), 2)} | {status} |")
    return lines


def _optim_lines(optim: dict) -> list[str]:
    if optim.get("status") != "ok":
        return [f"not measured: {optim.get('status')} {optim.get('message', '')}"]
    rows = optim["step_ms"]
    lines = [f"ResNet-110's {optim['tensors']} parameter tensors ({optim['numel']:,} values), "
             "gradients kept between steps; median of interleaved steps, each synchronized.", "",
             "| optimizer.step() | ms | / torch foreach |", "| --- | ---: | ---: |"]
    for label, row in rows.items():
        base = rows.get(label.split()[0] + " foreach", {}).get("ms")
        if "ms" in row:
            ratio = f"{row['ms'] / base:.2f}" if base else ""
            lines.append(f"| {label} | {row['ms']:.3f} | {ratio} |")
        else:
            lines.append(f"| {label} | {row['error']} | |")
    return lines


def _ddp_line(ddp: dict | None) -> str:
    if not ddp:
        return "not run"
    final = ddp.get("final") or {}
    figures = ", ".join(f"{k} {final[k]:.4g}" for k in ("train_loss", "test_acc", "epoch_seconds",
                                                        "samples_per_s") if k in final)
    return (f"`{ddp['command']}`: exit {ddp['exit']}, run {ddp['status']}, world_size "
            f"{ddp['world_size']}" + (f"; {figures}" if figures else ""))


def render(state: dict) -> str:
    """gpu_check.md: every step's outcome and figures, then the projection."""
    env = state.get("env", {})
    gpus = sorted({1, 8, int(env.get("gpus") or 1)})
    data = state.get("data") or {}
    data_rate = data.get("data_per_s") if data.get("status") == "ok" else None
    ok_rows = [r for r in state.get("throughput", []) if r.get("status") == "ok"]
    concurrency = {k: v for k, v in (state.get("concurrency") or {}).items() if "speedup" in v}
    lines = ["# gpu-check", "",
             f"{env.get('gpu', state.get('device'))} ({env.get('gpus', '?')} visible), torch "
             f"{env.get('torch')}, CUDA {env.get('cuda_build')}, cuDNN {env.get('cudnn')}, NCCL "
             f"{env.get('nccl')}; started {state.get('started')}, "
             f"{'finished ' + state['finished'] if state.get('finished') else 'NOT FINISHED'}, "
             f"{state.get('elapsed_s', 0):.0f} s of a {state.get('budget_s'):.0f} s budget.", "",
             f"Command: `{state.get('command')}`", "", "## Steps", "",
             "| step | status | seconds | cap s | detail |", "| --- | --- | ---: | ---: | --- |"]
    for name, step in state.get("steps", {}).items():
        lines.append(f"| {name} | {step['status']} | {step['seconds']} | {step['budget_s']} | "
                     f"{step['detail']} |")
    lines += ["", "## Throughput (synthetic data of the real shapes)", "",
              "Epoch seconds project one epoch of the paper's dataset: train split at the train "
              "rate, test split at the eval rate" + (f", plus the CIFAR data layer at "
                                                     f"{data_rate:,.0f} images/s" if data_rate
                                                     else "") + ".", ""]
    lines += _throughput_lines(state.get("throughput", []), data_rate)
    lines += ["", "## Optimizer step", ""] + _optim_lines(state.get("optim") or {})
    lines += ["", "## Concurrent training processes on one GPU (fp32, eager)", ""]
    for name, entry in (state.get("concurrency") or {}).items():
        rates = ", ".join(f"{n}: {r:,.0f}/s" for n, r in entry["rates"].items())
        lines.append(f"- {name}: total samples/s by process count {rates}"
                     + (f"; best {entry['best']} (x{entry['speedup']:.2f})" if "best" in entry
                        else ""))
    if not state.get("concurrency"):
        lines.append("not measured")
    lines += ["", "## Stacked seeds in one process (fp32, eager; scripts/bench_stack.py)", ""]
    for name, entry in (state.get("stacked") or {}).items():
        lines.append(f"- {name}: " + ", ".join(
            f"K={k}: {r['separate']:.2f} -> {r['stacked']:.2f} seeds x epochs/s "
            f"(x{r['speedup']:.2f}, noise {r['noise']:.3f})" for k, r in entry["rows"].items()))
    if not state.get("stacked"):
        lines.append("not measured")
    failed = [t["test"] for t in state.get("pytest", []) if t["outcome"] in ("FAILED", "ERROR")]
    lines += ["", "## pytest -m cuda", "",
              f"{len(state.get('pytest', []))} tests reported; failed: "
              f"{', '.join(failed) if failed else 'none'}", "", "## DDP", "",
              _ddp_line(state.get("ddp")), "", "## Projected GPU-hours per artifact", "",
              "One process per GPU; wall hours place the sweep's independent cells on the GPUs "
              "longest first. The ImageNet data loader (JPEG decoding on the CPU) is not "
              "measured: Table 3 assumes it keeps up. Stacked seeds: each config's seeds "
              "trained `stack_seeds=K` at a time, at the measured best K's speedup (other "
              "models one seed a process).", ""]
    if ok_rows:
        lines += render_markdown(project(ok_rows, data_rate=data_rate,
                                         concurrency=concurrency, gpus=tuple(gpus),
                                         stacked=state.get("stacked") or None))
    else:
        lines.append("nothing to project from: no throughput was measured")
    return "\n".join(lines) + "\n"
