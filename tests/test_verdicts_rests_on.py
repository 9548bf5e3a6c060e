"""What a verdict rests on, on synthetic results folders: the protocol derived from the runs'
stored configs and data (and a claim about a value never run made untestable), † for a seed
trained by more than one commit, conflicting folders named and not used, n used of n asked, a
secondary measure shown beside the primary, and Welch's test for a gain across depths."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import yaml
from test_verdicts import NG_BEATS_BASE, one_claim, table4_verdict, write_run

from reports import cli
from reports.registry import artifacts
from reports.runs import load_runs
from reports.verdicts import evaluate, load_claims

ARTIFACTS = artifacts()

BEST = {"kind": "best_of", "a": "adamng", "others": ["adam"], "dataset.bptt": [40, 400, 1000],
        "metric": "mean_train_loss"}


def _add_throughput(run_dir, samples: int) -> None:
    """A run that predates the data-identity record: samples/s × seconds is its epoch size."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rows = [dict(row, samples_per_s=samples / 4.0, epoch_seconds=4.0) for row in rows]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_a_claim_about_every_bptt_run_at_40_alone_is_untestable_with_the_proxy(tmp_path):
    for seed in (1, 2, 3):
        for optim, level, step in (("adamng", 6.0, 0.2), ("adam", 5.0, 0.1)):
            run_dir = write_run(tmp_path, "figure3", "lstm", optim, seed,
                                losses=[level + step * seed, level - 0.2 + 0.05 * seed])
            _add_throughput(run_dir, 73760)
    data = one_claim(BEST, artifact="figure3")
    data["claims"][0]["about"] = "dataset.bptt"
    figure3 = ARTIFACTS["figure3"].adapt(seeds=(1, 2, 3))
    [claim] = evaluate({"figure3": figure3}, load_runs(tmp_path), data)
    assert claim.verdict == "untestable"
    assert "only 40 was run" in claim.reason
    assert "at the values tested: contradicted" in claim.reason
    assert "73,760 of the paper's 929,000 training tokens" in claim.qualified
    assert "BPTT 40 only" in claim.qualified
    # figure3's stored epochs and batch: 100 columns of 737 tokens, windows of 40: 19 a epoch
    epochs = yaml.safe_load(next(tmp_path.rglob("config.yaml")).read_text())["epochs"]
    assert f"{19 * epochs} optimizer steps" in claim.qualified
    data["claims"][0]["about"] = None              # without `about`, the tested value decides
    [claim] = evaluate({"figure3": figure3}, load_runs(tmp_path), data)
    assert claim.verdict == "contradicted"


def test_the_protocol_says_as_the_paper_when_nothing_differs(tmp_path):
    for seed in (1, 2, 3):
        write_run(tmp_path, "table4", "kimcnn", "adamng", seed, accs=[0.5, 0.80 + 0.01 * seed])
        write_run(tmp_path, "table4", "kimcnn", "adam", seed, accs=[0.5, 0.70])
    claim = table4_verdict(tmp_path)
    assert claim.protocol == [] and claim.qualified == "holds (as the paper)"


def test_a_seed_of_two_commits_is_marked_and_conflicting_folders_are_not_used(tmp_path):
    for seed in (1, 2, 3, 4):
        write_run(tmp_path, "table4", "kimcnn", "adamng", seed, accs=[0.5, 0.80 + 0.01 * seed])
        write_run(tmp_path, "table4", "kimcnn", "adam", seed, accs=[0.5, 0.70])
    summary = tmp_path / "runs" / "rt" / "kimcnn" / "adam" / "default" / "seed2" / "summary.json"
    summary.write_text(json.dumps({**json.loads(summary.read_text()), "commits": [
        {"commit": "a" * 40, "epochs": [1, 1]}, {"commit": "b" * 40, "epochs": [2, 2]}]}))
    seed3 = tmp_path / "runs" / "rt" / "kimcnn" / "adamng" / "default" / "seed3"
    shutil.copytree(seed3, seed3.parent.parent / "copy" / "seed3")     # a second folder
    claim = table4_verdict(tmp_path, seeds=(1, 2, 3, 4))
    [result] = claim.results
    assert "3 of the 4 seeds asked" in claim.qualified
    assert (result.used, result.asked, result.mixed) == (3, 4, [2])
    assert len(result.conflicts) == 1 and "AdamNG Kim-CNN seed 3" in result.conflicts[0]
    assert "copy/seed3" in result.conflicts[0] and "default/seed3" in result.conflicts[0]
    out = tmp_path / "out"
    assert cli.main(["verdicts", "table4", "--results", str(tmp_path), "--out", str(out),
                     "--seeds", "1,2,3,4"]) == 0
    text = (out / "tables" / "verdicts_table4.md").read_text()
    assert "3 of 4 (†: seed 2)" in text and "conflicting folders, not used" in text


