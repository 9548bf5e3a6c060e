"""The paper's claims, checked: scripts/reports/claims.yaml lists each claim of section 4 with
its cells, measure and comparison; this module reads it, finds each claim's cells
(grids.find_run, so a cell reads only the runs its config asks for) and builds its comparisons;
.verdict_rules pairs the seeds and gives each comparison and claim its word:

- holds: the Holm-adjusted test clears the claim's level with the effect on the paper's side of
  its margin (0, or the magnitude a word like "much better" asks for);
- contradicted: the same on the other side, or an equivalence to 0 where a margin is asked;
- inconclusive: neither (with the seeds 80% power would need, as a range);
- untestable: fewer than `min_seeds` paired seeds, or a claim about a value never run.

Each claim is also read on its secondary measure (the final value, where the primary is a speed)
and on the paper's own printed numbers (.paper_checks). docs/PROTOCOL.md, "Statistics", gives
the choices and why; .verdict_files writes them."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import yaml

from .claim_metrics import METRICS
from .grids import Artifact, Cell, find_run, label
from .runs import Run
from .stats import pocock_alpha
from .sweeps import same_value
from .verdict_rules import (
    WORDS,
    ClaimResult,
    Comparison,
    Result,
    decide,
    measure,
    protocol_notes,
    summarize,
)

__all__ = ["WORDS", "ClaimResult", "ClaimsError", "Comparison", "Resolver", "Result", "evaluate",
           "load_claims", "protocol_notes"]

CLAIMS_FILE = Path(__file__).resolve().with_name("claims.yaml")


class ClaimsError(ValueError):
    """claims.yaml cannot be read, or names a kind, metric or cell that does not exist."""


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


def _worse(higher: bool, side: int, a: Cell, b: Cell) -> frozenset[Cell]:
    """The cell the paper predicts to be worse in a - b (sign `side`): the lower one for a
    higher-is-better metric, else the higher one."""
    return frozenset({a if (side > 0) != higher else b})


def _build(spec: dict, resolver: Resolver, data: dict) -> list[Comparison]:
    kind, metric = spec["kind"], spec["metric"]
    info = data["metrics"][metric]
    higher = bool(info.get("higher_is_better"))
    where = {k: v for k, v in spec.items() if k in ("model", "dataset") or "." in k}
    scope = tuple(sorted((k, v) for k, v in where.items()))
    if kind == "gain_grows":
        return [_gain(spec, where, resolver, info["label"], scope)]
    a = resolver.cell(spec["a"], where)
    name = f"{label(spec['a'])}"
    context = _cell_label(a, resolver.artifact)
    prefix = f"{context}: " if context else ""
    margin = float(spec.get("margin", 0.0))

    def pair(other: str, side: int, sign: str, signed_margin: float = margin, text: str = ""):
        b = resolver.cell(other, where)
        return Comparison(f"{prefix}{name} {sign} {label(other)}{text}, {info['label']}", metric,
                          ((a, 1.0), (b, -1.0)), 0.0, side, signed_margin,
                          worse=_worse(higher, side, a, b), scope=scope)

    much = f" by more than {margin:g}" if margin else ""
    if kind in ("below", "above"):
        side = -1 if kind == "below" else 1
        return [pair(spec["b"], side, "<" if kind == "below" else ">", text=much)]
    if kind in ("best_of", "worst_of"):
        better = (1 if higher else -1) * (1 if kind == "best_of" else -1)
        return [pair(o, better, "<" if better < 0 else ">", text=much) for o in spec["others"]]
    if kind == "not_worse":        # non-inferiority: a - b on the worse side by less than margin
        return [pair(spec["b"], 1 if higher else -1, "≥" if higher else "≤", -margin,
                     f" {'−' if higher else '+'} {margin:g}")]
    if kind == "fluctuates_more":
        return [pair(spec["b"], 1, "swings more than")]
    one = {"scope": scope}
    if kind == "stays_on_plateau":
        plateau = data["settings"]["plateau"]
        return [Comparison(f"{prefix}{name} stays within {plateau['eps']:g} of ln 10 at every "
                           f"epoch, {info['label']}", metric, ((a, 1.0),),
                           -float(plateau["eps"]), -1, **one)]
    if kind == "ends_below":
        value = float(spec["value"])
        return [Comparison(f"{prefix}{name} ends below {value:g}, {info['label']}", metric,
                           ((a, 1.0),), -value, -1, **one)]
    raise ClaimsError(f"unknown comparison kind {kind!r}")


def _gain(spec: dict, where: dict, resolver: Resolver, metric_label: str,
          scope: tuple) -> Comparison:
    """(NG - base at `deep`) - (NG - base at `shallow`): NG's lead grows with depth. The two
    depths share no initialisation, so each depth's paired difference is one group and the two
    groups are compared by Welch's test (no pairing of seeds across depths)."""
    base = spec.get("b") or spec["a"].removesuffix("ng")
    deep, shallow = {**where, "model": spec["deep"]}, {**where, "model": spec["shallow"]}
    terms = ((resolver.cell(spec["a"], deep), 1.0), (resolver.cell(base, deep), -1.0))
    minus = ((resolver.cell(spec["a"], shallow), 1.0), (resolver.cell(base, shallow), -1.0))
    return Comparison(f"{label(spec['a'])} − {label(base)} lower at {label(spec['deep'])} than "
                      f"at {label(spec['shallow'])}, {metric_label}", spec["metric"], terms,
                      0.0, -1, minus=minus, scope=scope)


