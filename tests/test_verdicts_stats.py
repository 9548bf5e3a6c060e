"""The verdicts' statistics pinned to answers computed another way: closed forms and printed
table values (t quantiles, G*Power's power, Pocock's published constants), not the scipy
calls the code makes. Each rule of docs/PROTOCOL.md "Statistics" has a test here that fails
when the rule is broken: an unpaired test, another interval level, power with the wrong
degrees of freedom, another equivalence margin, a decision on the interval alone, a claim that
holds when one comparison does."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_verdicts import one_claim, write_run

from reports.registry import artifacts
from reports.runs import load_runs
from reports.stats import (
    paired_effect,
    pocock_alpha,
    prediction_interval,
    sd_interval,
    seed_effect,
    seeds_for_power,
    seeds_range,
    sign_flip_p,
    t_power,
    tost_p,
    welch_against,
    welch_effect,
)
from reports.verdicts import evaluate

ARTIFACTS = artifacts()

T_975 = {2: 4.302653, 9: 2.262157}      # t quantiles, as printed in any t table


def t2_cdf(t: float) -> float:
    """The t law with 2 degrees of freedom in closed form: 1/2 + t / (2 sqrt(2 + t^2))."""
    return 0.5 + t / (2 * math.sqrt(2 + t * t))


# --- intervals and tests ---------------------------------------------------------------------

def test_a_ten_seed_interval_is_the_t_interval_computed_by_hand():
    diffs = np.array([0.3, -0.1, 0.8, 0.5, 0.2, 0.9, 0.4, 0.0, 0.6, 0.7])
    effect = seed_effect(diffs)
    half = T_975[9] * diffs.std(ddof=1) / math.sqrt(10)
    assert (effect.low, effect.high) == pytest.approx((diffs.mean() - half, diffs.mean() + half),
                                                       abs=1e-5)
    assert effect.boot_low > effect.low - 0.2 and not math.isnan(effect.perm_p)   # robustness


def test_three_seed_p_is_the_closed_form_of_the_t_law():
    """mean 3, sd 1 at 3 seeds: t = 3 sqrt(3), p = 2 (1 - F2(t))."""
    effect = seed_effect(np.array([2.0, 3.0, 4.0]))
    assert effect.p == pytest.approx(2 * (1 - t2_cdf(3 * math.sqrt(3))), rel=1e-6)
    assert math.isnan(effect.perm_p)                 # robustness columns need 8 seeds


def test_pairing_matters_a_steady_gain_under_large_seed_noise():
    """Seeds differ by whole units, the gain is 0.5 ± 0.01: paired, it is certain; unpaired
    (Welch on the two columns), it is lost in the seed noise."""
    base = np.array([1.0, 4.0, 2.0, 6.0, 3.0])
    ours = base + np.array([0.49, 0.51, 0.50, 0.48, 0.52])
    paired = paired_effect([ours, base], [1.0, -1.0])
    assert paired.p < 1e-6 and paired.low > 0.45
    assert welch_effect(ours, base).p > 0.5


def test_sign_flip_p_is_exact():
    assert sign_flip_p(np.array([1.0, 2.0, 3.0])) == pytest.approx(2 / 8)
    assert sign_flip_p(np.full(10, 1e-9)) == pytest.approx(2 / 1024)
    # 4 values, one negative: the flips with a mean as large as |observed| are 2 of 16 per side
    assert sign_flip_p(np.array([1.0, 2.0, 3.0, -0.5])) == pytest.approx(4 / 16)


def test_tost_p_at_the_margin_is_one_half_and_pinned_inside_it():
    assert tost_p(np.array([0.9, 1.0, 1.1]), 1.0) == pytest.approx(0.5)
    # mean 0.2, sd 0.1, margin 0.5: the upper test's t = -0.3 sqrt(3) / 0.1 decides
    expected = t2_cdf(-0.3 * math.sqrt(3) / 0.1)
    assert tost_p(np.array([0.1, 0.2, 0.3]), 0.5) == pytest.approx(expected, rel=1e-6)
    assert tost_p(np.array([2.3, 2.3, 2.3]), 0.5) == 1.0 and tost_p(np.zeros(3), 0.5) == 0.0


def test_welch_is_welch_by_hand():
    a, b = np.array([1.0, 2.0, 3.0]), np.array([0.0, 0.5, 0.2, 0.1])
    effect = welch_effect(a, b)
    va, vb = a.var(ddof=1) / 3, b.var(ddof=1) / 4
    t = (a.mean() - b.mean()) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 3)
    from scipy.stats import t as t_law  # the law only, not the test under check
    assert effect.p == pytest.approx(2 * t_law.sf(t, df), rel=1e-6)
    assert effect.n == 3 and effect.n_other == 4


# --- power and sequential looks --------------------------------------------------------------

def test_power_matches_gpower():
    """G*Power 3.1, t test, one sample, two tails, alpha 0.05: d = 1 at n = 10 gives power
    0.8031; 80% needs n = 10 (d = 1), 34 (d = 0.5), 6 (d = 1.5)."""
    assert t_power(1.0, 1.0, 10) == pytest.approx(0.8031, abs=5e-4)
    assert [seeds_for_power(d, 1.0) for d in (1.0, 0.5, 1.5)] == [10, 34, 6]


def test_power_is_a_range_over_the_sds_chi_square_interval():
    """sd 1 at 3 seeds: the 95% interval is sqrt(2 / chi2) at chi2(2) quantiles 7.3778, 0.0506."""
    low, high = sd_interval(1.0, 3)
    assert (low, high) == pytest.approx((math.sqrt(2 / 7.377759), math.sqrt(2 / 0.050636)),
                                        rel=1e-4)
    fewest, most = seeds_range(1.0, 1.0, 3, 0.05)
    assert fewest == seeds_for_power(1.0, low) and most == seeds_for_power(1.0, high)
    assert fewest < 10 < most


def test_pocock_levels_match_the_published_constants():
    """Pocock (1977): two equal looks 0.0294, three 0.0221 at overall 0.05."""
    assert pocock_alpha((1, 2)) == pytest.approx(0.0294, abs=2e-4)
    assert pocock_alpha((1, 2, 3)) == pytest.approx(0.0221, abs=2e-4)
    assert pocock_alpha((10,)) == 0.05


# --- paper-number checks ---------------------------------------------------------------------

def test_prediction_interval_for_one_new_run():
    found = prediction_interval([70.0, 71.0, 72.0], paper=74.0)
    half = T_975[2] * 1.0 * math.sqrt(1 + 1 / 3)
    assert (found.low, found.high) == pytest.approx((71 - half, 71 + half), abs=1e-5)
    assert found.inside and not prediction_interval([70.0, 71.0, 72.0], 77.0).inside


def test_welch_against_the_papers_mean_and_std():
    found = welch_against([7.0, 7.1, 7.2], paper_mean=7.0, paper_std=0.1, paper_n=5,
                          margin=0.2)
    va, vb = 0.01 / 3, 0.01 / 5
    t = 0.1 / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 4)
    from scipy.stats import t as t_law
    assert found.p == pytest.approx(2 * t_law.sf(t, df), rel=1e-6)
    assert found.inside and found.tost_p == pytest.approx(t_law.sf((0.2 - 0.1) / math.sqrt(
        va + vb), df), rel=1e-6)


# --- the rules, through the claims ----------------------------------------------------------

def rt_runs(root, diffs: dict[str, list[float]], base: float = 0.70, looks: bool = False,
            status: dict | None = None):
    """Table 4 runs: Adam at `base` (varying by seed), each other optimizer at base + diff
    (points of accuracy); the verdict of `above a adam` for each."""
    n = len(next(iter(diffs.values())))
    for seed in range(1, n + 1):
        level = base + 0.01 * (seed % 3)
        write_run(root, "table4", "kimcnn", "adam", seed, accs=[0.5, level],
                  status=(status or {}).get(("adam", seed), "completed"))
        for optim, values in diffs.items():
            write_run(root, "table4", "kimcnn", optim, seed,
                      accs=[0.5, level + values[seed - 1] / 100])
    compare = [{"kind": "above", "a": optim, "b": "adam", "metric": "best_val_acc"}
               for optim in diffs]
    table4 = ARTIFACTS["table4"].adapt(seeds=tuple(range(1, n + 1)))
    [claim] = evaluate({"table4": table4}, load_runs(root), one_claim(*compare, looks=looks))
    return claim


def test_differences_of_0_1_0_2_and_2_are_inconclusive(tmp_path):
    claim = rt_runs(tmp_path, {"adamng": [0.1, 0.2, 2.0]})
    assert claim.verdict == "inconclusive", claim.reason


def test_one_holding_and_one_open_comparison_leave_the_claim_inconclusive(tmp_path):
    claim = rt_runs(tmp_path, {"adamng": [5.0, 5.5, 6.0], "adagradng": [0.1, 0.2, 2.0]})
    assert [r.verdict for r in claim.results] == ["holds", "inconclusive"]
    assert claim.verdict == "inconclusive"


def test_holm_not_the_interval_decides(tmp_path):
    """Two comparisons each with p = 0.035 at 3 seeds: each 95% interval excludes 0, the Holm
    p (0.070) does not clear 0.05: both stay inconclusive."""
    claim = rt_runs(tmp_path, {"adamng": [2.0, 3.0, 4.0], "adagradng": [2.0, 3.0, 4.0]})
    for result in claim.results:
        assert result.effect.low > 0 and result.p_holm == pytest.approx(0.0702, abs=5e-4)
        assert result.verdict == "inconclusive"


def test_table4_looks_are_read_at_pococks_level(tmp_path):
    """p = 0.035 alone holds at 0.05, not at Pocock's level for looks at 3, 5 and 10 seeds."""
    assert rt_runs(tmp_path / "a", {"adamng": [2.0, 3.0, 4.0]}).verdict == "holds"
    claim = rt_runs(tmp_path / "b", {"adamng": [2.0, 3.0, 4.0]}, looks=True)
    assert claim.verdict == "inconclusive" and claim.alpha < 0.025 and claim.looks == (3, 5, 10)


