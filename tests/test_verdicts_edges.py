"""The verdict rules at their edges, each pinned to an answer computed another way: a steady
accuracy step that float subtraction leaves with a last-bit spread, the seeds a Welch
comparison needs (a two-sample t test's power, by its noncentral t law), an equivalence that
contradicts a margin only after Holm's correction, the looks taken at Figure 1, a claim's seed
range when a comparison needs more than 1000, power withheld from comparisons more seeds cannot
decide, and a paper check on seeds without spread."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from test_verdicts import one_claim, write_run

from reports.registry import artifacts
from reports.runs import load_runs
from reports.stats import no_spread, prediction_interval, seed_effect, welch_effect
from reports.verdict_files import claim_record
from reports.verdict_rules import Comparison, Result, _power, decide, summarize
from reports.verdicts import claim_alpha, evaluate, load_claims

ARTIFACTS = artifacts()
SENTENCES = 1066          # Table 4's validation sentences: accuracy moves in steps of 1/1066


def test_a_steady_one_sentence_step_is_zero_spread_and_does_not_hold(tmp_path):
    """11 sentences better on every seed: the differences agree to the last bit only after
    rounding, and must not get the t test's p ~ 1e-29 (which would hold at 3 seeds)."""
    correct = np.array([750, 760, 770])
    diffs = (correct + 11) / SENTENCES * 100 - correct / SENTENCES * 100
    assert np.ptp(diffs) > 0 and no_spread(diffs)
    assert seed_effect(diffs, sesoi=1.0).p == pytest.approx(0.25)
    for seed, k in enumerate(correct, start=1):
        write_run(tmp_path, "table4", "kimcnn", "adam", seed, accs=[0.5, k / SENTENCES])
        write_run(tmp_path, "table4", "kimcnn", "adamng", seed,
                  accs=[0.5, (k + 11) / SENTENCES])
    compare = {"kind": "above", "a": "adamng", "b": "adam", "metric": "best_val_acc"}
    table4 = ARTIFACTS["table4"].adapt(seeds=(1, 2, 3))
    [claim] = evaluate({"table4": table4}, load_runs(tmp_path), one_claim(compare))
    assert claim.verdict == "inconclusive" and claim.results[0].effect.zero_spread


def _unit(values: np.ndarray) -> np.ndarray:
    """The values moved to mean 0 and sample sd 1 exactly."""
    return (values - values.mean()) / values.std(ddof=1)


def test_a_welch_comparison_is_sized_as_two_groups_not_by_its_standard_error():
    """Two groups of 10, each sd 0.1, means 0.03 apart, SESOI 0.05, α 0.05/6: a two-sample t
    test (df 2n - 2, noncentrality 0.05 / (0.1 sqrt(2/n))) needs 99 seeds a group; that count
    lies inside the range (the standard error taken for a seed's sd gave 9-36)."""
    rng = np.random.default_rng(0)
    a, b = 0.1 * _unit(rng.standard_normal(10)), 0.1 * _unit(rng.standard_normal(10)) + 0.03
    effect = welch_effect(a, b, sesoi=0.05)
    alpha = 0.05 / 6

    def power(n: int) -> float:
        df, shift = 2 * n - 2, 0.05 / (0.1 * math.sqrt(2 / n))
        critical = stats.t.ppf(1 - alpha / 2, df)
        return stats.nct.sf(critical, df, shift) + stats.nct.cdf(-critical, df, shift)

    two_sample = next(n for n in range(2, 1000) if power(n) >= 0.8)
    assert two_sample == 99
    result = Result(Comparison("A − B across depths", "mean_train_loss", (), 0.0, -1),
                    effect=effect)
    _power(result, 0.05, alpha, 0.8)
    low, high = result.seeds
    assert low < two_sample < high and low > 36


def _margin_results(diffs, count: int) -> list[Result]:
    comparison = Comparison("NG − base", "final_top1_error", (), 0.0, -1, margin=0.5)
    return [Result(comparison, effect=seed_effect(np.asarray(diffs), sesoi=0.5), asked=3)
            for _ in range(count)]


