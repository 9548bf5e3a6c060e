"""The report builders on a synthetic results tree written here: known errors and losses, three
seeds, one missing cell, one diverged cell, a partial cell, a failed run and a half-written line.
Only run outputs are written; no training code is involved."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib.image
import pandas as pd
import pytest
import yaml

from reports import cli
from reports.aggregate import seed_stats
from reports.expected import UNKNOWN, compose
from reports.figures import render_figure
from reports.formatting import PAPER_FILE, best_finished, format_stats, load_paper
from reports.grids import Cell, find_run, pending_runs
from reports.registry import artifacts
from reports.runs import load_runs, read_jsonl, split_overrides
from reports.tables import build_table, columns_for, render_table
from reports.tuning import render_readings, render_tuning

SEEDS = (1, 2, 3)
THRESHOLD = artifacts()["tune_clip_threshold"].tune_key     # the swept key, as configs/ name it
BLOCKS = artifacts()["ablation_bn_blocks"].grids[1].variants[0][0][0]
RESNETS = artifacts()["table1"].models        # read from configs/experiment/table1.yaml
TABLE_OPTIMS = artifacts()["table1"].optims


def run_config(dataset: str, model: str, optim: str, seed: int, extra: str = "default",
               experiment: str | None = None, changes: dict | None = None) -> dict:
    """A config.yaml's config as the engine resolves it for this cell (the report's own reading
    of configs/, `changes` as dotted keys on top); tests/test_report_trust.py checks that reading
    against configs the engine wrote."""
    flat = {key: value for key, value in compose(
        dataset, model, optim, experiment, tuple(split_overrides(extra).items())).items()
        if value is not UNKNOWN}
    flat.update(changes or {}, seed=seed)
    tree: dict = {}
    for key, value in flat.items():
        *parents, last = key.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return tree


def write_run(root: Path, dataset, model, optim, seed, accs=None, status="completed",
              extra="default", losses=None, grad_norms=False, meta=True, summary=True,
              command=None, torn_line=False, fields=None, experiment=None, changes=None):
    """One run folder as the engine writes it (docs/DESIGN.md "Run outputs"); `meta=False`
    writes no config.yaml, `experiment` and `changes` shape its config."""
    run_dir = root / "runs" / dataset / model / optim / extra / f"seed{seed}"
    run_dir.mkdir(parents=True)
    losses = losses or [2.0 / epoch for epoch in range(1, len(accs or [0] * 3) + 1)]
    accs = accs or [0.5] * len(losses)
    lines = []
    for epoch, (loss, acc) in enumerate(zip(losses, accs, strict=True), start=1):
        record = {"epoch": epoch, "train_loss": loss, "test_loss": loss * 1.1,
                  "train_acc": acc + 0.01, "test_acc": acc, "lr": 0.1}
        record.update(fields or {})
        if grad_norms:
            record["grad_norms"] = {f"layers.{i}": 10.0 ** (-(5 - i) / epoch) for i in range(6)}
        lines.append(json.dumps(record))
    text = "\n".join(lines) + "\n"
    if torn_line:
        text += '{"epoch": 99, "train_lo'  # a crash mid-write
    (run_dir / "metrics.jsonl").write_text(text)
    command = command or f"python run.py dataset={dataset} model={model} optim={optim} seed={seed}"
    if summary:
        final = json.loads(lines[-1])
        nonfinite = ["final.train_loss"] if status == "diverged" else []
        if nonfinite:  # strict JSON, as the engine writes a NaN: null, and its path listed
            final["train_loss"] = None
        (run_dir / "summary.json").write_text(json.dumps({
            "status": status, "epochs_done": len(losses), "epochs": len(losses), "final": final,
            "best": {"test_acc": max(accs)}, "command": command, "message": "",
            **({"nonfinite": nonfinite} if nonfinite else {})}))
    if meta:
        config = run_config(dataset, model, optim, seed, extra, experiment, changes)
        config["meta"] = {"dataset": dataset, "model": model, "optim": optim, "extra": extra,
                          "seed": seed, "command": command}
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    return run_dir


# Final test accuracies per (optimizer, seed) for CIFAR-10 ResNet-20; errors are 100 * (1 - acc).
TABLE_ACCS = {"sgdm": [0.92, 0.93, 0.94],    # errors 8, 7, 6 -> 7.00 ± 1.00
              "sgdmng": [0.95, 0.95, 0.96],  # errors 5, 5, 4 -> 4.67 ± 0.58 (best, bold)
              "adam": [0.90, 0.91, 0.89]}    # errors 10, 9, 11 -> 10.00 ± 1.00


@pytest.fixture()
def table_tree(tmp_path):
    root = tmp_path / "results"
    for optim, accs in TABLE_ACCS.items():
        for seed, acc in zip(SEEDS, accs, strict=True):
            write_run(root, "cifar10", "resnet20", optim, seed, accs=[0.5, acc])
    for seed in SEEDS:  # the diverged cell
        write_run(root, "cifar10", "resnet20", "adamng", seed, status="diverged")
    # a partial cell: two seeds better than the best, one diverged -> not bold
    write_run(root, "cifar10", "resnet20", "adamclip", 1, accs=[0.5, 0.97])
    write_run(root, "cifar10", "resnet20", "adamclip", 2, accs=[0.5, 0.97], torn_line=True)
    write_run(root, "cifar10", "resnet20", "adamclip", 3, status="diverged")
    # sgdmclip: seed 1 done, seed 2 failed, seed 3 running
    write_run(root, "cifar10", "resnet20", "sgdmclip", 1, accs=[0.5, 0.9])
    write_run(root, "cifar10", "resnet20", "sgdmclip", 2, status="failed",
              command="python run.py dataset=cifar10 model=resnet20 optim=sgdmclip seed=2 "
                      "launcher=slurm")
    write_run(root, "cifar10", "resnet20", "sgdmclip", 3, summary=False, torn_line=True)
    write_run(root, "cifar10", "resnet32", "sgdm", 1, status="interrupted")
    return root


def table1(seeds=SEEDS):
    return artifacts()["table1"].adapt(seeds=seeds)


def test_seed_stats_is_mean_and_sample_std():
    stats = seed_stats([8.0, 7.0, 6.0])
    assert (stats.mean, stats.std, stats.n) == (7.0, 1.0, 3)
    assert math.isnan(seed_stats([5.0]).std) and seed_stats([]).missing


def test_table_cells_means_stds_bold_missing_and_diverged(table_tree):
    runs = load_runs(table_tree)
    paper = {"table1": {"values": {"sgdm": {"resnet20": {"mean": 7.5, "std": 0.2}}}}}
    columns, grid = build_table(table1(), runs, paper, "error")
    assert [c.key for c in columns] == list(RESNETS)
    cell = {optim: grid[optim]["resnet20"] for optim in grid}
    assert format_stats(cell["sgdm"].stats) == "7.00 ± 1.00"
    assert format_stats(cell["sgdmng"].stats) == "4.67 ± 0.58"
    assert format_stats(cell["adam"].stats) == "10.00 ± 1.00"
    assert format_stats(cell["adamng"].stats) == "div."
    assert format_stats(cell["adamclip"].stats) == "3.00 ± 0.00 (div. 1/3)"
    assert format_stats(cell["sgdmclip"].stats) == "10.00 (n=1/3)"
    assert format_stats(grid["sgdmng_adap"]["resnet110"].stats) == "—"
    assert [o for o in grid if cell[o].bold] == ["sgdmng"]
    assert cell["sgdm"].stats.mean == pytest.approx(7.0)
    assert cell["sgdmng"].stats.std == pytest.approx(math.sqrt(1 / 3))
    assert cell["sgdm"].paper == (7.5, 0.2)


def test_rendered_files_markdown_latex_csv(table_tree, tmp_path):
    out = tmp_path / "out"
    paper = {"table1": {"values": {"sgdm": {"resnet20": {"mean": 7.5, "std": 0.2}}}}}
    paths = render_table(table1(), load_runs(table_tree), out, paper)
    assert sorted(p.name for p in paths) == ["table1.csv", "table1.md", "table1.tex"]
    markdown = (out / "tables" / "table1.md").read_text()
    sgdm_row = next(line for line in markdown.splitlines() if line.startswith("| SGDM |"))
    assert sgdm_row.split(" | ")[1:4] == ["7.00 ± 1.00", "7.50 ± 0.20", "-0.50"]
    assert "| **4.67 ± 0.58** |" in markdown and "| div. |" in markdown and "| — |" in markdown
    latex = (out / "tables" / "table1.tex").read_text()
    assert r"\textbf{4.67 $\pm$ 0.58}" in latex and r"\toprule" in latex and "AdamNG\\_adap" in latex
    assert "---" in latex and "div." in latex
    frame = pd.read_csv(out / "tables" / "table1.csv")
    row = frame[(frame.optimizer == "SGDMNG") & (frame.column == "resnet20")].iloc[0]
    assert row["mean"] == pytest.approx(14 / 3) and row["n"] == 3 and bool(row["bold"])
    assert not list((out / "tables").glob(".*tmp"))  # atomic writes leave no temp files


def test_missing_runs_list_holds_the_right_commands(table_tree):
    pending = pending_runs(table1(), load_runs(table_tree), str(table_tree))
    by_key = {(p.cell.model, p.cell.optim, p.seed): p for p in pending}
    missing = by_key[("resnet110", "sgdmng_adap", 3)]
    assert missing.state == "missing"
    assert missing.command == ("python run.py dataset=cifar10 model=resnet110 optim=sgdmng_adap "
                               f"seed=3 out_dir={table_tree}")
    failed = by_key[("resnet20", "sgdmclip", 2)]
    assert failed.state == "failed"      # its own command, for the folder read
    assert failed.command == ("python run.py dataset=cifar10 model=resnet20 optim=sgdmclip "
                              f"seed=2 launcher=slurm out_dir={table_tree}")
    assert by_key[("resnet20", "sgdmclip", 3)].state == "incomplete"
    assert by_key[("resnet32", "sgdm", 1)].state == "interrupted"
    # completed and diverged runs are results, not missing
    assert not {k for k in by_key if k[0] == "resnet20" and k[1] in TABLE_ACCS}
    assert ("resnet20", "adamng", 1) not in by_key
    assert len(pending) == 5 * 8 * 3 - 3 * 3 - 3 - 3 - 1
    # Figure 2's sweep is seed 1 (the tables add seeds 2-5, drawn as a band when present)
    figure2 = pending_runs(artifacts()["figure2"], [], "results")
    assert len(figure2) == 16 and {p.seed for p in figure2} == {1}
    quick = pending_runs(table1().adapt(scale="quick"), [], "results/quick", "experiment=table1_quick")
    assert quick[0].command == ("python run.py dataset=cifar10 model=resnet20 optim=adam seed=1 "
                                "out_dir=results/quick experiment=table1_quick")
    assert Cell("ptb", "lstm", "adam", (("dataset.bptt", "400"),)).command(1, "results") == (
        "python run.py dataset=ptb model=lstm optim=adam seed=1 dataset.bptt=400")


def test_partial_jsonl_and_extra_matching(tmp_path):
    root = tmp_path / "results"
    run_dir = write_run(root, "ptb", "lstm", "adam", 1, torn_line=True, summary=False)
    write_run(root, "ptb", "lstm", "adam", 1, extra="dataset.bptt=400")
    write_run(root, "ptb", "lstm", "adamng", 1, extra="dataset.bptt=40")
    assert len(read_jsonl(run_dir / "metrics.jsonl")) == 3
    assert split_overrides("a=1,schedule.milestones=[80,120]") == {
        "a": "1", "schedule.milestones": "[80,120]"}
    runs = load_runs(root)
    bptt40 = Cell("ptb", "lstm", "adam", (("dataset.bptt", "40"),))
    bptt400 = Cell("ptb", "lstm", "adam", (("dataset.bptt", "400"),))
    assert find_run(runs, bptt40, 1).extra == "default"
    assert find_run(runs, bptt400, 1).extra == "dataset.bptt=400"
    assert find_run(runs, Cell("ptb", "lstm", "adamng", (("dataset.bptt", "40"),)), 1)


def assert_image(path: Path):
    assert path.exists() and path.stat().st_size > 1000
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.std() > 0.01
    assert path.with_suffix(".pdf").stat().st_size > 1000


def write_mlp_tree(root: Path, dataset: str, optims, seeds=SEEDS, diverged=()):
    for depth_index, model in enumerate(("mlp6", "mlp12", "mlp18")):
        for optim_index, optim in enumerate(optims):
            for seed in seeds:
                scale = 1.0 + 0.1 * optim_index + 0.3 * depth_index + 0.05 * seed
                losses = [scale / epoch for epoch in range(1, 6)]
                accs = [min(0.99, 0.6 + 0.07 * epoch) for epoch in range(1, 6)]
                status = "diverged" if (model, optim) in diverged else "completed"
                write_run(root, dataset, model, optim, seed, accs=accs, losses=losses,
                          status=status, grad_norms=True, torn_line=seed == 2)


def test_figures_are_written_and_not_empty(tmp_path):
    root = tmp_path / "results"
    optims = artifacts()["figure1"].optims
    write_mlp_tree(root, "mnist", optims[:-1], diverged={("mlp18", "adam")})  # adamng missing
    for seed in SEEDS:
        write_run(root, "cifar10", "resnet110", "sgdm", seed, accs=[0.5, 0.8, 0.9],
                  losses=[2.0, 1.0, 0.4])
    write_run(root, "ptb", "lstm", "adam", 1, torn_line=True)           # BPTT 40
    write_run(root, "ptb", "lstm", "adamng", 1, extra="dataset.bptt=1000")
    runs = load_runs(root)
    out = tmp_path / "out"
    for name in ("figure1", "figure2", "figure3"):
        artifact = artifacts()[name].adapt(seeds=SEEDS)
        paths = render_figure(artifact, runs, out)
        assert [p.suffix for p in paths] == [".png", ".pdf"]
        assert_image(paths[0])
    code = cli.main(["diagnostics", "--results", str(root), "--out", str(out)])
    assert code == 0
    assert_image(out / "figures" / "diagnostics.png")  # AdamNG panel says "missing"


def test_demo_entry_renders_figure_table_and_diagnostics(tmp_path, capsys):
    root = tmp_path / "results" / "demo"
    write_mlp_tree(root, "digits", ("sgdm", "sgdmng", "adam", "adamng"), seeds=(1,))
    assert cli.main(["demo", "--results", str(root)]) == 0
    for stem in ("demo_figure1", "demo_diagnostics"):
        assert_image(root / "figures" / f"{stem}.png")
    table = (root / "tables" / "demo_table.md").read_text()
    assert "MLP-18 error" in table and "| SGDM |" in table and "**" in table
    printed = capsys.readouterr().out
    assert "all 12 runs present" in printed and str(root / "figures") in printed


def test_quick_scale_is_labelled(table_tree, tmp_path):
    out = tmp_path / "quick"
    assert cli.main(["table1", "--results", str(table_tree), "--out", str(out),
                     "--scale", "quick"]) == 0
    assert "QUICK SCALE" in (out / "tables" / "table1.md").read_text()
    assert "over seed 1;" in (out / "tables" / "table1.md").read_text()
    listed = (out / "missing" / "table1.txt").read_text()
    assert f"model=resnet110 optim=sgdmng_adap seed=1 out_dir={table_tree} " \
           "experiment=table1_quick" in listed


def test_paper_file_holds_every_printed_number_in_the_sweeps_shapes():
    paper = load_paper(PAPER_FILE)
    assert paper["paper"] == "the paper (arXiv 1707.04822)"
    kinds = {"table1": "error", "table2": "error", "table3": "topk", "table4": "best_acc"}
    for name, kind in kinds.items():
        artifact, table = artifacts()[name], paper[name]
        columns = tuple(c.key for c in columns_for(artifact, kind))
        references = list(table.get("reference_rows") or {})
        assert sorted(table["rows"]) == sorted(artifact.optims)   # the sweeps train every row
        assert tuple(table["columns"]) == columns
        assert sorted(table["values"]) == sorted(table["rows"] + references)
        assert len(artifact.seeds) >= table["runs"]                # at least the paper's runs
        for row, cells in table["values"].items():
            assert list(cells) == list(columns), (name, row)
            for value in cells.values():                           # no printed cell is null
                assert isinstance(value["mean"], float) and set(value) <= {"mean", "std"}
    values = {name: paper[name]["values"] for name in kinds}
    # a corner of each table, as printed (mean ± std)
    assert values["table1"]["adam"]["resnet20"] == {"mean": 9.14, "std": 0.07}
    assert values["table1"]["adam"]["resnet44"] == {"mean": 7.794, "std": 0.22}
    assert values["table1"]["sgdmng_adap"]["resnet110"] == {"mean": 5.87, "std": 0.10}
    assert values["table1"]["sgdm_he"]["resnet20"] == {"mean": 8.75}
    assert values["table1"]["sgdm_he"]["resnet110"] == {"mean": 6.61, "std": 0.16}
    assert values["table2"]["adam"]["resnet20"] == {"mean": 34.44, "std": 0.33}
    assert values["table2"]["sgdmng_adap"]["resnet110"] == {"mean": 26.72, "std": 0.39}
    assert values["table3"]["adam"] == {"top1": {"mean": 35.6}, "top5": {"mean": 14.09}}
    assert values["table3"]["sgdmng"] == {"top1": {"mean": 28.43}, "top5": {"mean": 9.57}}
    assert values["table4"]["adamng"]["best_val_acc"] == {"mean": 77.11}
    assert values["table4"]["sgdm"]["best_val_acc"] == {"mean": 64.35}
    # 4 x 5 + 8 x 5 x 2 + 4 x 2 + 6 cells, every one with its spread where the paper prints one
    cells = [v for name in kinds for row in values[name].values() for v in row.values()]
    assert len(cells) == 9 * 5 + 8 * 5 + 4 * 2 + 6
    assert sum("std" in v for v in cells) == 8 * 5 * 2 + 1
    assert paper["tuning"]["clip_threshold"] == {"searched": [0.05, 0.1, 0.5, 1, 5], "best": 0.1}
    assert paper["tuning"]["adap_alpha"] == {"searched": [0.01, 0.02, 0.05], "best": 0.02}


def test_unreadable_paper_file_warns_and_renders_without_it(tmp_path, capsys):
    broken = tmp_path / "paper.yaml"
    broken.write_text("table1: {values: [unclosed\n")
    assert load_paper(broken) == {}
    err = capsys.readouterr().err
    assert "paper numbers not shown" in err and str(broken) in err and "--paper" in err


def test_diagnostics_keeps_dead_layers_as_exact_zeros(tmp_path):
    """A layer whose mean gradient norm is exactly 0 is drawn (as x below the data), not
    silently dropped by the log axis; an unlogged value stays NaN."""
    from reports.diagnostics import grad_norm_matrix, render_diagnostics

    root = tmp_path / "results"
    for optim in ("adam", "adamng"):
        write_run(root, "digits", "mlp18", optim, 1, grad_norms=True)
    path = root / "runs/digits/mlp18/adamng/default/seed1/metrics.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    records[-1]["grad_norms"]["layers.0"] = 0.0
    del records[-1]["grad_norms"]["layers.1"]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    runs = load_runs(root)
    run = find_run(runs, Cell("digits", "mlp18", "adamng"), 1)
    blocks, epochs, matrix = grad_norm_matrix(run)
    assert blocks[:2] == ["layers.0", "layers.1"] and list(epochs) == [1, 2, 3]
    assert matrix[-1, 0] == 0.0 and math.isnan(matrix[-1, 1]) and (matrix[:-1] > 0).all()
    artifact = artifacts()["diagnostics"].adapt(dataset="digits", seeds=(1,))
    paths = render_diagnostics(artifact, runs, tmp_path / "out")
    assert_image(paths[0])


def _rows(markdown: str) -> dict[str, list[str]]:
    """Markdown table rows by their first cell."""
    rows = [line.strip("|").split(" | ") for line in markdown.splitlines() if line.startswith("| ")]
    return {row[0].strip(): [c.strip() for c in row[1:]] for row in rows}


def test_table1_shows_he_et_al_reference_row(table_tree, tmp_path):
    render_table(table1(), load_runs(table_tree), tmp_path, load_paper(PAPER_FILE))
    markdown = (tmp_path / "tables" / "table1.md").read_text()
    rows = _rows(markdown)
    assert list(rows).index("SGDM* (He et al.)") == list(rows).index("SGDM") - 1
    assert rows["SGDM* (He et al.)"][:3] == ["", "8.75", ""]          # no run of ours, no Δ
    assert rows["SGDM* (He et al.)"][12:14] == ["", "6.61 ± 0.16"]
    assert rows["Adam"][6:8] == ["—", "7.794 ± 0.22"]                  # as printed
    assert "reported in He et al." in markdown
    frame = pd.read_csv(tmp_path / "tables" / "table1.csv")
    he = frame[frame.optimizer == "SGDM* (He et al.)"]
    assert len(he) == 5 and he.reference.all() and (he.n == 0).all()


def test_table3_shows_adams_best_lr_and_says_which(tmp_path):
    root = tmp_path / "results"

    def imagenet(optim, lr, top1, status="completed"):
        extra = "default" if lr is None else f"optim.lr={lr}"
        fields = {"test_top1": top1, "test_top5": top1 + 0.2}
        write_run(root, "imagenet", "preact_resnet34", optim, 1, accs=[0.5, 0.5], extra=extra,
                  fields=fields, status=status)

    imagenet("adam", "0.0005", 0.60)            # error 40
    imagenet("adam", None, 0.66)                # the default lr, 0.001: error 34 (the pick)
    imagenet("adam", "0.005", 0.70, "diverged")
    imagenet("adamng", "0.001", 0.70)           # error 30: shown (Adam's pick)
    imagenet("adamng", "0.01", 0.75)            # error 25: AdamNG's own best, listed only
    imagenet("sgdm", None, 0.71)
    render_table(artifacts()["table3"], load_runs(root), tmp_path / "out", load_paper(PAPER_FILE))
    markdown = (tmp_path / "out" / "tables" / "table3.md").read_text()
    rows = _rows(markdown)
    assert rows["Adam (lr 0.001)"][:3] == ["34.00", "35.60", "-1.60"]
    assert rows["AdamNG (lr 0.001)"][0] == "30.00"
    assert rows["SGDM"][0] == "**29.00**" and rows["SGDMNG"][0] == "—"
    assert "at optim.lr=0.001" in markdown
    assert "Adam 0.0005: 40.00, 0.001: 34.00, 0.005: div., 0.01: —" in markdown
    assert "AdamNG 0.0005: —, 0.001: 30.00, 0.005: —, 0.01: 25.00" in markdown
    pending = pending_runs(artifacts()["table3"], load_runs(root), "results")
    assert len(pending) == 8 + 2 - 6 and all("experiment" not in p.command for p in pending)


def test_tuning_table_picks_the_lowest_holdout_error(tmp_path):
    root = tmp_path / "results"
    for threshold, acc in (("0.05", 0.80), ("0.1", 0.85), ("0.5", 0.83), ("1", 0.70)):
        write_run(root, "cifar10", "resnet56", "sgdmclip", 1, accs=[0.5, acc],
                  extra=f"dataset.holdout=5000,{THRESHOLD}={threshold}")
    write_run(root, "cifar10", "resnet56", "adamclip", 1, accs=[0.5, 0.9],
              extra=f"dataset.holdout=5000,{THRESHOLD}=5")
    table1_run = write_run(root, "cifar10", "resnet56", "sgdmclip", 1, accs=[0.5, 0.99])
    runs = load_runs(root)
    # a holdout run never answers a Table 1 cell, nor a Table 1 run a holdout cell
    assert find_run(runs, Cell("cifar10", "resnet56", "sgdmclip"), 1).path == table1_run
    assert find_run(runs, Cell("cifar10", "resnet56", "sgdmclip", (
        (THRESHOLD, "0.1"), ("dataset.holdout", "5000"))), 1).extra.endswith("=0.1")
    render_tuning(artifacts()["tune_clip_threshold"], runs, tmp_path / "out", load_paper())
    markdown = (tmp_path / "out" / "tables" / "tune_clip_threshold.md").read_text()
    rows = _rows(markdown)
    assert rows["Run"] == ["τ=0.05", "τ=0.1", "τ=0.5", "τ=1", "τ=5", "our pick", "paper's pick"]
    assert rows["CIFAR-10 ResNet-56 SGDMCLIP"] == [
        "20.00", "**15.00**", "17.00", "30.00", "—", "0.1 (4/5 done)", "0.1"]
    assert rows["CIFAR-10 ResNet-56 AdamCLIP"][-2:] == ["5 (1/5 done)", "0.1"]
    assert rows["CIFAR-100 ResNet-56 SGDMCLIP"][-2:] == ["—", "0.1"]
    assert "held-out" in markdown
    pending = pending_runs(artifacts()["tune_clip_threshold"].adapt(scale="quick"), runs,
                           "results/quick")
    # full-scale runs never answer a quick cell: each is listed with how its config differs
    assert len(pending) == 20
    other = [p for p in pending if p.state == "present but made under another config"]
    assert len(other) == 5 and all("epochs 160 (expected 2)" in p.detail for p in other)
    assert pending[0].command.endswith(f"{THRESHOLD}=0.05 dataset.holdout=5000 "
                                       "out_dir=results/quick experiment=tune_clip_threshold_quick")


def test_readings_table_sets_the_ablation_next_to_the_default(tmp_path):
    root = tmp_path / "results"
    for seed, acc in ((1, 0.93), (2, 0.95)):
        write_run(root, "cifar10", "resnet56", "sgdmng", seed, accs=[0.5, acc])
        write_run(root, "cifar10", "resnet56", "sgdmng", seed, accs=[0.5, acc - 0.01],
                  extra=f"{BLOCKS}=conv_bn")
    artifact = artifacts()["ablation_bn_blocks"]
    render_readings(artifact, load_runs(root), tmp_path / "out", load_paper())
    rows = _rows((tmp_path / "out" / "tables" / "ablation_bn_blocks.md").read_text())
    assert rows["Optimizer"] == ["Test error (blocks=layer)", "Test error (blocks=conv_bn)"]
    assert rows["SGDMNG"] == ["6.00 ± 1.41 (n=2/5)", "7.00 ± 1.41 (n=2/5)"]
    assert rows["AdamNG"] == ["—", "—"]
    # `make ablation_bn_blocks` runs its own sweep; Table 1's runs are only read
    assert artifact.sweeps == ("ablation_bn_blocks",)
    assert artifacts()["table3"].sweeps == ("table3_adam", "table3")


def test_sweeps_option_prints_what_make_runs(capsys):
    assert cli.main(["table3", "ablation_clip_global", "--sweeps", "--scale", "quick"]) == 0
    assert capsys.readouterr().out.split() == [
        "table3_adam_quick", "table3_quick", "ablation_clip_global_quick"]


@pytest.mark.parametrize("lower_is_better", [True, False])
def test_the_best_finished_cell_ties_to_the_first_either_way(lower_is_better):
    """The rule of Table 3's lr pick and of the holdout searches: the best mean among the cells
    with a finished seed and none diverged, the first on a tie, whichever way is better."""
    stats = {"a": seed_stats([], n_diverged=1, n_expected=1),     # diverged: never picked
             "b": seed_stats([], n_expected=1),                   # not run yet
             "c": seed_stats([5.0], n_expected=1),
             "d": seed_stats([5.0], n_expected=1),
             "e": seed_stats([7.0, 3.0], n_expected=2)}           # the same mean as c and d
    assert best_finished(stats, lower_is_better) == "c"
    stats["f"] = seed_stats([4.0 if lower_is_better else 6.0], n_expected=1)
    assert best_finished(stats, lower_is_better) == "f"
    assert best_finished({"a": stats["a"], "b": stats["b"]}, lower_is_better) is None
