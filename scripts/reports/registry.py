"""The artifacts: each named once, with its kind, its title, the sweeps whose grids it reads and
the renderers that draw it. `report.py` takes its targets and dispatch from here, `report.py
--list` prints the names by kind, and the Makefile reads its lists from that. A new table is one
entry here and one renderer.

This module imports only the standard library, so `--list` runs before anything is installed
(make reads it while parsing the Makefile); the grids are read from configs/ when an artifact is
built (`artifacts()`), and a renderer is imported when it draws."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

# figure, table: the paper's artifacts and Table 4's companions (`make <name>` runs their sweeps);
# tuning: the paper's holdout searches; ablation: the other reading of an open choice;
# diagnostics: drawn from another artifact's runs; demo: `make demo`'s grid on bundled data.
KINDS = ("figure", "table", "tuning", "ablation", "diagnostics", "demo")
TABLE = ("tables:render_table", "targets:render_targets")  # a table and where each cell ends
TUNING = ("tuning:render_tuning",)
READINGS = ("tuning:render_readings",)


@dataclass(frozen=True)
class Sweep:
    """One experiment config's grid as an artifact reads it. `reference`: runs another sweep makes
    (`make` does not run it for this artifact); `only`: keys narrowed, e.g. (("models",
    ("resnet56",)),); `optims_of`: the optimizers are another sweep's."""

    name: str
    reference: bool = False
    only: tuple[tuple[str, object], ...] = ()
    optims_of: str | None = None


@dataclass(frozen=True)
class Entry:
    """An artifact. `render`: "module:function" of this package, each called as
    `function(artifact, runs, out_dir, paper) -> [paths]`; `options`: the Artifact's other fields
    (`tune`, `pick`, `columns`); `band_seeds_of`: draw that sweep's seeds too when present;
    `pending`: list its missing runs (not for a table whose runs are another entry's)."""

    name: str
    kind: str
    title: str
    sweeps: tuple[Sweep, ...]
    render: tuple[str, ...]
    options: tuple[tuple[str, object], ...] = ()
    band_seeds_of: str | None = None
    pending: bool = True


def _ref(name: str, **only) -> Sweep:
    optims_of = only.pop("optims_of", None)
    return Sweep(name, True, tuple(only.items()), optims_of)


def _own(name: str, **only) -> Sweep:
    return Sweep(name, False, tuple(only.items()))


