"""Config checks that run before any training, the run folder's name, and provenance.

Importing this module registers the OmegaConf resolvers the root config uses; run.py and any
process that composes the config (a submitit worker too) import it first.
"""

from __future__ import annotations

import difflib
import math
import os
import platform
import re
import shlex
import subprocess
import sys
from pathlib import Path

import torch
import yaml
from omegaconf import DictConfig, OmegaConf

from .errors import ConfigError

__all__ = ["ConfigError", "check_config", "command_line", "provenance", "resolve_device",
           "stored_overrides", "check_overrides"]

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


# Where the data and the results sit is the machine's business, not the run's: a results folder
# copied to another machine must not carry (or depend on) this one's paths. Set BNG_DATA_ROOT
# there; a run's folder is where it lies.
UNSTORED_OVERRIDES = ("data_root", "out_dir")


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


def cpu_name() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo, else what platform knows), or "cpu":
    platform.processor() is empty on Linux and platform.machine() names only the architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "cpu model") and value.strip():
                return value.strip()
    except OSError:
        pass
    name = platform.processor()
    return name if name and name != platform.machine() else "cpu"


def provenance(device: torch.device) -> dict:
    """What a reader needs to trust or repeat the run: code, library and hardware versions."""
    return {
        "git_commit": _git_commit(),
        "python": sys.version.split()[0],
        "torch": str(torch.__version__),
        "cuda": torch.version.cuda,
        "device": (torch.cuda.get_device_name(device) if device.type == "cuda"
                   else cpu_name()),
        "hostname": platform.node(),
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
    }


# ------------------------------------------------------------------------- the command line
# The keys a config may lack that the code reads when they are given, so `+key=` (or `++key=`)
# may add them: every other key must exist in the composed config. Each is documented where it
# is read: configs/config.yaml's exclude list (dataset.workers, dataset.verify_md5),
# experiments/schedule.py (the schedule's options), configs/optim/sgdm.yaml (nesterov) and
# bng.block_normalize (the normalize node's settings).
OPTIONAL_KEYS = ("dataset.workers", "dataset.verify_md5", "dataset.train.nesterov",
                 "dataset.train.schedule.warmup_steps", "dataset.train.schedule.warmup_factor",
                 "dataset.train.schedule.decay", "dataset.train.schedule.gamma",
                 "dataset.train.schedule.milestones",
                 *(f"optim.normalize.{key}" for key in ("mode", "blocks", "alpha", "threshold",
                                                        "norm_dtype")))
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
_INT = re.compile(r"[-+]?\d+")


def check_overrides(args: list[str]) -> list[str]:
    """The command line's arguments with every value override checked against the config, before
    Hydra sees them: a key the config does not have is refused with the nearest one (ConfigError),
    `+key=` only for OPTIONAL_KEYS, and an integer given for a float key is written as that float
    (`optim.lr=1` is `optim.lr=1.0`), so one value has one spelling: one folder, one identity."""
    overrides = [(i, a) for i, a in enumerate(args) if "=" in a and not a.startswith("-")]
    groups = dict(_group_choices(a) for _, a in overrides if _is_group(_key(a)))
    values = [(i, a) for i, a in overrides if not _is_group(_key(a))
              and not _key(a).startswith("hydra.") and "@" not in _key(a)]
    root = yaml.safe_load((CONFIG_DIR / "config.yaml").read_text()) or {}
    if all(_key(a) in root and not a.startswith("+") for _, a in values):
        return args          # the root's own keys (seed, epochs, out_dir, ...): none is a float
    from hydra import initialize_config_dir

    out = list(args)
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):   # one for every compose
        configs = _Configs(groups)
        for i, arg in values:
            out[i] = _checked(arg, configs)
    return out


def _key(arg: str) -> str:
    return arg.split("=", 1)[0].lstrip("+~")


def _is_group(key: str) -> bool:
    return bool(key) and "." not in key and (CONFIG_DIR / key).is_dir()


def _group_choices(arg: str) -> tuple[str, list[str]]:
    key, value = arg.split("=", 1)
    return key.lstrip("+~"), [v.strip() for v in value.split(",") if v.strip()]


