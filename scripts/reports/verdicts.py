"""The paper's claims, checked: scripts/reports/claims.yaml lists each claim of section 4 with
its cells, metric and comparison; this module finds each cell's runs (grids.find_run, so a cell
reads only the runs its config asks for), pairs them by seed (.pairs) and computes a verdict:

- holds: the 95% bootstrap CI of the mean paired difference excludes 0 on the paper's side,
  and the Holm-adjusted paired t test agrees (p < alpha);
- contradicted: the same, on the other side;
- inconclusive: neither (with the seeds 80% power would need);
- untestable: fewer than `min_seeds` paired seeds (missing, unfinished or diverged runs, or a
  metric the runs do not hold), with the reason.

A claim with several comparisons holds when every one holds, and is contradicted when any one
is. docs/PROTOCOL.md, "Statistics", gives the choices and why; .verdict_files writes them."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from .claim_metrics import METRICS, finite
from .grids import Artifact, Cell, find_run, label
from .pairs import pair_seeds
from .runs import Run
from .stats import MAX_SEEDS, Effect, holm, paired_effect, seeds_for_power
from .sweeps import same_value

CLAIMS_FILE = Path(__file__).resolve().with_name("claims.yaml")
WORDS = ("holds", "contradicted", "inconclusive", "untestable")


class ClaimsError(ValueError):
    """claims.yaml cannot be read, or names a kind, metric or cell that does not exist."""


@dataclass(frozen=True)
class Comparison:
    """One check: the per-seed value sum(weight * metric(cell)) + offset; the paper predicts
    its sign is `side` (-1 or +1)."""

    label: str
    metric: str
    terms: tuple[tuple[Cell, float], ...]
    offset: float
    side: int


@dataclass
class Result:
    comparison: Comparison
    verdict: str = "untestable"
    reason: str = ""
    effect: Effect | None = None
    p_holm: float = math.nan
    seeds: int | None = None
    power_basis: str = ""
    protocol: list[str] = field(default_factory=list)


@dataclass
class ClaimResult:
    claim: dict
    scale: str
    results: list[Result]
    verdict: str
    reason: str
    decided_by: Result | None

    @property
    def seeds_for_power(self) -> int | None:
        found = [r.seeds for r in self.results if r.verdict == "inconclusive" and r.seeds]
        return max(found) if found else None

    @property
    def protocol(self) -> list[str]:
        return sorted({note for r in self.results for note in r.protocol})


def load_claims(path: Path = CLAIMS_FILE) -> dict:
    """The claims file, checked for the fields every claim needs."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ClaimsError(f"cannot read the claims file {path}: {first}") from error
    if not isinstance(data, dict) or not isinstance(data.get("claims"), list):
        raise ClaimsError(f"{path}: expected a mapping with a `claims:` list")
    for key in ("settings", "metrics"):
        if not isinstance(data.get(key), dict):
            raise ClaimsError(f"{path}: expected a `{key}:` mapping")
    for claim in data["claims"]:
        if not isinstance(claim, dict):
            raise ClaimsError(f"{path}: each claim is a mapping, not {str(claim)[:60]!r}")
        missing = [k for k in ("id", "artifact", "quote", "compare") if k not in claim]
        if missing:
            raise ClaimsError(f"{path}: claim {claim.get('id', '?')} lacks {missing}")
        if not all(isinstance(entry, dict) for entry in _as_list(claim["compare"])):
            raise ClaimsError(f"{path}: claim {claim['id']}: `compare` is a list of mappings")
        for entry in _as_list(claim["compare"]):
            for metric in _as_list(entry.get("metric")):
                if metric not in METRICS or metric not in data.get("metrics", {}):
                    raise ClaimsError(f"{path}: claim {claim['id']}: unknown metric {metric!r}")
    return data


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _cell_label(cell: Cell, artifact: Artifact) -> str:
    parts = [label(cell.dataset)] if len(set(c.dataset for c in artifact.cells())) > 1 else []
    if len(artifact.models) > 1:
        parts.append(label(cell.model))
    parts += [f"{k.rpartition('.')[2]} {v}" for k, v in cell.overrides if k != "optim.lr"]
    return " ".join(parts)


