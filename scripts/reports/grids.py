"""Which runs each artifact expects (mirroring the experiment sweeps), how to find them among
the runs present, and the `python run.py ...` command that produces a missing one."""

from __future__ import annotations

from dataclasses import dataclass, replace

from .runs import PENDING, STATUS_RANK, Run

OPTIM_LABELS = {
    "adam": "Adam", "adamclip": "AdamCLIP", "adamng": "AdamNG", "adamng_adap": "AdamNG_adap",
    "sgdm": "SGDM", "sgdmclip": "SGDMCLIP", "sgdmng": "SGDMNG", "sgdmng_adap": "SGDMNG_adap",
    "adagrad": "AdaGrad", "adagradng": "AdaGradNG", "adagradbng": "AdaGradBNG",
}
MODEL_LABELS = {
    "mlp6": "MLP-6", "mlp12": "MLP-12", "mlp18": "MLP-18",
    "resnet20": "ResNet-20", "resnet32": "ResNet-32", "resnet44": "ResNet-44",
    "resnet56": "ResNet-56", "resnet110": "ResNet-110", "preact_resnet34": "PreAct-ResNet-34",
    "lstm": "LSTM", "kimcnn": "Kim-CNN",
}
DATASET_LABELS = {
    "digits": "digits", "mnist": "MNIST", "cifar10": "CIFAR-10", "cifar100": "CIFAR-100",
    "imagenet": "ImageNet", "ptb": "PTB", "rt": "Rotten Tomatoes",
}
# A run that does not override one of these keys ran with this value (configs/dataset/ptb.yaml).
CONFIG_DEFAULTS = {"dataset.bptt": "40"}

TABLE_OPTIMS = ("adam", "adamclip", "adamng", "adamng_adap",
                "sgdm", "sgdmclip", "sgdmng", "sgdmng_adap")
SIX_OPTIMS = ("sgdm", "sgdmng", "adagrad", "adagradng", "adam", "adamng")
RESNETS = ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110")
FIVE_SEEDS = (1, 2, 3, 4, 5)


def label(name: str) -> str:
    return OPTIM_LABELS.get(name) or MODEL_LABELS.get(name) or DATASET_LABELS.get(name) or name


@dataclass(frozen=True)
class Cell:
    """One (dataset, model, optimizer, overrides) point of a sweep; seeds repeat it."""

    dataset: str
    model: str
    optim: str
    overrides: tuple[tuple[str, str], ...] = ()

    def matches(self, run: Run) -> bool:
        if (run.dataset, run.model, run.optim) != (self.dataset, self.model, self.optim):
            return False
        given = run.overrides
        return all(given.get(key, CONFIG_DEFAULTS.get(key)) == value
                   for key, value in self.overrides)

    def command(self, seed: int, out_dir: str = "results", run_args: str = "") -> str:
        words = ["python run.py", f"dataset={self.dataset}", f"model={self.model}",
                 f"optim={self.optim}", f"seed={seed}"]
        words += [f"{key}={value}" for key, value in self.overrides]
        if out_dir.rstrip("/") != "results":
            words.append(f"out_dir={out_dir}")
        if run_args.strip():
            words.append(run_args.strip())
        return " ".join(words)


@dataclass(frozen=True)
class Artifact:
    """A table or figure: the cross product of its datasets, models, optimizers and variants."""

    name: str
    title: str
    datasets: tuple[str, ...]
    models: tuple[str, ...]
    optims: tuple[str, ...]
    seeds: tuple[int, ...] = (1,)
    variants: tuple[tuple[tuple[str, str], ...], ...] = ((),)
    scale: str = "full"
    band_seeds: tuple[int, ...] = ()  # more seeds to draw when present (Figure 2: the tables')
    sweep: str = ""                   # the experiment config that runs it, if not `name`

    @property
    def plot_seeds(self) -> tuple[int, ...]:
        return tuple(dict.fromkeys(self.seeds + self.band_seeds))

    @property
    def experiment(self) -> str:
        """The `experiment=` config of this artifact's sweep (`<name>_quick` at quick scale)."""
        base = self.sweep or self.name
        return f"{base}_quick" if self.scale == "quick" else base

    def cells(self) -> list[Cell]:
        return [Cell(d, m, o, v) for d in self.datasets for m in self.models
                for v in self.variants for o in self.optims]

    def adapt(self, dataset: str | None = None, seeds: tuple[int, ...] | None = None,
              scale: str | None = None) -> Artifact:
        """The same grid on another dataset (`digits` for the demo), seed list or scale."""
        changes: dict = {}
        if dataset:
            changes["datasets"] = (dataset,)
        if seeds:
            changes["seeds"], changes["band_seeds"] = tuple(seeds), ()
        if scale:
            changes["scale"] = scale
        return replace(self, **changes)