def test_zero_spread_does_not_decide(tmp_path):
    """1e-9 on every seed: the t test's p would be 0; the exact sign-flip p is 2 / 2^n, and the
    difference is equivalent to 0: never a hold, at 3 or at 10 seeds."""
    compare = {"kind": "above", "a": "adamng", "b": "adam", "metric": "best_val_acc"}
    for n in (3, 10):
        for seed in range(1, n + 1):
            write_run(tmp_path / str(n), "table4", "kimcnn", "adam", seed, accs=[0.5, 0.7])
            write_run(tmp_path / str(n), "table4", "kimcnn", "adamng", seed,
                      accs=[0.5, 0.7 + 1e-11])
        table4 = ARTIFACTS["table4"].adapt(seeds=tuple(range(1, n + 1)))
        [claim] = evaluate({"table4": table4}, load_runs(tmp_path / str(n)), one_claim(compare))
        [result] = claim.results
        assert result.effect.zero_spread and result.effect.p == pytest.approx(2 / 2 ** n)
        assert claim.verdict == "inconclusive", claim.reason
        assert any("same value" in w for w in result.warnings)


def test_much_better_is_a_margin_and_an_equivalence_contradicts_it(tmp_path):
    data = {"kind": "above", "a": "adamng", "b": "adam", "metric": "best_val_acc", "margin": 2.0}
    for seed, (ng, base) in enumerate([(0.703, 0.70), (0.712, 0.71), (0.718, 0.72)], start=1):
        write_run(tmp_path, "table4", "kimcnn", "adamng", seed, accs=[0.5, ng])
        write_run(tmp_path, "table4", "kimcnn", "adam", seed, accs=[0.5, base])
    table4 = ARTIFACTS["table4"].adapt(seeds=(1, 2, 3))
    [claim] = evaluate({"table4": table4}, load_runs(tmp_path), one_claim(data))
    assert claim.verdict == "contradicted" and "equivalent" in claim.reason


def test_diverged_seeds_are_disclosed_and_keep_a_claim_from_holding(tmp_path):
    """Adam (the side the claim favours: Adam > SGDM) diverged on 5 of 10 seeds."""
    for seed in range(1, 11):
        write_run(tmp_path, "table4", "kimcnn", "sgdm", seed, accs=[0.5, 0.70 + 0.001 * seed])
        write_run(tmp_path, "table4", "kimcnn", "adam", seed, accs=[0.5, 0.75 + 0.002 * seed],
                  status="diverged" if seed > 5 else "completed")
    table4 = ARTIFACTS["table4"].adapt(seeds=tuple(range(1, 11)))
    compare = {"kind": "above", "a": "adam", "b": "sgdm", "metric": "best_val_acc"}
    [claim] = evaluate({"table4": table4}, load_runs(tmp_path), one_claim(compare))
    [result] = claim.results
    assert result.used == 5 and result.asked == 10
    assert claim.verdict == "inconclusive" and "diverged" in result.reason
    assert claim.diverged == ["Adam Kim-CNN seed(s) 6, 7, 8, 9, 10"]
