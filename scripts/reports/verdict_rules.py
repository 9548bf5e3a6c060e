"""The rules that turn a comparison's runs into a word (docs/PROTOCOL.md, "Statistics"):

- measure: the seeds that pair (.pairs), with the diverged, † and conflicting seeds named, and
  the per-seed contrast's effect (.stats: t interval, sign-flip permutation, bootstrap, TOST);
- decide: Holm over one claim's comparisons at the claim's level (Pocock's where its artifact
  took several looks), then each comparison's word. holds / contradicted need the Holm p below
  the level; a plain comparison (no margin) whose difference is equivalent to 0 within the
  smallest effect of interest decides nothing; a margin comparison ("much better") is
  contradicted by that equivalence (its TOST p Holm-adjusted over the claim's margin
  comparisons); a diverged seed of the cell the paper speaks well of keeps the comparison from
  holding. Power is given for the comparisons more seeds could decide (inconclusive by the
  Holm p);
- summarize: a claim is contradicted if any comparison is, holds if all do, else inconclusive or
  untestable; a claim `about` a swept key needs every value of it tested."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from .claim_metrics import METRICS, finite
from .grids import Cell, label
from .pairs import Pairs, pair_seeds
from .runs import Run
from .stats import Effect, holm, seed_effect, seeds_range, welch_effect

WORDS = ("holds", "contradicted", "inconclusive", "untestable")


@dataclass(frozen=True)
class Comparison:
    """One check: the per-seed value sum(weight * metric(cell)) + offset; the paper predicts
    `side` * value > margin (margin 0: a sign; > 0: a magnitude word; < 0: "no worse than").
    `minus`: a second group with no seed pairing to the first (Welch on the two groups' paired
    contrasts). `worse`: the cells the paper predicts to be worse (their divergence agrees with
    it). `scope`: the swept keys' values the comparison sits at (`dataset.bptt` 40)."""

    label: str
    metric: str
    terms: tuple[tuple[Cell, float], ...]
    offset: float
    side: int
    margin: float = 0.0
    minus: tuple[tuple[Cell, float], ...] = ()
    worse: frozenset[Cell] = frozenset()
    scope: tuple[tuple[str, object], ...] = ()


@dataclass
class Result:
    comparison: Comparison
    verdict: str = "untestable"
    reason: str = ""
    effect: Effect | None = None
    p_holm: float = math.nan
    alpha: float = math.nan
    seeds: tuple[int | None, int | None] | None = None
    power_basis: str = ""
    protocol: list[str] = field(default_factory=list)
    asked: int = 0
    diverged: list[str] = field(default_factory=list)
    mixed: list[int] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    favoured_diverged: bool = False
    tost_holm: float = math.nan      # a margin comparison's TOST p, Holm-adjusted over the claim's

    @property
    def used(self) -> int:
        return 0 if self.effect is None else self.effect.n


@dataclass
class ClaimResult:
    claim: dict
    scale: str
    results: list[Result]
    verdict: str
    reason: str
    decided_by: Result | None
    protocol: list[str] = field(default_factory=list)
    paper_own: tuple[int, int] | None = None       # (comparisons that hold, of) on its numbers
    secondary: ClaimResult | None = None           # the same claim on its secondary measure
    alpha: float = 0.05
    looks: tuple[int, ...] = ()

    @property
    def qualified(self) -> str:
        """The word with the protocol it was decided on: `holds (as the paper)` or
        `contradicted (proxy: ...)`; `(quick)` at quick scale."""
        if self.scale == "quick":
            return f"{self.verdict} (quick)"
        basis = "proxy: " + "; ".join(self.protocol) if self.protocol else "as the paper"
        return f"{self.verdict} ({basis})"

    @property
    def diverged(self) -> list[str]:
        return sorted({item for r in self.results for item in r.diverged})


# --- protocol --------------------------------------------------------------------------------