def _bptt(value: int) -> tuple[tuple[str, str], ...]:
    return (("dataset.bptt", str(value)),)


ARTIFACTS: dict[str, Artifact] = {
    "figure1": Artifact("figure1", "Figure 1: MLP on MNIST", ("mnist",),
                        ("mlp6", "mlp12", "mlp18"), SIX_OPTIMS),
    "table1": Artifact("table1", "Table 1: CIFAR-10 test error (%)", ("cifar10",), RESNETS,
                       TABLE_OPTIMS, FIVE_SEEDS),
    "table2": Artifact("table2", "Table 2: CIFAR-100 test error (%)", ("cifar100",), RESNETS,
                       TABLE_OPTIMS, FIVE_SEEDS),
    # Figure 2's sweep is seed 1; Tables 1-2 share its folders and add seeds 2-5 (the band).
    "figure2": Artifact("figure2", "Figure 2: ResNet-110 on CIFAR-10/100",
                        ("cifar10", "cifar100"), ("resnet110",), TABLE_OPTIMS,
                        band_seeds=FIVE_SEEDS),
    "table3": Artifact("table3", "Table 3: ImageNet top-1/top-5 error (%)", ("imagenet",),
                       ("preact_resnet34",), ("adam", "adamng", "sgdm", "sgdmng")),
    "figure3": Artifact("figure3", "Figure 3: LSTM on PTB", ("ptb",), ("lstm",), SIX_OPTIMS,
                        variants=(_bptt(40), _bptt(400), _bptt(1000))),
    "table4": Artifact("table4", "Table 4: Rotten Tomatoes best validation accuracy (%)",
                       ("rt",), ("kimcnn",),
                       ("adamng", "adam", "adagradng", "adagrad", "sgdmng", "sgdm")),
    "diagnostics": Artifact("diagnostics", "Per-layer gradient norms, MLP-18",
                            ("mnist",), ("mlp18",), ("adam", "adamng"), sweep="figure1"),
}
DEMO_OPTIMS = ("sgdm", "sgdmng", "adam", "adamng")


def demo_artifacts(dataset: str = "digits", seeds: tuple[int, ...] = (1,)) -> dict[str, Artifact]:
    """The `make demo` grid: a mini Figure 1 on the bundled digits data, and its diagnostics."""
    figure = replace(ARTIFACTS["figure1"], name="demo_figure1",
                     title=f"Demo: MLP on {label(dataset)}", optims=DEMO_OPTIMS)
    table = replace(figure, name="demo_table",
                    title=f"Demo: final test error (%) and loss, MLP on {label(dataset)}")
    diagnostics = replace(ARTIFACTS["diagnostics"], name="demo_diagnostics", sweep="demo")
    return {art.name: replace(art.adapt(dataset=dataset, seeds=seeds), sweep="demo")
            for art in (figure, table, diagnostics)}


def find_run(runs: list[Run], cell: Cell, seed: int) -> Run | None:
    """The run answering (cell, seed); among several, the most finished, then the most epochs."""
    found = [run for run in runs if run.seed == seed and cell.matches(run)]
    if not found:
        return None
    return min(found, key=lambda run: (STATUS_RANK[run.status], -len(run.records), str(run.path)))


@dataclass(frozen=True)
class Pending:
    """An expected run with no result yet: missing, or a status in runs.PENDING."""

    cell: Cell
    seed: int
    state: str
    command: str
    detail: str = ""


def pending_runs(artifact: Artifact, runs: list[Run], out_dir: str = "results",
                 run_args: str = "") -> list[Pending]:
    """Expected runs that gave no result. Diverged runs are results ("div."), not listed."""
    pending = []
    for cell in artifact.cells():
        for seed in artifact.seeds:
            run = find_run(runs, cell, seed)
            fresh = cell.command(seed, out_dir, run_args)
            if run is None:
                pending.append(Pending(cell, seed, "missing", fresh))
            elif run.status in PENDING:
                message = str(run.summary.get("message") or "")
                detail = f"{run.progress}" + (f": {message}" if message else "")
                pending.append(Pending(cell, seed, run.status, run.command or fresh, detail))
    return pending


def format_pending(artifact: Artifact, pending: list[Pending], limit: int | None = None) -> str:
    """The list: one line per run, the command that produces (or resumes) it; at most `limit`
    command lines, then a count of the rest."""
    expected = len(artifact.cells()) * len(artifact.seeds)
    if not pending:
        return f"[{artifact.name}] all {expected} runs present."
    lines = [f"[{artifact.name}] {len(pending)} run(s) without a result (of {expected} expected):"]
    for item in pending[:limit]:
        note = f"  # {item.state}" + (f", {item.detail}" if item.detail else "")
        lines.append(f"  {item.command}{note}")
    if limit is not None and len(pending) > limit:
        lines.append(f"  ... and {len(pending) - limit} more")
    return "\n".join(lines)