class Resolver:
    """Finds the cell a claim names in an artifact's grids. Several cells for one optimizer
    (Table 3's Adam lr search) resolve to the one Table 3 shows: the lowest mean of the
    artifact's pick metric for its chooser among the runs present."""

    def __init__(self, artifact: Artifact, runs: list[Run], seeds: tuple[int, ...],
                 settings: dict):
        self.artifact, self.runs, self.seeds, self.settings = artifact, runs, seeds, settings

    def cell(self, optim: str, where: dict) -> Cell:
        found = [c for c in self.artifact.cells() if c.optim == optim
                 and (where.get("model") is None or c.model == where["model"])
                 and (where.get("dataset") is None or c.dataset == where["dataset"])
                 and all(same_value(dict(c.overrides).get(k), v) for k, v in where.items()
                         if "." in k)]
        if not found:
            raise ClaimsError(f"no cell of {self.artifact.name} for {optim} {where}")
        return found[0] if len(found) == 1 else self._pick(found)

    def _pick(self, cells: list[Cell]) -> Cell:
        if not self.artifact.pick:
            raise ClaimsError(f"{self.artifact.name}: {len(cells)} cells match {cells[0].optim}")
        key, chooser = self.artifact.pick
        candidates = [c for c in self.artifact.cells() if c.optim == chooser
                      and c.model == cells[0].model]
        scores = []
        for index, cell in enumerate(candidates):
            values = [METRICS["final_top1_error"](run, self.settings) for run in
                      (find_run(self.runs, cell, s) for s in self.seeds)
                      if run is not None and run.status == "completed"]
            values = [v for v in values if v is not None]
            scores.append((float(np.mean(values)) if values else math.inf, index))
        best = dict(candidates[min(scores)[1]].overrides).get(key)
        return next((c for c in cells if same_value(dict(c.overrides).get(key), best)), cells[0])


def _expand(entry: dict) -> list[dict]:
    """One spec per combination of the listed fields (`others` is a set, not expanded)."""
    keys = [k for k in entry if k != "others" and isinstance(entry[k], list)]
    specs = []
    for combo in itertools.product(*(entry[k] for k in keys)):
        spec = dict(entry)
        spec.update(zip(keys, combo, strict=True))
        specs.append(spec)
    return specs


def comparisons(claim: dict, resolver: Resolver, data: dict) -> list[Comparison]:
    out = []
    for entry in _as_list(claim["compare"]):
        for spec in _expand(entry):
            out += _build(spec, resolver, data)
    return out


def _build(spec: dict, resolver: Resolver, data: dict) -> list[Comparison]:
    kind, metric = spec["kind"], spec["metric"]
    info = data["metrics"][metric]
    higher = bool(info.get("higher_is_better"))
    where = {k: v for k, v in spec.items() if k in ("model", "dataset") or "." in k}
    if kind == "gain_grows":
        return [_gain(spec, where, resolver, info["label"])]
    a = resolver.cell(spec["a"], where)
    name = f"{label(spec['a'])}"
    context = _cell_label(a, resolver.artifact)
    prefix = f"{context}: " if context else ""
    plateau = data["settings"]["plateau"]

    def pair(other: str, side: int, sign: str, offset: float = 0.0, text: str = ""):
        return Comparison(f"{prefix}{name} {sign} {label(other)}{text}, {info['label']}", metric,
                          ((a, 1.0), (resolver.cell(other, where), -1.0)), offset, side)

    if kind in ("below", "above"):
        return [pair(spec["b"], -1 if kind == "below" else 1, "<" if kind == "below" else ">")]
    if kind in ("best_of", "worst_of"):
        better = (1 if higher else -1) * (1 if kind == "best_of" else -1)
        return [pair(o, better, "<" if better < 0 else ">") for o in spec["others"]]
    if kind == "not_worse":
        margin = float(spec["margin"])
        if higher:
            return [pair(spec["b"], 1, "≥", margin, f" − {margin:g}")]
        return [pair(spec["b"], -1, "≤", -margin, f" + {margin:g}")]
    if kind == "fluctuates_more":
        return [pair(spec["b"], 1, "swings more than")]
    if kind == "stays_on_plateau":
        return [Comparison(f"{prefix}{name} stays within {plateau['eps']:g} of ln 10 at every "
                           f"epoch, {info['label']}", metric, ((a, 1.0),),
                           -float(plateau["eps"]), -1)]
    if kind == "leaves_plateau":
        return [Comparison(f"{prefix}{name} ends below ln 10 − {plateau['eps']:g}, "
                           f"{info['label']}", metric, ((a, 1.0),),
                           -(float(plateau["level"]) - float(plateau["eps"])), -1)]
    raise ClaimsError(f"unknown comparison kind {kind!r}")


