"""Config checks that run before any training, the run folder's name, and provenance.

Importing this module registers the OmegaConf resolvers the root config uses; run.py and any
process that composes the config (a submitit worker too) import it first.
"""

from __future__ import annotations

import math
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

import torch
import yaml
from omegaconf import DictConfig, OmegaConf

from .errors import ConfigError

__all__ = ["ConfigError", "check_config", "command_line", "provenance", "resolve_device",
           "stored_overrides"]

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
REPO_DIR = CONFIG_DIR.parent

# A file system refuses a longer name than this in one path component (ext4, xfs, tmpfs, ...).
MAX_NAME_BYTES = 255


def path_part(value: object, key: str) -> str:
    """`value` as one folder name of a run's path, checked before Hydra creates the folder: a
    separator or `..` would put the run (and retrain=true's deletions) outside out_dir."""
    name = str(value)
    if "/" in name or (os.altsep and os.altsep in name) or name in (".", "..") or "\0" in name:
        raise ConfigError(
            f"{key}={name!r} would put the run folder outside out_dir: the values that name a "
            "run's folder may not hold a path separator or be '..'. Nothing was written.")
    size = len(os.fsencode(name))
    if size > MAX_NAME_BYTES:
        raise ConfigError(
            f"the run folder name {name[:60]}... is {size} bytes; a file system allows "
            f"{MAX_NAME_BYTES}. It is made of the overrides that change the result: name fewer or "
            "shorter ones on the command line (the values an experiment config in "
            "configs/experiment/ sets do not name the folder). Nothing was written.")
    return name


def run_path(dataset: object, model: object, optim: object, extra: str, seed: object) -> str:
    """A run's folder below <out_dir>/runs: <dataset>/<model>/<optim>/<extra>/seed<k>, where
    <extra> is the overrides that change the result (Hydra's override_dirname) or "default"."""
    parts = [path_part(dataset, "dataset.name"), path_part(model, "model.name"),
             path_part(optim, "optim.name"), path_part(extra or "default", "<extra>"),
             path_part(f"seed{seed}", "seed")]
    return "/".join(parts)


if not OmegaConf.has_resolver("run_path"):
    OmegaConf.register_new_resolver("run_path", run_path)


def group_choices(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def _datasets_with_input(kinds: list[str]) -> list[str]:
    names = []
    for name in group_choices("dataset"):
        spec = yaml.safe_load((CONFIG_DIR / "dataset" / f"{name}.yaml").read_text()) or {}
        if spec.get("input") in kinds:
            names.append(name)
    return names


# The optimizer configs use lr 0.1 at most; a step of 1e38 overflows float32 at once. An lr above
# this is a typo, not an experiment.
MAX_LR = 1e6


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_config(cfg: DictConfig) -> None:
    """Fail before any training on values that cannot work, naming the valid choices."""
    model_inputs = list(cfg.model.inputs)
    if cfg.dataset.input not in model_inputs:
        fits = ", ".join(_datasets_with_input(model_inputs)) or "none"
        raise ConfigError(
            f"model={cfg.model.name} cannot train on dataset={cfg.dataset.name}: the model takes "
            f"{'/'.join(model_inputs)} inputs and the dataset gives {cfg.dataset.input}. "
            f"Compatible datasets: {fits}."
        )
    for key in ("epochs", "batch_size", "log_every", "grad_norm_every"):
        value = cfg[key]
        if not _is_int(value) or value <= 0:
            raise ConfigError(f"{key} must be a positive integer, got {value!r} (e.g. {key}=10).")
    if not _is_int(cfg.seed) or cfg.seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {cfg.seed!r} (e.g. seed=1).")
    lr = cfg.optim.get("lr")
    if (not isinstance(lr, (int, float)) or isinstance(lr, bool) or not math.isfinite(lr)
            or not 0 < lr <= MAX_LR):
        raise ConfigError(f"optim.lr must be a positive number no larger than {MAX_LR:g}, got "
                          f"{lr!r} (e.g. optim.lr=0.01).")
    if not isinstance(cfg.get("retrain", False), bool):
        raise ConfigError(f"retrain must be true or false, got {cfg.retrain!r}.")
    if cfg.amp not in ("off", "bf16"):
        raise ConfigError(f"amp must be 'off' or 'bf16', got {cfg.amp!r}.")
    if cfg.get("resume_across_commits", "allow") not in ("allow", "refuse"):
        raise ConfigError("resume_across_commits must be 'allow' or 'refuse', got "
                          f"{cfg.resume_across_commits!r}.")
    for key in ("dataset.name", "model.name", "optim.name", "seed"):
        path_part(OmegaConf.select(cfg, key), key)      # Hydra checks these too, for its folder


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(str(name))
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ConfigError(f"device={name} is not a device this suite trains on: use device=auto, "
                          "cpu, cuda or cuda:<index>.")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name} was asked for, but CUDA is not available here. "
                          "Use device=cpu or device=auto.")
    return device


# Where the data sits is the machine's business, not the run's: a results folder copied to
# another machine must not carry (or depend on) this one's paths. Set BNG_DATA_ROOT there.
UNSTORED_OVERRIDES = ("data_root",)


def stored_overrides(overrides: list[str]) -> list[str]:
    """`overrides` less UNSTORED_OVERRIDES (with or without Hydra's +, ++ and ~ prefixes)."""
    return [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in UNSTORED_OVERRIDES]


def command_line(task_overrides: list[str], stored: bool = False) -> str:
    """The command that reproduces this one run: `python run.py ...`, or under torchrun the
    torchrun command that started this process (its parent), with this run's overrides. The
    `stored` form, kept in the run files, leaves out UNSTORED_OVERRIDES."""
    if stored:
        task_overrides = stored_overrides(task_overrides)
    args = " ".join(shlex.quote(o) for o in task_overrides)
    if "TORCHELASTIC_RUN_ID" not in os.environ:
        return f"python run.py {args}".rstrip()
    launcher = _torchrun_prefix()
    if launcher is None:
        nodes = int(os.environ.get("WORLD_SIZE", "1")) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        launcher = (f"torchrun --nnodes={max(nodes, 1)} "
                    f"--nproc_per_node={os.environ.get('LOCAL_WORLD_SIZE', '1')}")
    return f"{launcher} run.py {args}".rstrip()


def _torchrun_prefix() -> str | None:
    """The parent's command line up to this script, for example `torchrun --nproc_per_node=2`
    or `python3 -m torch.distributed.run --standalone --nproc_per_node=2` (Linux's /proc)."""
    try:
        argv = Path(f"/proc/{os.getppid()}/cmdline").read_bytes().decode().split("\0")
        script = Path(sys.argv[0]).resolve()
        end = next(i for i, a in enumerate(argv) if a and Path(a).resolve() == script)
    except (OSError, UnicodeDecodeError, StopIteration):
        return None
    head = [Path(a).name if a.startswith("/") else a for a in argv[:end]]
    if len(head) > 1 and head[1] == "torchrun":
        head = head[1:]                        # `python3 torchrun ...` is `torchrun ...`
    return " ".join(shlex.quote(a) for a in head) or None


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_DIR, capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=REPO_DIR, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if out.returncode != 0:
        return "unknown"
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def provenance(device: torch.device) -> dict:
    """What a reader needs to trust or repeat the run: code, library and hardware versions."""
    return {
        "git_commit": _git_commit(),
        "python": sys.version.split()[0],
        "torch": str(torch.__version__),
        "cuda": torch.version.cuda,
        "device": (torch.cuda.get_device_name(device) if device.type == "cuda"
                   else platform.processor() or platform.machine()),
        "hostname": platform.node(),
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
    }
