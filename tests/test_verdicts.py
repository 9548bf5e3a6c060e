"""The verdicts: the claims file against the paper, the statistics against known answers, the
verdict of each kind of synthetic results folder, the committed MLP-18 runs turned around, byte
for byte determinism, and the premise of pairing by seed (two optimizers with the same seed start
from the same weights and see the same batches) checked through the real engine."""

from __future__ import annotations

import json
import math
import shutil
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from omegaconf import OmegaConf, open_dict

from conftest import REPO, compose_config, train_in_process
from data.fixtures import make_mnist
from reports import cli
from reports.pairs import pair_seeds
from reports.registry import artifacts
from reports.runs import load_runs
from reports.stats import holm, paired_effect, seeds_for_power, t_power
from reports.verdicts import WORDS, evaluate, load_claims

ARTIFACTS = artifacts()

PAPER = Path("/work/shared/paper/yu-2017-block-normalized-gradient.md")
REPRO_MLP18 = REPO / "docs" / "reproduction" / "runs" / "mnist" / "mlp18"


# --- the claims file ---------------------------------------------------------------------------

def test_every_claim_resolves_to_cells_of_its_artifact():
    data = load_claims()
    ids = [claim["id"] for claim in data["claims"]]
    assert len(ids) == len(set(ids))
    assert {claim["artifact"] for claim in data["claims"]} == {
        "figure1", "figure2", "figure3", "table1", "table2", "table3", "table4"}
    claims = evaluate({name: ARTIFACTS[name] for name in ARTIFACTS}, [], data)
    assert len(claims) == len(ids)
    for claim in claims:               # no runs: every comparison untestable, with a reason
        assert claim.results and claim.verdict == "untestable"
        assert all("0 paired seed(s)" in r.reason for r in claim.results)


@pytest.mark.skipif(not PAPER.exists(), reason="the paper's text is not in this checkout")
def test_every_quote_is_verbatim_from_section_4():
    text = PAPER.read_text()
    section = text[text.index("4 NUMERICAL EXPERIMENTS"):text.index("5 CONCLUSION")]
    for claim in load_claims()["claims"]:
        assert claim["quote"] in section, claim["id"]