def _gain(spec: dict, where: dict, resolver: Resolver, metric_label: str) -> Comparison:
    """(NG - base at `deep`) - (NG - base at `shallow`): NG's lead grows with depth."""
    base = spec.get("b") or spec["a"].removesuffix("ng")
    deep, shallow = {**where, "model": spec["deep"]}, {**where, "model": spec["shallow"]}
    terms = ((resolver.cell(spec["a"], deep), 1.0), (resolver.cell(base, deep), -1.0),
             (resolver.cell(spec["a"], shallow), -1.0), (resolver.cell(base, shallow), 1.0))
    return Comparison(f"{label(spec['a'])} − {label(base)} lower at {label(spec['deep'])} than "
                      f"at {label(spec['shallow'])}, {metric_label}", spec["metric"], terms,
                      0.0, -1)


def protocol_notes(run: Run, paper: dict, scale: str) -> list[str]:
    """How a run's protocol differs from the paper's: fewer epochs, less data, quick scale."""
    notes = ["quick scale"] if scale == "quick" else []
    epochs = finite(run.config.get("epochs"))
    if paper.get("epochs") and epochs is not None and epochs < paper["epochs"]:
        notes.append(f"{int(epochs)} of the paper's {paper['epochs']} epochs")
    dataset = run.config.get("dataset") if isinstance(run.config.get("dataset"), dict) else {}
    if dataset.get("limit"):
        notes.append(f"a {dataset['limit']}-example subset of the data")
    identity = run.summary.get("identity") or {}
    samples = finite(((identity.get("data") if isinstance(identity, dict) else None)
                       or {}).get("train_samples"))
    if paper.get("train_samples") and samples is not None and samples < paper["train_samples"]:
        notes.append(f"{int(samples)} of the paper's {paper['train_samples']} training examples")
    return notes


def measure(comparison: Comparison, runs: list[Run], seeds: tuple[int, ...], data: dict,
            protocol: dict, scale: str) -> Result:
    """The comparison on the seeds that pair (.pairs): every cell has a completed run with the
    metric."""
    settings = data["settings"]
    metric = METRICS[comparison.metric]
    result = Result(comparison)
    pairs = pair_seeds(runs, [cell for cell, _ in comparison.terms], seeds,
                       lambda run: metric(run, settings))
    result.protocol = sorted({note for found in pairs.runs for run in found
                              for note in protocol_notes(run, protocol, scale)})
    if len(pairs.seeds) < settings["min_seeds"]:
        detail = "; ".join(f"{kind}: {', '.join(where[:3])}" + (" ..." if len(where) > 3 else "")
                           for kind, where in sorted(pairs.problems.items()))
        result.reason = (f"{len(pairs.seeds)} paired seed(s) of {len(seeds)}, "
                         f"need {settings['min_seeds']}" + (f" ({detail})" if detail else ""))
        return result
    arrays = [np.asarray(column) for column in pairs.columns]
    result.effect = paired_effect(arrays, [w for _, w in comparison.terms], comparison.offset)
    return result