def claim_alpha(data: dict, artifact: str) -> tuple[float, tuple[int, ...]]:
    """The claim family's level: alpha, or Pocock's nominal level where the artifact's seeds
    were added in declared looks (claims.yaml `looks`), and those looks."""
    alpha = float(data["settings"]["alpha"])
    looks = tuple(int(n) for n in ((data["settings"].get("looks") or {}).get(artifact) or ()))
    return (pocock_alpha(looks, alpha) if len(looks) > 1 else alpha), looks


def check_claim(claim: dict, artifact: Artifact, runs: list[Run], data: dict) -> ClaimResult:
    """One claim on one artifact's runs, on the measure its compare entries name."""
    seeds = artifact.plot_seeds
    resolver = Resolver(artifact, runs, seeds, data["settings"])
    protocol = (data.get("protocol") or {}).get(artifact.name) or {}
    alpha, looks = claim_alpha(data, artifact.name)
    try:
        found = comparisons(claim, resolver, data)
    except ClaimsError as error:    # e.g. --dataset digits: Figure 2 names CIFAR cells
        return ClaimResult(claim, artifact.scale, [], "untestable",
                           f"cannot be checked on this grid: {error}", None, alpha=alpha)
    results = [measure(c, runs, seeds, data, protocol, artifact.scale) for c in found]
    decide(results, data, alpha)
    out = summarize(claim, results, artifact.scale)
    out.alpha, out.looks = alpha, looks
    return out


def secondary_claim(claim: dict) -> dict | None:
    """The claim with each primary metric swapped for its secondary (claims.yaml `secondary`:
    {mean_train_loss: final_train_loss, ...}); None when it names none."""
    swap = claim.get("secondary") or {}
    if not swap:
        return None
    entries = []
    for entry in _as_list(claim["compare"]):
        metrics = [swap.get(m, m) for m in _as_list(entry["metric"])]
        entries.append({**entry, "metric": metrics if len(metrics) > 1 else metrics[0]})
    return {**claim, "compare": entries, "secondary": None}


def evaluate(artifacts: dict[str, Artifact], runs: list[Run], data: dict | None = None,
             only: tuple[str, ...] | None = None) -> list[ClaimResult]:
    """Every claim (of the artifacts in `only`, if given) checked against `runs`, each with its
    secondary measure's reading and the paper's own numbers."""
    from .paper_checks import paper_own

    data = data or load_claims()
    out = []
    for claim in data["claims"]:
        name = claim["artifact"]
        if (only and name not in only) or name not in artifacts:
            continue
        result = check_claim(claim, artifacts[name], runs, data)
        other = secondary_claim(claim)
        if other is not None:
            result.secondary = check_claim(other, artifacts[name], runs, data)
        result.paper_own = paper_own(claim, artifacts[name], data)
        out.append(result)
    return out