def test_an_equivalence_contradicts_a_margin_only_after_holm():
    """d = (-0.356, -0.2, -0.044) against "non-trivial" (margin 0.5 = SESOI): TOST p 0.0398
    (t = (0.5 - 0.2) / (0.156 / sqrt 3) on 2 df). Alone it contradicts; one of four such
    comparisons does not (Holm: 4 × 0.0398)."""
    diffs = [-0.356, -0.2, -0.044]
    t = (0.5 - 0.2) / (0.156 / math.sqrt(3))
    assert seed_effect(np.asarray(diffs), sesoi=0.5).tost_p == pytest.approx(
        stats.t.sf(t, 2), rel=1e-6)
    data = load_claims()
    [alone] = _margin_results(diffs, 1)
    decide([alone], data, 0.05)
    assert alone.verdict == "contradicted" and "TOST Holm p" in alone.reason
    four = _margin_results(diffs, 4)
    decide(four, data, 0.05)
    assert [r.verdict for r in four] == ["inconclusive"] * 4
    assert all(r.tost_holm == pytest.approx(4 * stats.t.sf(t, 2), rel=1e-6) for r in four)


def test_figure1s_published_three_seed_look_is_accounted_for():
    """Figure 1's verdicts were published at 3 seeds before its 10 were fixed: two looks,
    Pocock's level 0.0274 (two looks at information 0.3 and 1)."""
    alpha, looks = claim_alpha(load_claims(), "figure1")
    assert looks == (3, 10) and alpha == pytest.approx(0.02736, abs=1e-5)


def test_power_is_withheld_where_more_seeds_cannot_decide_and_a_claim_needs_its_worst():
    """An equivalent difference (TOST) has no seed count; an inconclusive claim's count is the
    largest of its open comparisons', more than 1000 when any of them needs that; a decided
    claim has none."""
    data = load_claims()
    comparison = Comparison("A − B", "best_val_acc", (), 0.0, 1)
    tiny = Result(comparison, effect=seed_effect(np.array([0.01, -0.01, 0.02]), sesoi=1.0),
                  asked=3)
    decide([tiny], data, 0.05)
    assert tiny.verdict == "inconclusive" and "equivalent" in tiny.reason
    assert tiny.seeds is None and tiny.power_basis == ""
    effect = seed_effect(np.array([0.1, 0.9, 2.5]), sesoi=1.0)
    opened = [Result(comparison, "inconclusive", effect=effect, seeds=seeds, power_basis="x")
              for seeds in ((3, 757), (56, None), (131, None))]
    claim = summarize({"id": "c", "artifact": "table4", "quote": "q"}, opened, "full")
    assert claim_record(claim)["seeds_for_power"] == [131, None]
    closed = [Result(comparison, "inconclusive", effect=effect, seeds=s, power_basis="x")
              for s in ((3, 757), (56, 90))]
    claim = summarize({"id": "c", "artifact": "table4", "quote": "q"}, closed, "full")
    assert claim_record(claim)["seeds_for_power"] == [56, 757]
    decided = closed + [Result(comparison, "contradicted", effect=effect)]
    claim = summarize({"id": "c", "artifact": "table4", "quote": "q"}, decided, "full")
    assert claim.verdict == "contradicted" and claim_record(claim)["seeds_for_power"] is None


def test_seeds_without_spread_cannot_tell_against_the_papers_single_run():
    found = prediction_interval([71.2, 71.2, 71.2], paper=71.3)
    assert found.inside is None and math.isnan(found.low)
    assert prediction_interval([71.0, 71.2, 71.4], paper=71.3).inside


def test_a_full_size_token_stream_is_not_a_proxy_for_its_step_count(tmp_path):
    """The paper gives no step count: a stream run on PTB's 929,589 training tokens names no
    steps; the 73,760-token one names them beside its other deviations."""
    best = {"kind": "best_of", "a": "adamng", "others": ["adam"], "dataset.bptt": [40],
            "metric": "mean_train_loss"}
    figure3 = ARTIFACTS["figure3"].adapt(seeds=(1, 2, 3))
    for tokens in (929_589, 73_760):
        root = tmp_path / str(tokens)
        for seed in (1, 2, 3):
            for optim, level in (("adamng", 5.0), ("adam", 6.0)):
                run_dir = write_run(root, "figure3", "lstm", optim, seed,
                                    losses=[level + 0.1 * seed, level - 0.2])
                rows = (run_dir / "metrics.jsonl").read_text().splitlines()
                rows = [r[:-1] + f', "samples_per_s": {tokens / 4}, "epoch_seconds": 4.0}}'
                        for r in rows]
                (run_dir / "metrics.jsonl").write_text("\n".join(rows) + "\n")
        [claim] = evaluate({"figure3": figure3}, load_runs(root), one_claim(best,
                                                                           artifact="figure3"))
        steps = any("optimizer steps" in note for note in claim.protocol)
        assert steps == (tokens < 929_589), claim.protocol
