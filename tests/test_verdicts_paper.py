"""The paper against itself and the published Table 4 verdicts.

- paper_results.yaml holds every number of the paper's Tables 1-4 as printed (read from the
  paper's own text here, so a typo in the file fails);
- the claims applied to the paper's printed means give the counts worked out by hand below;
- a fast golden subset: the committed Table 4 runs (10 seeds, 10 epochs) give the words and
  effects the reproduction publishes, with the protocol on every word, and marking 5 of Adam's
  10 seeds diverged changes what the outputs say."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from reports import cli
from reports.formatting import PAPER_FILE
from reports.paper_checks import paper_own
from reports.registry import artifacts
from reports.runs import load_runs
from reports.verdicts import evaluate, load_claims

ARTIFACTS = artifacts()

PAPER = Path("/work/shared/paper/yu-2017-block-normalized-gradient.md")
RT_RUNS = REPO / "docs" / "reproduction" / "runs" / "rt" / "kimcnn"
RUN_ARGS = "data_root=/data dataset.verify_md5=false epochs=10"
NUMBER = re.compile(r"\d+\.\d+")


def _table(text: str, header: str, caption: str) -> dict[str, list[float]]:
    """Row name -> the numbers of that row, between the last `header` line before the table's
    caption and the caption."""
    end = text.index(caption)
    block = text[text.rindex(header, 0, end):end]
    rows = {}
    for line in block.splitlines()[1:]:
        name, _, rest = line.partition("\t")
        found = [float(n) for n in NUMBER.findall(rest)]
        if found:
            rows[name.replace(" _{adap}", "_adap").strip()] = found
    return rows


@pytest.mark.skipif(not PAPER.exists(), reason="the paper's text is not in this checkout")
def test_paper_results_file_holds_the_papers_printed_numbers():
    text = PAPER.read_text()
    paper = yaml.safe_load(PAPER_FILE.read_text())
    names = {"Adam": "adam", "AdamCLIP": "adamclip", "AdamNG": "adamng",
             "AdamNG_adap": "adamng_adap", "SGDM": "sgdm", "SGDMCLIP": "sgdmclip",
             "SGDMNG": "sgdmng", "SGDMNG_adap": "sgdmng_adap", "SGDM*": "sgdm_he"}
    for table, caption in (("table1", "Table 1: Error"), ("table2", "Table 2: Error")):
        rows = _table(text, "Algorithm\tResNet-20", caption)
        assert len(rows) == len(paper[table]["values"]), table
        for name, printed in rows.items():
            values = paper[table]["values"][names[name]]
            ours = []
            for column in paper[table]["columns"]:
                cell = values[column]
                ours += [cell["mean"]] + ([cell["std"]] if "std" in cell else [])
            assert ours == printed, (table, name)
    for name, printed in _table(text, "method\tTop-1", "Table 3:").items():
        values = paper["table3"]["values"][name.lower()]
        assert [values["top1"]["mean"], values["top5"]["mean"]] == printed
    row = _table(text, "Algorithm\tAdamNG", "Table 4:")["Validation Accuracy"]
    order = ["adamng", "adam", "adagradng", "adagrad", "sgdmng", "sgdm"]
    assert [paper["table4"]["values"][o]["best_val_acc"]["mean"] for o in order] == row


def test_the_papers_own_numbers_by_hand():
    """Table 2, SGDMNG below SGDM: only ResNet-110 (27.49 < 28.79): 1 of 5. Table 1, SGDM below
    Adam: ResNet-20, 32, 44 (7.93 < 9.14, 7.15 < 8.33, 7.09 < 7.794), not 56 (7.34 > 7.33) or 110
    (7.07 > 6.75): 3 of 5. Table 2, SGDM below Adam except ResNet-110 (28.79 > 28.20): 4 of 5.
    Table 4, adaptive above SGDM of its kind: AdaGradNG = SGDMNG = 71.95 is a tie: 3 of 4."""
    data = load_claims()
    claims = {c["id"]: c for c in data["claims"]}
    expected = {"table2-sgdmng-beats-sgdm": (1, 5), "table1-sgdm-beats-adam": (3, 5),
                "table2-sgdm-beats-adam": (4, 5), "table4-adaptive-beats-sgdm": (3, 4),
                "table4-ng-much-better": (3, 3), "table4-adamng-best": (5, 5)}
    for claim_id, counts in expected.items():
        claim = claims[claim_id]
        assert paper_own(claim, ARTIFACTS[claim["artifact"]], data) == counts, claim_id
    assert paper_own(claims["figure1-adamng-always-best"], ARTIFACTS["figure1"], data) is None


# --- the golden subset: Table 4's committed runs -----------------------------------------------

def copy_table4(root: Path, diverged_adam: tuple[int, ...] = ()) -> Path:
    """The committed base-protocol Table 4 runs (10 seeds, 10 epochs); `diverged_adam`: those
    seeds of Adam marked diverged, as a non-finite loss would end them."""
    for folder in RT_RUNS.glob("*/epochs=10"):
        shutil.copytree(folder, root / "runs" / "rt" / "kimcnn" / folder.parent.name / folder.name)
    for seed in diverged_adam:
        path = root / "runs" / "rt" / "kimcnn" / "adam" / "epochs=10" / f"seed{seed}" / \
            "summary.json"
        summary = json.loads(path.read_text())
        path.write_text(json.dumps({**summary, "status": "diverged"}))
    return root


def table4_claims(root: Path):
    table4 = ARTIFACTS["table4"].adapt(run_args=RUN_ARGS)
    return {c.claim["id"]: c for c in evaluate({"table4": table4}, load_runs(root))}


PUBLISHED = {   # id: (word, deciding effect, its 95% t interval), 10 of 10 seeds
    "table4-ng-much-better": ("contradicted", -0.384615, (-0.622295, -0.146936)),
    "table4-adaptive-beats-sgdm": ("holds", 2.93621, (2.16388, 3.70854)),
    "table4-adamng-best": ("contradicted", -0.797373, (-1.25607, -0.338675)),
}


@pytest.mark.skipif(not RT_RUNS.is_dir(), reason="no committed reproduction runs")
def test_published_table4_verdicts(tmp_path):
    claims = table4_claims(copy_table4(tmp_path))
    assert set(claims) == set(PUBLISHED)
    for claim_id, (word, mean, interval) in PUBLISHED.items():
        claim = claims[claim_id]
        effect = claim.decided_by.effect
        assert claim.verdict == word, (claim_id, claim.reason)
        assert (effect.n, claim.decided_by.asked) == (10, 10)
        assert effect.mean == pytest.approx(mean, abs=1e-5)
        assert (effect.low, effect.high) == pytest.approx(interval, abs=1e-5)
        assert claim.qualified == f"{word} (proxy: 10 of the paper's 150 epochs)"
        assert claim.alpha == pytest.approx(0.0215, abs=2e-4) and claim.looks == (3, 5, 10)


@pytest.mark.skipif(not RT_RUNS.is_dir(), reason="no committed reproduction runs")
def test_half_of_adams_seeds_diverged_changes_what_the_outputs_say(tmp_path):
    root = copy_table4(tmp_path / "results", diverged_adam=(6, 7, 8, 9, 10))
    claim = table4_claims(root)["table4-adaptive-beats-sgdm"]
    assert claim.verdict != "holds"
    adam = next(r for r in claim.results if r.comparison.label.startswith("Adam > SGDM"))
    assert (adam.used, adam.asked, adam.verdict) == (5, 10, "inconclusive")
    out = tmp_path / "out"
    assert cli.main(["verdicts", "table4", "--results", str(root), "--out", str(out),
                     "--run-args", RUN_ARGS]) == 0
    text = (out / "tables" / "verdicts_table4.md").read_text()
    assert "Adam Kim-CNN seed(s) 6, 7, 8, 9, 10" in text and "5 of 10" in text
    record = next(r for r in json.loads((out / "tables" / "verdicts_table4.json").read_text())
                  if r["id"] == "table4-adaptive-beats-sgdm")
    assert record["diverged"] == ["Adam Kim-CNN seed(s) 6, 7, 8, 9, 10"]
    assert (out / "figures" / "verdicts_table4.png").stat().st_size > 0