def test_unreadable_claims_file_is_one_line_and_exit_1(tmp_path, capsys, monkeypatch):
    bad = tmp_path / "claims.yaml"
    bad.write_text("settings: {}\nmetrics: {}\nclaims: [{id: x}]\n")
    monkeypatch.setattr("reports.verdict_files.load_claims",
                        lambda path=bad: load_claims(path))
    assert cli.main(["verdicts", "--results", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lacks" in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "tables" / "verdicts.json").exists()


# --- the statistics (known answers: tests/test_verdicts_stats.py) -----------------------------

def test_paired_effect_is_the_paired_t_test_and_its_interval():
    a, b = np.array([1.0, 2.0, 3.5, 2.5]), np.array([0.0, 0.5, 1.0, 1.5])
    effect = paired_effect([a, b], [1.0, -1.0])
    assert effect.n == 4 and effect.mean == pytest.approx(1.5)
    from scipy import stats
    found = stats.ttest_rel(a, b)
    assert effect.p == pytest.approx(found.pvalue)
    assert (effect.low, effect.high) == pytest.approx(tuple(found.confidence_interval()))
    assert paired_effect([a, b], [1.0, -1.0]) == effect            # deterministic
    same = paired_effect([np.array([2.3, 2.3, 2.3])], [1.0], offset=-2.25)
    assert (same.low, same.high) == pytest.approx((0.05, 0.05))
    assert same.zero_spread and same.p == pytest.approx(0.25)        # exact sign flip: 2 / 2^3


def test_holm_and_power_against_known_values():
    assert holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert seeds_for_power(0.5, 1.0) == 34       # d = 0.5, paired t, two-sided 0.05, 80%
    assert t_power(0.5, 1.0, 34) >= 0.8 > t_power(0.5, 1.0, 33)
    assert seeds_for_power(0.1, 0.0) is None


# --- synthetic results folders -----------------------------------------------------------------

@cache
def engine_config(experiment: str, model: str, optim: str) -> dict:
    """The resolved config a real run of this cell writes (config.yaml), less its `meta`."""
    cfg = compose_config([f"experiment={experiment}", f"model={model}", f"optim={optim}"])
    with open_dict(cfg):
        del cfg["hydra"]
    return OmegaConf.to_container(cfg, resolve=True)


def write_run(root: Path, experiment: str, model: str, optim: str, seed: int, accs=(),
              losses=(), status: str = "completed") -> Path:
    """A run folder in the engine's format (docs/reproduction/runs/ has real ones)."""
    config = dict(engine_config(experiment, model, optim), seed=seed)
    dataset = config["dataset"]["name"]
    run_dir = root / "runs" / dataset / model / optim / "default" / f"seed{seed}"
    run_dir.mkdir(parents=True)
    losses = list(losses) or [1.0 / epoch for epoch in range(1, len(accs) + 1)]
    accs = list(accs) or [0.5] * len(losses)
    rows = [{"epoch": e, "train_loss": loss, "test_loss": loss * 1.1, "test_acc": acc}
            for e, (loss, acc) in enumerate(zip(losses, accs, strict=True), start=1)]
    final = dict(rows[-1], train_loss=math.nan) if status == "diverged" else rows[-1]
    config["meta"] = {"dataset": dataset, "model": model, "optim": optim, "extra": "default",
                      "seed": seed}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run_dir / "summary.json").write_text(json.dumps({
        "status": status, "epochs": len(rows), "epochs_done": len(rows), "final": final,
        "best": {"test_acc": max(accs)}}))
    return run_dir


def one_claim(*comparisons: dict, artifact: str = "table4", looks: bool = False) -> dict:
    """A claims file of one claim; `looks`: keep Table 4's sequential looks (Pocock's level),
    else the claim is read at alpha itself."""
    data = load_claims()
    data["claims"] = [{"id": "test-claim", "artifact": artifact, "quote": "q",
                       "compare": list(comparisons)}]
    if not looks:
        data["settings"] = {**data["settings"], "looks": {}}
    return data


NG_BEATS_BASE = {"kind": "above", "a": "adamng", "b": "adam", "metric": "best_val_acc"}


def table4_verdict(root: Path, seeds=(1, 2, 3)):
    runs = load_runs(root)
    table4 = ARTIFACTS["table4"].adapt(seeds=seeds)
    [claim] = evaluate({"table4": table4}, runs, one_claim(NG_BEATS_BASE))
    return claim


@pytest.mark.parametrize(("ng", "base", "verdict"), [
    ((0.80, 0.81, 0.82), (0.70, 0.705, 0.71), "holds"),             # a clear win
    ((0.70, 0.705, 0.71), (0.80, 0.81, 0.82), "contradicted"),      # a clear loss
    ((0.75, 0.78, 0.72), (0.76, 0.74, 0.75), "inconclusive"),       # a noisy tie
])
def test_known_answers(tmp_path, ng, base, verdict):
    for seed in (1, 2, 3):
        write_run(tmp_path, "table4", "kimcnn", "adamng", seed, accs=[0.5, ng[seed - 1]])
        write_run(tmp_path, "table4", "kimcnn", "adam", seed, accs=[0.5, base[seed - 1]])
    claim = table4_verdict(tmp_path)
    assert claim.verdict == verdict, claim.reason
    [result] = claim.results
    assert result.effect.n == 3
    assert result.effect.mean == pytest.approx(100 * (np.mean(ng) - np.mean(base)))
    if verdict == "inconclusive":
        low, high = result.seeds          # high None: more than 1000 at the sd's upper end
        assert low > 3 and (high is None or high >= low)
    else:
        assert result.seeds is None


def test_missing_and_diverged_seeds_are_untestable_with_the_reason(tmp_path):
    for seed in (1, 2, 3):
        write_run(tmp_path, "table4", "kimcnn", "adam", seed, accs=[0.5, 0.7])
    write_run(tmp_path, "table4", "kimcnn", "adamng", 1, accs=[0.5, 0.8])
    claim = table4_verdict(tmp_path)
    assert claim.verdict == "untestable"
    assert "1 paired seed(s) of 3" in claim.reason and "missing: AdamNG" in claim.reason
    for seed in (2, 3):
        write_run(tmp_path, "table4", "kimcnn", "adamng", seed, accs=[0.5, 0.8],
                  status="diverged")
    claim = table4_verdict(tmp_path)
    assert claim.verdict == "untestable" and "diverged: AdamNG" in claim.reason



def test_a_seed_pairs_only_where_every_cell_completed_with_the_metric(tmp_path):
    """The one definition of a seed pair (reports.pairs), with the reason each other seed fails."""
    for seed, ng, base in ((1, 0.8, 0.7), (5, 0.8, 0.7), (6, 0.9, 0.75), (7, 0.8, 0.7)):
        write_run(tmp_path, "table4", "kimcnn", "adamng", seed, accs=[0.5, ng])
        write_run(tmp_path, "table4", "kimcnn", "adam", seed, accs=[0.5, base])
    write_run(tmp_path, "table4", "kimcnn", "adamng", 2, accs=[0.5, 0.8], status="diverged")
    write_run(tmp_path, "table4", "kimcnn", "adam", 2, accs=[0.5, 0.7])
    for seed, status in ((3, "running"), (4, None)):     # seed 4: Adam has no run at all
        write_run(tmp_path, "table4", "kimcnn", "adamng", seed, accs=[0.5, 0.8])
        if status:
            write_run(tmp_path, "table4", "kimcnn", "adam", seed, accs=[0.5], status=status)
    other = tmp_path / "runs" / "rt" / "kimcnn" / "adamng" / "default" / "seed7" / "config.yaml"
    other.write_text(yaml.safe_dump(dict(yaml.safe_load(other.read_text()), epochs=10)))
    grid = ARTIFACTS["table4"].grids[0]
    cells = [grid.cell("rt", "kimcnn", optim) for optim in ("adamng", "adam")]

    def accuracy(run):          # seed 5's AdamNG run does not hold the metric
        return None if (run.optim, run.seed) == ("adamng", 5) else 100 * run.best["test_acc"]

    pairs = pair_seeds(load_runs(tmp_path), cells, range(1, 8), accuracy)
    assert pairs.seeds == [1, 6]
    assert pairs.columns == [pytest.approx([80.0, 90.0]), pytest.approx([70.0, 75.0])]
    assert [[(run.optim, run.seed) for run in found] for found in pairs.runs] == [
        [("adamng", 1), ("adam", 1)], [("adamng", 6), ("adam", 6)]]
    assert pairs.problems == {
        "diverged": ["AdamNG Kim-CNN seed 2"], "not finished": ["Adam Kim-CNN seed 3"],
        "missing": ["Adam Kim-CNN seed 4"], "without the metric": ["AdamNG Kim-CNN seed 5"],
        "only under another config": ["AdamNG Kim-CNN seed 7"]}

def test_damaged_run_files_give_untestable_not_a_crash(tmp_path):
    for seed in (1, 2, 3):
        write_run(tmp_path, "table4", "kimcnn", "adam", seed, accs=[0.5, 0.7])
        run_dir = write_run(tmp_path, "table4", "kimcnn", "adamng", seed, accs=[0.5, 0.8])
        (run_dir / "summary.json").write_bytes(b"\x00\xff{not json")
        (run_dir / "metrics.jsonl").write_text('{"epoch": 1, "test_a')
    assert table4_verdict(tmp_path).verdict == "untestable"
    out = tmp_path / "out"
    assert cli.main(["verdicts", "table4", "--results", str(tmp_path), "--out", str(out)]) == 0
    records = json.loads((out / "tables" / "verdicts_table4.json").read_text())
    assert {r["verdict"] for r in records if r["artifact"] == "table4"} == {"untestable"}


# --- the committed MLP-18 runs -----------------------------------------------------------------

def copy_mlp18(root: Path, worse_ng: bool) -> None:
    """The committed MLP-18 Adam and AdamNG runs, with today's config of their cell (the numbers
    are untouched); `worse_ng`: AdamNG's training losses set above Adam's at every epoch, by
    0.35-0.45 nats depending on the seed."""
    for optim in ("adam", "adamng"):
        for seed in (1, 2, 3):
            source = REPRO_MLP18 / optim / "default" / f"seed{seed}"
            target = root / "runs" / "mnist" / "mlp18" / optim / "default" / f"seed{seed}"
            shutil.copytree(source, target)
            config = yaml.safe_load((target / "config.yaml").read_text())
            fresh = dict(engine_config("figure1", "mlp18", optim), seed=seed)
            (target / "config.yaml").write_text(yaml.safe_dump({**fresh, "meta": config["meta"]}))
    if not worse_ng:
        return
    for seed in (1, 2, 3):
        adam = root / "runs" / "mnist" / "mlp18" / "adam" / "default" / f"seed{seed}"
        ng = root / "runs" / "mnist" / "mlp18" / "adamng" / "default" / f"seed{seed}"
        adam_losses = [json.loads(line)["train_loss"] for line in
                       (adam / "metrics.jsonl").read_text().splitlines()]
        rows = [json.loads(line) for line in (ng / "metrics.jsonl").read_text().splitlines()]
        for row, loss in zip(rows, adam_losses, strict=True):
            row["train_loss"] = loss + 0.3 + 0.05 * seed   # a spread: zero spread decides nothing
        (ng / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        summary = json.loads((ng / "summary.json").read_text())
        summary["final"]["train_loss"] = rows[-1]["train_loss"]
        (ng / "summary.json").write_text(json.dumps(summary))


def stuck_claim(root: Path):
    data = load_claims()
    data["claims"] = [c for c in data["claims"]
                      if c["id"] == "figure1-adamng-trains-where-adam-is-stuck"]
    figure1 = ARTIFACTS["figure1"].adapt(seeds=(1, 2, 3))
    [claim] = evaluate({"figure1": figure1}, load_runs(root), data)
    return claim


@pytest.mark.skipif(not REPRO_MLP18.is_dir(), reason="no committed reproduction runs")
def test_adamng_made_worse_than_adam_turns_the_stuck_claim_contradicted(tmp_path):
    copy_mlp18(tmp_path / "as_run", worse_ng=False)
    words = {r.comparison.label.split(": ", 1)[1].split(",")[0]: r.verdict
             for r in stuck_claim(tmp_path / "as_run").results}
    assert words["Adam stays within 0.05 of ln 10 at every epoch"] == "holds"
    assert words["AdamNG < Adam"] == "holds"
    copy_mlp18(tmp_path / "worse", worse_ng=True)
    claim = stuck_claim(tmp_path / "worse")
    assert claim.verdict == "contradicted", claim.reason
    words = {r.comparison.label.split(": ", 1)[1].split(",")[0]: r.verdict for r in claim.results}
    assert words == {"Adam stays within 0.05 of ln 10 at every epoch": "holds",
                     "AdamNG ends below 0.5": "contradicted",
                     "AdamNG < Adam": "contradicted"}


@pytest.mark.skipif(not REPRO_MLP18.is_dir(), reason="no committed reproduction runs")
def test_verdicts_render_byte_for_byte_twice(tmp_path):
    copy_mlp18(tmp_path / "results", worse_ng=False)
    for results in (tmp_path / "results", REPO / "docs" / "reproduction"):
        first, second = tmp_path / "first", tmp_path / "second"
        for out in (first, second):
            shutil.rmtree(out, ignore_errors=True)
            assert cli.main(["verdicts", "--results", str(results), "--out", str(out),
                             "--seeds", "1,2,3"]) == 0
        for name in ("verdicts.md", "verdicts.csv", "verdicts.json", "verdicts_paper.csv"):
            assert (first / "tables" / name).read_bytes() == (second / "tables" / name).read_bytes()
    records = json.loads((first / "tables" / "verdicts.json").read_text())
    keys = {"id", "artifact", "claim", "n", "effect", "ci", "p", "verdict", "reason",
            "seeds_for_power", "comparisons"}
    assert all(keys <= set(r) and r["verdict"] in WORDS for r in records)


# --- quick scale and no runs -------------------------------------------------------------------

def test_gpu_artifacts_at_quick_scale_are_untestable_and_labelled(tmp_path, capsys):
    results = tmp_path / "quick"
    for optim in ("sgdm", "sgdmng"):      # one seed of a quick sweep: too few to pair
        write_run(results, "table1_quick", "resnet20", optim, 1, accs=[0.3, 0.4])
    targets = ["table1", "table2", "table3", "figure2"]
    assert cli.main([*targets, "--results", str(results), "--scale", "quick"]) == 0
    printed = capsys.readouterr().out
    assert cli.main(["verdicts", "--results", str(results), "--scale", "quick"]) == 0
    assert "verdict table1-sgdmng-beats-sgdm: untestable (quick)" in printed
    records = json.loads((results / "tables" / "verdicts.json").read_text())
    gpu = [r for r in records if r["artifact"] in ("table1", "table2", "table3", "figure2")]
    assert gpu and all(r["verdict"] == "untestable" and r["scale"] == "quick" for r in gpu)
    sgdmng = next(r for r in gpu if r["id"] == "table1-sgdmng-beats-sgdm")
    assert "1 paired seed(s) of 1" in sgdmng["comparisons"][0]["reason"]
    assert "QUICK SCALE" in (results / "tables" / "verdicts.md").read_text()


# --- pairing by seed, through the engine -------------------------------------------------------

SEEN: list[dict] = []


class SeedSpy(torch.nn.Module):
    """models.mlp that records its initial weights and every training batch it is given."""

    def __init__(self, **kwargs):
        super().__init__()
        from models import mlp
        self.net = mlp(**kwargs)
        SEEN.append({"weights": [p.detach().clone() for p in self.net.parameters()],
                     "batches": []})
        self.record = SEEN[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.record["batches"].append(x.detach().clone())
        return self.net(x)


def test_same_seed_same_initial_weights_and_batch_order_under_two_optimizers(tmp_path):
    make_mnist(tmp_path / "data", n_train=60, n_test=20)
    SEEN.clear()
    for optim, seed in (("adam", 5), ("sgdm", 5), ("sgdm", 6)):
        train_in_process(["dataset=mnist", f"data_root={tmp_path / 'data'}",
                          "dataset.verify_md5=false", "model=mlp6", f"optim={optim}",
                          f"seed={seed}", "epochs=2", "batch_size=20",
                          f"out_dir={tmp_path / 'out'}",
                          f"model.net._target_={__name__}.SeedSpy"],
                         tmp_path / f"{optim}{seed}")
    adam, sgdm, other_seed = SEEN
    assert len(adam["batches"]) == len(sgdm["batches"]) == 6      # 2 epochs x 3 batches of 20
    for first, second in zip(adam["weights"], sgdm["weights"], strict=True):
        assert torch.equal(first, second)
    for first, second in zip(adam["batches"], sgdm["batches"], strict=True):
        assert torch.equal(first, second)
    # the check can fail: another seed starts elsewhere and shuffles otherwise
    assert not torch.equal(adam["weights"][0], other_seed["weights"][0])
    assert not all(torch.equal(a, b) for a, b in zip(adam["batches"], other_seed["batches"],
                                                     strict=True))


def test_claims_whose_cells_are_not_in_the_grid_are_untestable(tmp_path):
    out = tmp_path / "out"
    assert cli.main(["verdicts", "--results", str(tmp_path), "--dataset", "digits",
                     "--out", str(out)]) == 0
    records = {r["id"]: r for r in json.loads((out / "tables" / "verdicts.json").read_text())}
    assert records["figure2-ng-fastest-in-training"]["verdict"] == "untestable"
    assert "no cell of figure2" in records["figure2-ng-fastest-in-training"]["reason"]


def test_runs_of_another_config_do_not_count_and_the_reason_says_so(tmp_path):
    for seed in (1, 2, 3):
        write_run(tmp_path, "table4", "kimcnn", "adam", seed, accs=[0.5, 0.7])
        run_dir = write_run(tmp_path, "table4", "kimcnn", "adamng", seed, accs=[0.5, 0.8])
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        config["epochs"] = 10                                     # the cell asks for 150
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    claim = table4_verdict(tmp_path)
    assert claim.verdict == "untestable" and "only under another config: AdamNG" in claim.reason


def test_verdicts_beside_an_artifact_check_only_its_claims_into_their_own_files(tmp_path):
    out = tmp_path / "out"
    assert cli.main(["verdicts", "table4", "--results", str(tmp_path), "--out", str(out)]) == 0
    records = json.loads((out / "tables" / "verdicts_table4.json").read_text())
    assert records and {r["artifact"] for r in records} == {"table4"}
    assert not (out / "tables" / "verdicts.json").exists()