RESNET56 = ("resnet56",)
IMAGENET_ADAM = _ref("table3_adam", variants=((("optim.lr", "0.001"),),))
ENTRIES = (
    Entry("table1", "table", "Table 1: CIFAR-10 test error (%)", (_own("table1"),), TABLE,
          (("columns", "error"),)),
    Entry("table2", "table", "Table 2: CIFAR-100 test error (%)", (_own("table2"),), TABLE,
          (("columns", "error"),)),
    Entry("table3", "table", "Table 3: ImageNet top-1/top-5 error (%)",
          (_own("table3_adam"), _own("table3")), TABLE,
          (("columns", "topk"), ("pick", ("optim.lr", "adam")))),
    Entry("table4", "table", "Table 4: Rotten Tomatoes best validation accuracy (%)",
          (_own("table4"),), TABLE, (("columns", "best_acc"),)),
    Entry("figure1", "figure", "Figure 1: MLP on MNIST", (_own("figure1"),),
          ("figures:figure1", "targets:render_targets")),
    # Figure 2's sweep is seed 1; Tables 1-2 share its folders and add seeds 2-5 (the band).
    Entry("figure2", "figure", "Figure 2: ResNet-110 on CIFAR-10/100", (_own("figure2"),),
          ("figures:figure2", "targets:render_targets"), band_seeds_of="table1"),
    Entry("figure3", "figure", "Figure 3: LSTM on PTB", (_own("figure3"),),
          ("figures:figure3", "targets:render_targets")),
    Entry("diagnostics", "diagnostics", "Per-layer gradient norms, MLP-18",
          (_own("figure1", models=("mlp18",), optims=("adam", "adamng")),),
          ("diagnostics:render_diagnostics",)),
    Entry("tune_adam_lr", "tuning",
          "Tuning: Adam's learning rate, ResNet-56, holdout error (%)",
          (_own("tune_adam_lr"),), TUNING, (("tune", ("lr", "adam_lr")),)),
    Entry("tune_clip_threshold", "tuning",
          "Tuning: the clipping threshold τ, ResNet-56, holdout error (%)",
          (_own("tune_clip_threshold"),), TUNING, (("tune", ("threshold", "clip_threshold")),)),
    Entry("tune_adap_alpha", "tuning", "Tuning: NG_adap's ratio α, ResNet-56, holdout error (%)",
          (_own("tune_adap_alpha"),), TUNING, (("tune", ("alpha", "adap_alpha")),)),
    Entry("ablation_bn_blocks", "ablation",
          "Ablation: BatchNorm as its own block or folded into the convolution's (CIFAR-10 "
          "ResNet-56, test error %)",
          (_ref("table1", optims_of="ablation_bn_blocks", models=RESNET56),
           _own("ablation_bn_blocks")), READINGS),
    Entry("ablation_clip_global", "ablation",
          "Ablation: CLIP per layer or on the global norm (CIFAR-10 ResNet-56, holdout error %)",
          (_ref("tune_clip_threshold", datasets=("cifar10",)), _own("ablation_clip_global")),
          TUNING, (("tune", ("threshold", "clip_threshold")),)),
    Entry("ablation_imagenet_decay", "ablation",
          "Ablation: ImageNet's \"0.001 exponential decay\", two readings (top-1/top-5 error %)",
          (IMAGENET_ADAM, _ref("table3"), _own("ablation_imagenet_decay")), READINGS),
    Entry("ablation_adagrad_mlp", "ablation",
          "Ablation: AdaGradNG as Algorithm 1 or 2 (AdaGradBNG), MLP on MNIST",
          (_ref("figure1", optims=("adagrad", "adagradng")), _own("ablation_adagrad_mlp")),
          TABLE, (("columns", "demo"),)),
    Entry("ablation_adagrad_rt", "ablation",
          "Ablation: AdaGradNG as Algorithm 1 or 2 (AdaGradBNG), Rotten Tomatoes best "
          "validation accuracy (%)",
          (_ref("table4", optims=("adagrad", "adagradng")), _own("ablation_adagrad_rt")),
          TABLE, (("columns", "best_acc"),)),
    Entry("ablation_resnet110_warmup", "ablation",
          "Ablation: ResNet-110 from lr 0.1, or after He et al.'s 400-step warm-up at 0.01 "
          "(CIFAR-10, test error %)",
          (_ref("table1", models=("resnet110",), optims_of="ablation_resnet110_warmup"),
           _own("ablation_resnet110_warmup")), READINGS),
    Entry("ablation_imagenet_inverse_time", "ablation",
          "Ablation: ImageNet's \"0.001 exponential decay\" as Torch7's per-iteration "
          "inverse-time decay (top-1/top-5 error %)",
          (IMAGENET_ADAM, _ref("table3"), _own("ablation_imagenet_inverse_time")), READINGS),
    Entry("table4_lr", "table",
          "Table 4's learning-rate sensitivity: best validation accuracy (%) against lr",
          (_own("table4_lr_sgdm"), _own("table4_lr_adam"), _own("table4_lr_adagrad"),
           _ref("table4")), ("sensitivity:render_lr",)),
    Entry("table4_readings", "table",
          "Table 4 under two readings of Kim's setup: best validation accuracy (%)",
          (_own("table4_kim"), _own("table4_tfport"), _ref("table4")),
          ("sensitivity:render_readings",)),
    # `make demo`: a mini Figure 1 on the bundled digits data ({dataset}: the data it ran on).
    Entry("demo_figure1", "demo", "Demo: MLP on {dataset}", (_own("demo"),),
          ("figures:figure1", "targets:render_targets")),
    Entry("demo_table", "demo", "Demo: final test error (%) and loss, MLP on {dataset}",
          (_own("demo"),), ("tables:render_table",), (("columns", "demo"),), pending=False),
    Entry("demo_diagnostics", "demo", "Per-layer gradient norms, MLP-18",
          (_own("demo", models=("mlp18",), optims=("adam", "adamng")),),
          ("diagnostics:render_diagnostics",)),
)
REGISTRY = {entry.name: entry for entry in ENTRIES}
TARGETS = [entry.name for entry in ENTRIES if entry.kind != "demo"]


def names(*kinds: str) -> list[str]:
    """The artifacts of these kinds (every kind when none is given), in registry order."""
    return [entry.name for entry in ENTRIES if not kinds or entry.kind in kinds]


def renderers(name: str) -> list[Callable]:
    """The functions that draw artifact `name`, imported now (matplotlib, pandas)."""
    found = []
    for spec in REGISTRY[name].render:
        module, _, function = spec.partition(":")
        found.append(getattr(importlib.import_module(f"{__package__}.{module}"), function))
    return found


def build(entry: Entry, dataset: str | None = None):
    """The entry's grids.Artifact, its grids read from configs/ (`dataset` fills the title)."""
    from .grids import Artifact, grid
    from .sweeps import read_sweep

    grids = []
    for sweep in entry.sweeps:
        only = dict(sweep.only)
        if sweep.optims_of:
            only["optims"] = read_sweep(sweep.optims_of).values("optim")
        grids.append(grid(sweep.name, reference=sweep.reference, **only))
    options = dict(entry.options)
    if entry.band_seeds_of:
        options["band_seeds"] = grid(entry.band_seeds_of).seeds
    title = entry.title.format(dataset=dataset) if dataset else entry.title
    return Artifact(entry.name, title, tuple(grids), **options)


@cache
def artifacts() -> dict:
    """Every artifact but the demo's, by name (grids.Artifact, as the paper's runs ask)."""
    return {name: build(REGISTRY[name]) for name in TARGETS}


def demo_artifacts(dataset: str = "digits", seeds: tuple[int, ...] = (1,)) -> dict:
    """The `make demo` artifacts on `dataset` (bundled digits), for `seeds`."""
    from .grids import label

    return {entry.name: build(entry, label(dataset)).adapt(dataset=dataset, seeds=seeds)
            for entry in ENTRIES if entry.kind == "demo"}