def decide(results: list[Result], data: dict) -> None:
    """Holm over the claim's testable comparisons, then each one's word and power."""
    settings = data["settings"]
    testable = [r for r in results if r.effect is not None]
    for result, adjusted in zip(testable, holm([r.effect.p for r in testable]), strict=True):
        result.p_holm = adjusted
        effect, side = result.effect, result.comparison.side
        paper_side = effect.low > 0 if side > 0 else effect.high < 0
        other_side = effect.high < 0 if side > 0 else effect.low > 0
        significant = adjusted < settings["alpha"]
        if significant and (paper_side or other_side):
            result.verdict = "holds" if paper_side else "contradicted"
            result.reason = "CI excludes 0 on the " + ("paper's side" if paper_side else
                                                       "other side")
            continue
        result.verdict = "inconclusive"
        result.reason = ("CI straddles 0" if not (paper_side or other_side) else
                         f"CI excludes 0 but Holm p {adjusted:.3g} ≥ {settings['alpha']}")
        sesoi = float(data["metrics"][result.comparison.metric]["sesoi"])
        observed = abs(effect.mean)
        basis = observed if observed >= sesoi else sesoi
        result.power_basis = "observed effect" if observed >= sesoi else f"smallest effect {sesoi:g}"
        result.seeds = seeds_for_power(basis, effect.sd, settings["alpha"], settings["power"])
        if result.seeds is None:       # say why no number: no spread, or beyond the search
            result.power_basis = ("no spread between seeds" if not effect.sd > 0
                                  else f"more than {MAX_SEEDS} seeds")


def summarize(claim: dict, results: list[Result], scale: str) -> ClaimResult:
    """One contradicted comparison contradicts the claim; it holds when all hold; else one still
    open leaves it inconclusive, and otherwise it is untestable. The reason quotes the deciding
    comparison: the surest contradiction, the weakest hold or open one, the first untestable."""
    words = [r.verdict for r in results]
    if "contradicted" in words:
        verdict = "contradicted"
    elif words and all(w == "holds" for w in words):
        verdict = "holds"
    else:
        verdict = "inconclusive" if "inconclusive" in words else "untestable"
    found = [r for r in results if r.verdict == verdict]
    if verdict == "contradicted":
        deciding = min(found, key=lambda r: r.p_holm)
    elif verdict == "untestable":
        deciding = found[0] if found else None
    else:
        deciding = max(found, key=lambda r: r.p_holm)
    count = f"all {len(results)}" if verdict == "holds" else f"{len(found)} of {len(results)}"
    reason = f"{count} comparisons {'hold' if verdict == 'holds' else verdict}"
    if deciding is not None and deciding.reason:
        reason += f"; {deciding.comparison.label}: {deciding.reason}"
    return ClaimResult(claim, scale, results, verdict, reason, deciding)


def evaluate(artifacts: dict[str, Artifact], runs: list[Run], data: dict | None = None,
             only: tuple[str, ...] | None = None) -> list[ClaimResult]:
    """Every claim (of the artifacts in `only`, if given) checked against `runs`."""
    data = data or load_claims()
    out = []
    for claim in data["claims"]:
        name = claim["artifact"]
        if (only and name not in only) or name not in artifacts:
            continue
        artifact = artifacts[name]
        seeds = artifact.plot_seeds
        resolver = Resolver(artifact, runs, seeds, data["settings"])
        protocol = (data.get("protocol") or {}).get(name) or {}
        try:
            found = comparisons(claim, resolver, data)
        except ClaimsError as error:    # e.g. --dataset digits: Figure 2 names CIFAR cells
            out.append(ClaimResult(claim, artifact.scale, [], "untestable",
                                   f"cannot be checked on this grid: {error}", None))
            continue
        results = [measure(c, runs, seeds, data, protocol, artifact.scale) for c in found]
        decide(results, data)
        out.append(summarize(claim, results, artifact.scale))
    return out