class _Configs:
    """The config composed with each group's first choice (`base`) and, only when a key is not
    in it, once with each other choice of a swept group (on the command line or in the
    experiment's sweep). Nothing when it does not compose: Hydra then reports why itself."""

    def __init__(self, groups: dict[str, list[str]]) -> None:
        self.groups = {g: c for g, c in groups.items() if c}
        self.first = {g: c[0] for g, c in self.groups.items()}
        self.base = self._compose(self.first, hydra=True)
        self._others: list[DictConfig] | None = None

    def _compose(self, choices: dict[str, str], hydra: bool = False) -> DictConfig | None:
        from hydra import compose
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        try:
            return compose("config", [f"{g}={c}" for g, c in choices.items()],
                           return_hydra_config=hydra)
        except (HydraException, OmegaConfBaseException, ValueError):
            return None

    def others(self) -> list[DictConfig]:
        if self._others is None:
            swept = dict(self.groups)
            params = OmegaConf.select(self.base, "hydra.sweeper.params") if self.base else None
            for key, value in (params or {}).items():
                if _is_group(key) and key not in swept:
                    swept[key] = ["", *(v.strip() for v in str(value).split(","))]
            picks = [{**self.first, g: c} for g, cs in swept.items() for c in cs[1:]]
            self._others = [c for c in map(self._compose, picks) if c is not None]
        return self._others

    def holding(self, key: str) -> list[DictConfig]:
        """The configs that have `key` (the base alone when it does)."""
        def has(config: DictConfig) -> bool:
            return OmegaConf.select(config, key, default=_MISSING) is not _MISSING

        if self.base is None or has(self.base):
            return [self.base] if self.base is not None else []
        return [c for c in self.others() if has(c)]


def _checked(arg: str, configs: _Configs) -> str:
    key, value = arg.split("=", 1)
    name, adds = key.lstrip("+~"), key.startswith("+")
    if key.startswith("~") or configs.base is None:
        return arg
    found = configs.holding(name)
    if not found and adds and name in OPTIONAL_KEYS:
        return arg
    if not found:
        if name in OPTIONAL_KEYS:
            raise ConfigError(f"this config has no key '{name}': it is optional, add it with "
                              f"+{name}={value}. Nothing was run.")
        near = _nearest(name, [configs.base, *configs.others()])
        hint = f"; did you mean '{near}'?" if near else ""
        raise ConfigError(f"unknown key '{name}'{hint} (python run.py --cfg job lists the keys). "
                          "Nothing was run.")
    if adds and not key.startswith("++"):
        return arg                           # Hydra refuses to add a key that exists
    if any(isinstance(OmegaConf.select(c, name), float) for c in found):
        tokens = value.split(",")
        if all(_NUMBER.fullmatch(t.strip()) for t in tokens):
            value = ",".join(repr(float(t)) if _INT.fullmatch(t.strip()) else t for t in tokens)
    return f"{key}={value}"


def _nearest(name: str, configs: list[DictConfig]) -> str | None:
    """The known key nearest to `name`: a sibling whose last part is spelled alike, else a key
    spelled alike as a whole."""
    keys = sorted(set(_dotted_keys(configs)) | set(OPTIONAL_KEYS))
    parent, _, leaf = name.rpartition(".")
    siblings = {k.rpartition(".")[2]: k for k in keys if k.rpartition(".")[0] == parent}
    near = difflib.get_close_matches(leaf, list(siblings), n=1, cutoff=0.6)
    if near:
        return siblings[near[0]]
    near = difflib.get_close_matches(name, keys, n=1, cutoff=0.8)
    return near[0] if near else None


_MISSING = object()


def _dotted_keys(configs: list[DictConfig]) -> list[str]:
    keys: set[str] = set()

    def walk(node: object, prefix: str) -> None:
        if isinstance(node, DictConfig):
            for key in node.keys():
                if key != "hydra":
                    keys.add(f"{prefix}{key}")
                    walk(node._get_node(key), f"{prefix}{key}.")

    for config in configs:
        walk(config, "")
    return sorted(keys)