def train_samples(run: Run) -> int | None:
    """Training examples (tokens, for a stream) per epoch: the stored data identity, else the
    first epoch's measured throughput × its seconds (runs that predate the identity record)."""
    identity = run.summary.get("identity") if isinstance(run.summary, dict) else None
    data = identity.get("data") if isinstance(identity, dict) else None
    stored = finite((data or {}).get("train_samples")) if isinstance(data, dict) else None
    if stored is not None:
        return int(stored)
    if run.metrics.empty or not {"samples_per_s", "epoch_seconds"} <= set(run.metrics):
        return None
    first = run.metrics.iloc[0]
    value = finite(float(first["samples_per_s"]) * float(first["epoch_seconds"]))
    return None if value is None else int(round(value))


def protocol_notes(run: Run, paper: dict, scale: str) -> list[str]:
    """How a run's stored config and data differ from the paper's protocol (claims.yaml
    `protocol`): quick scale, fewer epochs, fewer training examples or tokens, another
    vocabulary, and for a token stream that deviates so, the optimizer steps it took (the paper
    gives no step count, so steps alone are not a deviation)."""
    notes = ["quick scale"] if scale == "quick" else []
    config = run.config if isinstance(run.config, dict) else {}
    dataset = config.get("dataset") if isinstance(config.get("dataset"), dict) else {}
    epochs = finite(config.get("epochs"))
    if paper.get("epochs") and epochs is not None and epochs < paper["epochs"]:
        notes.append(f"{int(epochs)} of the paper's {paper['epochs']} epochs")
    if dataset.get("limit"):
        notes.append(f"a {dataset['limit']}-example subset of the data")
    samples, unit = train_samples(run), paper.get("unit", "examples")
    if paper.get("train_samples") and samples is not None \
            and samples < 0.99 * paper["train_samples"]:
        notes.append(f"{samples:,} of the paper's {paper['train_samples']:,} training {unit}")
    vocab = finite(dataset.get("vocab_size"))
    if paper.get("vocab_size") and vocab is not None and abs(vocab / paper["vocab_size"] - 1) > .05:
        notes.append(f"a {int(vocab):,}-word vocabulary (the paper's: about "
                     f"{paper['vocab_size']:,}): a stand-in corpus")
    bptt, batch = finite(dataset.get("bptt")), finite(config.get("batch_size"))
    if notes and dataset.get("input") == "stream" and samples and bptt and batch and epochs:
        per_epoch = math.ceil((samples // int(batch) - 1) / bptt)
        notes.append(f"{int(epochs) * per_epoch} optimizer steps")
    return notes


# --- measure ---------------------------------------------------------------------------------

def _pairs(comparison: Comparison, terms, runs, seeds, settings) -> Pairs:
    metric = METRICS[comparison.metric]
    return pair_seeds(runs, [cell for cell, _ in terms], seeds, lambda run: metric(run, settings))


def _contrast(pairs: Pairs, terms, offset: float) -> np.ndarray:
    stacked = np.asarray(pairs.columns, dtype=float)            # (cells, seeds)
    return np.asarray([w for _, w in terms], dtype=float) @ stacked + offset


def measure(comparison: Comparison, runs: list[Run], seeds: tuple[int, ...], data: dict,
            protocol: dict, scale: str) -> Result:
    """The comparison on the seeds that pair, with what it rests on named."""
    settings = data["settings"]
    sesoi = float(data["metrics"][comparison.metric]["sesoi"])
    result = Result(comparison, asked=len(seeds))
    groups = [comparison.terms] + ([comparison.minus] if comparison.minus else [])
    found = [_pairs(comparison, terms, runs, seeds, settings) for terms in groups]
    for terms, pairs in zip(groups, found, strict=True):
        _rests_on(result, comparison, terms, pairs, protocol, scale)
    if min(len(p.seeds) for p in found) < settings["min_seeds"]:
        detail = "; ".join(f"{kind}: {', '.join(where[:3])}" + (" ..." if len(where) > 3 else "")
                           for p in found for kind, where in sorted(p.problems.items()))
        used = " and ".join(str(len(p.seeds)) for p in found)
        result.reason = (f"{used} paired seed(s) of {len(seeds)}, need "
                         f"{settings['min_seeds']}" + (f" ({detail})" if detail else ""))
        return result
    values = [_contrast(p, t, comparison.offset if i == 0 else 0.0)
              for i, (p, t) in enumerate(zip(found, groups, strict=True))]
    if comparison.minus:
        result.effect = welch_effect(values[0], values[1], comparison.side * comparison.margin,
                                     sesoi)
    else:
        effect = seed_effect(values[0], sesoi)
        if comparison.margin:          # the test is against the margin; the interval stays d's
            shifted = seed_effect(values[0] - comparison.side * comparison.margin, sesoi)
            effect = dataclasses.replace(effect, p=shifted.p, perm_p=shifted.perm_p)
        result.effect = effect
    if result.effect.zero_spread:
        result.warnings.append("every seed gave the same value: p is the exact sign-flip "
                               "permutation p, and a difference this steady decides nothing "
                               "below the smallest effect of interest")
    return result


def _rests_on(result: Result, comparison: Comparison, terms, pairs: Pairs, protocol: dict,
              scale: str) -> None:
    result.protocol = sorted(set(result.protocol) | {
        note for found in pairs.runs for run in found
        for note in protocol_notes(run, protocol, scale)})
    for (cell, _), seeds in zip(terms, pairs.diverged, strict=True):
        if seeds:
            result.diverged.append(f"{label(cell.optim)} {label(cell.model)} seed(s) "
                                   f"{', '.join(map(str, seeds))}")
            result.favoured_diverged |= cell not in comparison.worse
    result.mixed = sorted(set(result.mixed) | set(pairs.mixed))
    result.conflicts += pairs.conflicts


# --- decide ----------------------------------------------------------------------------------

def decide(results: list[Result], data: dict, alpha: float) -> None:
    """Holm over the claim's testable comparisons at level `alpha`, then each one's word."""
    settings = data["settings"]
    testable = [r for r in results if r.effect is not None]
    for result, adjusted in zip(testable, holm([r.effect.p for r in testable]), strict=True):
        result.p_holm, result.alpha = adjusted, alpha
    margins = [r for r in testable if r.comparison.margin > 0]
    tost = [r.effect.tost_p if math.isfinite(r.effect.tost_p) else 1.0 for r in margins]
    for result, adjusted in zip(margins, holm(tost), strict=True):
        result.tost_holm = adjusted
    for result in testable:
        sesoi = float(data["metrics"][result.comparison.metric]["sesoi"])
        result.verdict, result.reason = word(result, sesoi)
        if result.verdict == "inconclusive" and result.p_holm >= alpha \
                and not _equivalent(result):        # more seeds could decide it
            _power(result, sesoi, alpha / len(testable), settings["power"])


def _equivalent(result: Result) -> bool:
    """Equivalent to 0 within ± the SESOI (TOST p below the level). For a margin comparison,
    where equivalence decides (contradicts "much better"), its p is Holm-adjusted over the
    claim's margin comparisons like every deciding test; for a plain one, where it only keeps
    the comparison from holding, the unadjusted p (the stricter choice)."""
    p = result.tost_holm if result.comparison.margin > 0 else result.effect.tost_p
    return bool(p < result.alpha)


def word(result: Result, sesoi: float) -> tuple[str, str]:
    """One comparison's word and why, from its Holm p, its margin and its equivalence test."""
    effect, comparison = result.effect, result.comparison
    margin, alpha = comparison.margin, result.alpha
    ahead = comparison.side * effect.mean - margin     # > 0: beyond the margin, the paper's way
    equivalent = _equivalent(result)                   # within ± sesoi of 0
    where = (f"the margin {margin:g}" if margin > 0 else
             f"the non-inferiority margin {margin:g}" if margin else "0")
    if margin > 0 and equivalent:
        return "contradicted", (f"equivalent to 0 within ±{sesoi:g} (TOST Holm p "
                                f"{result.tost_holm:.3g}): not the margin of {margin:g} asked")
    if margin == 0 and equivalent:
        return "inconclusive", (f"equivalent to 0 within ±{sesoi:g} (TOST p {effect.tost_p:.3g}): "
                                "a difference this small decides nothing")
    if result.p_holm >= alpha:
        return "inconclusive", f"Holm p {result.p_holm:.3g} ≥ {alpha:g}"
    if ahead > 0 and result.favoured_diverged:
        return "inconclusive", ("the paper's favoured cell diverged on some seeds "
                                f"({'; '.join(result.diverged)}): it does not hold on the seeds "
                                "that survived")
    if ahead > 0:
        return "holds", f"the paper's side of {where}, Holm p {result.p_holm:.3g} < {alpha:g}"
    return "contradicted", f"the other side of {where}, Holm p {result.p_holm:.3g} < {alpha:g}"


def _power(result: Result, sesoi: float, alpha: float, power: float) -> None:
    """Seeds for `power` at the first Holm step's level (alpha / comparisons): a range over the
    sd's 95% interval, against the observed distance from the margin or the smallest effect of
    interest, whichever is larger. A Welch comparison (two unpaired groups) is sized as a
    paired one whose per-seed sd is that of the difference of one seed from each group,
    sqrt(var_a + var_b): its standard error times sqrt(n)."""
    effect, comparison = result.effect, result.comparison
    sd = effect.sd * math.sqrt(effect.n) if effect.n_other else effect.sd
    observed = abs(comparison.side * effect.mean - comparison.margin)
    basis = max(observed, sesoi)
    result.power_basis = (f"observed effect, α {alpha:.3g}" if observed >= sesoi
                          else f"smallest effect {sesoi:g}, α {alpha:.3g}")
    result.seeds = seeds_range(basis, sd, effect.n, alpha, power)
    if result.seeds == (None, None):
        result.seeds = None
        result.power_basis = "no spread between seeds" if not sd > 0 else \
            "more than 1000 seeds"


# --- summarize -------------------------------------------------------------------------------

def summarize(claim: dict, results: list[Result], scale: str) -> ClaimResult:
    """One contradicted comparison contradicts the claim; it holds when all hold; else one still
    open leaves it inconclusive, and otherwise it is untestable. A claim `about` a swept key
    ("with any training sequence length") is untestable while a value of that key has no
    testable comparison. The reason quotes the deciding comparison."""
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
    protocol = sorted({note for r in results for note in r.protocol})
    used = [r.used for r in results if r.effect is not None]
    if used and min(used) < results[0].asked:     # seeds fixed in advance, not all there
        protocol.append(f"{min(used)} of the {results[0].asked} seeds asked")
    missing = _untested_scope(claim, results)
    if missing:
        protocol.append(missing[1])
        reason = f"{missing[0]}; at the values tested: {verdict} ({reason})"
        verdict = "untestable"
    return ClaimResult(claim, scale, results, verdict, reason, deciding, protocol)


def _untested_scope(claim: dict, results: list[Result]) -> tuple[str, str] | None:
    """(reason, protocol note) when the claim is about every value of a swept key and some
    value has no testable comparison; None otherwise."""
    key = claim.get("about")
    if not key:
        return None
    values = {}
    for r in results:
        value = dict(r.comparison.scope).get(key)
        values[value] = values.get(value, False) or r.effect is not None
    tested = [str(v) for v, ok in values.items() if ok]
    if all(values.values()) or not tested:
        return None
    name = key.rpartition(".")[2].upper() if key.endswith("bptt") else key
    every = ", ".join(str(v) for v in values)
    return (f"the claim is about every {name} ({every}); only {', '.join(tested)} was run",
            f"{name} {', '.join(tested)} only")