def test_a_speed_claim_shows_its_final_value_reading_beside_it(tmp_path):
    """AdamNG is ahead for most of training (a lower mean loss) and behind at the end."""
    for seed in (1, 2, 3):
        write_run(tmp_path, "figure1", "mlp6", "adamng", seed,
                  losses=[0.5 + 0.01 * seed, 0.4, 0.3, 0.30 + 0.02 * seed])
        write_run(tmp_path, "figure1", "mlp6", "adam", seed,
                  losses=[2.3, 2.0 + 0.01 * seed, 1.0, 0.10])
    data = one_claim({"kind": "below", "a": "adamng", "b": "adam", "model": "mlp6",
                      "metric": "mean_train_loss"}, artifact="figure1")
    data["claims"][0]["secondary"] = {"mean_train_loss": "final_train_loss"}
    figure1 = ARTIFACTS["figure1"].adapt(seeds=(1, 2, 3))
    [claim] = evaluate({"figure1": figure1}, load_runs(tmp_path), data)
    assert claim.verdict == "holds" and claim.secondary.verdict == "contradicted"
    assert [r.comparison.metric for r in claim.secondary.results] == ["final_train_loss"]
    assert claim.results[0].asked == 3


def test_gain_grows_compares_the_depths_by_welch(tmp_path):
    """The NG lead at MLP-12 and at MLP-6 are two groups: Welch's test on the per-seed leads,
    whatever seeds the two depths have."""
    leads = {"mlp6": [0.10, 0.12, 0.08], "mlp12": [0.50, 0.62, 0.41]}
    for model, values in leads.items():
        for seed, lead in enumerate(values, start=1):
            write_run(tmp_path, "figure1", model, "adam", seed, losses=[2.0, 1.0 + 0.1 * seed])
            write_run(tmp_path, "figure1", model, "adamng", seed,
                      losses=[2.0 - lead, 1.0 + 0.1 * seed - lead])
    compare = {"kind": "gain_grows", "a": "adamng", "shallow": "mlp6", "deep": "mlp12",
               "metric": "mean_train_loss"}
    figure1 = ARTIFACTS["figure1"].adapt(seeds=(1, 2, 3))
    [claim] = evaluate({"figure1": figure1}, load_runs(tmp_path), one_claim(compare,
                                                                           artifact="figure1"))
    [result] = claim.results
    from scipy.stats import ttest_ind
    deep, shallow = -np.array(leads["mlp12"]), -np.array(leads["mlp6"])
    assert result.effect.n_other == 3
    assert result.effect.mean == pytest.approx(deep.mean() - shallow.mean())
    assert result.effect.p == pytest.approx(ttest_ind(deep, shallow, equal_var=False).pvalue)


def test_every_claim_names_its_measure_and_every_metric_its_reason():
    data = load_claims()
    assert all(claim.get("reading") for claim in data["claims"])
    assert all(info.get("why") and info["sesoi"] > 0 for info in data["metrics"].values())
    speed = [c["id"] for c in data["claims"] if c["artifact"] in ("figure1", "figure3")
             and any("mean_" in str(e["metric"]) for e in c["compare"])]
    assert all(c.get("secondary") for c in data["claims"] if c["id"] in speed)
    assert NG_BEATS_BASE["metric"] in data["metrics"]
