"""What a reader of the report may trust: a cell shows only runs of the config it asks for, a
damaged file never stops a report, printed commands fit the folder read, and runs trained by
more than one commit are marked. Run folders are written here; one slow test trains for real."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from reports import cli, grids
from reports.expected import IGNORED, UNKNOWN, compose
from reports.grids import find_run, pending_runs
from reports.registry import artifacts, demo_artifacts
from reports.runs import load_runs
from tests.test_reports import run_config, write_run

ROOT = Path(__file__).resolve().parent.parent
OTHER = "present but made under another config"


def demo_run(root: Path, optim: str = "adam", extra: str = "default", **kwargs) -> Path:
    return write_run(root, "digits", "mlp6", optim, 1, accs=[0.5, 0.9], extra=extra, **kwargs)


def table_row(root: Path, name: str, optim: str) -> list[str]:
    label = grids.label(optim)
    line = next(line for line in (root / "tables" / f"{name}.md").read_text().splitlines()
                if line.startswith(f"| {label} |"))
    return [cell.strip() for cell in line.strip("|").split(" | ")[1:]]


def test_a_shorter_run_never_fills_a_cell_and_is_listed(tmp_path, capsys):
    # `python run.py model=mlp6 optim=adam epochs=2`: the demo cell asks for 30 epochs
    demo_run(tmp_path, extra="epochs=2", changes={"epochs": 2})
    assert cli.main(["demo", "--results", str(tmp_path)]) == 0
    assert table_row(tmp_path, "demo_table", "adam")[:2] == ["—", "—"]
    printed = capsys.readouterr().out
    line = f"{OTHER}: epochs 2 (expected 30) [runs/digits/mlp6/adam/epochs=2/seed1]"
    assert line in printed
    assert line in (tmp_path / "missing" / "demo_figure1.txt").read_text()
    # the same run counts where the report is told it was made with epochs=2
    assert cli.main(["demo", "--results", str(tmp_path), "--run-args", "epochs=2"]) == 0
    assert table_row(tmp_path, "demo_table", "adam")[0] == "**10.00**"


@pytest.mark.parametrize("key", ["batch_size", "optim.momentum", "dataset.limit"])
def test_every_key_that_decides_a_result_is_compared(tmp_path, key):
    demo_run(tmp_path, "sgdm", extra=f"{key}=7", changes={key: 7})
    artifact = demo_artifacts()["demo_table"]
    cell = artifact.grids[0].cell("digits", "mlp6", "sgdm")
    runs = load_runs(tmp_path)
    assert find_run(runs, cell, 1) is None
    assert any(f"{key} 7 (expected" in p.detail for p in pending_runs(artifact, runs))


def test_identity_exempt_keys_do_not_split_a_cell(tmp_path):
    changes = {"device": "cuda:3", "data_root": "/elsewhere", "grad_norm_every": 1,
               "dataset.verify_md5": False, "log_every": 5, "dataset.vocab_size": 99}
    demo_run(tmp_path, changes=changes)
    cell = demo_artifacts()["demo_table"].grids[0].cell("digits", "mlp6", "adam")
    assert find_run(load_runs(tmp_path), cell, 1) is not None


def test_a_diverged_run_of_the_cell_wins_over_any_other(tmp_path):
    demo_run(tmp_path, extra="epochs=2", changes={"epochs": 2})         # another config
    demo_run(tmp_path, status="diverged")                                 # the cell's own
    demo_run(tmp_path, extra="epochs=30", changes={"epochs": 30})        # the same config again
    assert cli.main(["demo", "--results", str(tmp_path)]) == 0
    assert table_row(tmp_path, "demo_table", "adam")[0] == "div."


def test_quick_and_full_runs_never_render_under_the_other_banner(tmp_path):
    full, quick = tmp_path / "full", tmp_path / "quick"
    write_run(full, "mnist", "mlp6", "adam", 1, accs=[0.5, 0.9])
    write_run(quick, "mnist", "mlp6", "adam", 1, accs=[0.5, 0.8], experiment="figure1_quick")
    for results, scale in ((full, "quick"), (quick, "full")):
        out = tmp_path / f"out_{scale}"
        assert cli.main(["figure1", "--results", str(results), "--out", str(out),
                         "--scale", scale, "--seeds", "1"]) == 0
        listed = (out / "missing" / "figure1.txt").read_text()
        assert "dataset.limit" in listed and f"{OTHER}:" in listed
        assert "| Adam |" not in (out / "tables" / "figure1_targets.md").read_text()
    out = tmp_path / "out_quick_ok"
    assert cli.main(["figure1", "--results", str(quick), "--out", str(out), "--scale", "quick",
                     "--seeds", "1"]) == 0
    assert "| Adam |" in (out / "tables" / "figure1_targets.md").read_text()


def test_table4_counts_only_its_own_runs_at_the_epochs_it_is_told(tmp_path):
    lr_key = "optim.lr"
    max_norm = "model.net.max_norm"
    for optim in ("adam", "adamng"):
        write_run(tmp_path, "rt", "kimcnn", optim, 1, accs=[0.5, 0.70], extra="epochs=10",
                  changes={"epochs": 10})
        write_run(tmp_path, "rt", "kimcnn", optim, 1, accs=[0.5, 0.99],
                  extra=f"{lr_key}=1e-4,epochs=10", changes={"epochs": 10, lr_key: 1e-4})
        write_run(tmp_path, "rt", "kimcnn", optim, 1, accs=[0.5, 0.98],
                  extra=f"{max_norm}=3.0,epochs=10", changes={"epochs": 10, max_norm: 3.0})
    assert cli.main(["table4", "--results", str(tmp_path), "--seeds", "1"]) == 0
    assert table_row(tmp_path, "table4", "adam")[0] == "—"     # 150 epochs asked for
    listed = (tmp_path / "missing" / "table4.txt").read_text()
    assert f"{OTHER}: epochs 10 (expected 150) [runs/rt/kimcnn/adam/epochs=10/seed1]" in listed
    assert cli.main(["table4", "--results", str(tmp_path), "--seeds", "1",
                     "--run-args", "epochs=10"]) == 0
    assert table_row(tmp_path, "table4", "adam")[0] == "**70.00**"   # never 99 or 98


def test_damaged_files_are_listed_and_the_report_goes_on(tmp_path, capsys):
    table1 = artifacts()["table1"].optims
    damaged = {}
    for optim in table1:
        run_dir = write_run(tmp_path, "cifar10", "resnet20", optim, 1, accs=[0.5, 0.9])
        damaged[optim] = run_dir
    binary = bytes(range(256)) * 4
    (damaged["adam"] / "config.yaml").write_bytes(binary)
    (damaged["adamclip"] / "metrics.jsonl").write_bytes(binary)
    (damaged["adamng"] / "summary.json").write_text('{"status": "compl')      # cut off
    (damaged["sgdm"] / "config.yaml").write_text("- a list\n- not a mapping\n")
    (damaged["sgdmng"] / "summary.json").write_text('"a string"')
    (damaged["sgdmclip"] / "metrics.jsonl").write_text('[1, 2]\n{"epoch": 1}\n\xff\n')
    (damaged["adamng_adap"] / "config.yaml").write_text("meta: 5\n")
    code = cli.main(["table1", "figure2", "--results", str(tmp_path), "--seeds", "1"])
    assert code == 0
    printed = capsys.readouterr().out
    for optim, name in (("adam", "config.yaml"), ("adamclip", "metrics.jsonl"),
                        ("adamng", "summary.json"), ("sgdm", "config.yaml"),
                        ("sgdmng", "summary.json"), ("sgdmclip", "metrics.jsonl"),
                        ("adamng_adap", "config.yaml")):
        assert f"runs/cifar10/resnet20/{optim}/default/seed1/{name}: " in printed, optim
    assert "not UTF-8" in printed and "holds a list" in printed and "cut" in printed
    assert (tmp_path / "tables" / "table1.md").exists()
    assert table_row(tmp_path, "table1", "sgdmng_adap")[0] == "**10.00**"   # undamaged


def test_resume_commands_name_the_folder_read_and_no_other_machines_paths(tmp_path):
    stored = ("python run.py optim=adam seed=1 out_dir=/their/results "
              "data_root=/their/data experiment=table4 epochs=10 launcher=slurm")
    run_dir = write_run(tmp_path, "rt", "kimcnn", "adam", 1, status="interrupted",
                        extra="epochs=10", changes={"epochs": 10}, command=stored)
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["run_dir"] = "/their/results/runs/rt/kimcnn/adam/epochs=10/seed1"
    (run_dir / "summary.json").write_text(json.dumps(summary))
    artifact = artifacts()["table4"].adapt(seeds=(1,), run_args="epochs=10")
    pending = pending_runs(artifact, load_runs(tmp_path), str(tmp_path), "epochs=10")
    resume = next(p for p in pending if p.cell.optim == "adam")
    assert resume.state == "interrupted"
    assert resume.command == ("python run.py optim=adam seed=1 experiment=table4 launcher=slurm "
                              f"out_dir={tmp_path} epochs=10")
    mine = pending_runs(artifact, load_runs(tmp_path), "results", "data_root=/mine epochs=10")
    assert next(p for p in mine if p.cell.optim == "adam").command.endswith(
        "launcher=slurm data_root=/mine epochs=10")


def test_runs_trained_by_more_than_one_commit_are_marked(tmp_path, capsys):
    for optim, commits in (("adam", [{"commit": "a" * 40, "epochs": [1, 4]},
                                     {"commit": "b" * 40, "epochs": [5, 30]}]),
                           ("adamng", "not a list"), ("sgdm", None)):
        run_dir = demo_run(tmp_path, optim)
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        config["meta"].update({"git_commit": "b" * 40, "commits": commits})
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    assert cli.main(["demo", "--results", str(tmp_path)]) == 0
    assert table_row(tmp_path, "demo_table", "adam")[0] == "**10.00 †**"
    assert table_row(tmp_path, "demo_table", "adamng")[0] == "**10.00**"
    markdown = (tmp_path / "tables" / "demo_table.md").read_text()
    assert "†: a seed of the cell was trained by more than one commit" in markdown
    printed = capsys.readouterr().out
    assert ("runs/digits/mlp6/adam/default/seed1: aaaaaaaaaaaa (epochs 1-4), bbbbbbbbbbbb "
            "(epochs 5-30)") in printed


def test_the_config_a_cell_asks_for_is_composed_in_hydras_order():
    quick = compose("rt", "kimcnn", "adam", "table4_quick")
    assert (quick["epochs"], quick["dataset.limit"]) == (3, 2000)        # the quick twin's body
    full = compose("rt", "kimcnn", "adam", "table4")
    assert (full["epochs"], full["batch_size"]) == (150, 50)      # ${dataset.train.epochs}, ...
    assert full["model.net.windows"] == [3, 4, 5]                 # ${oc.select:...,default}
    assert full["model.net.vocab_size"] is UNKNOWN                 # filled from the data
    assert "data_root" not in full and "device" not in full        # identity-exempt
    told = compose("rt", "kimcnn", "adam", "table4", run_args=[("epochs", "10")])
    assert (told["epochs"], told["dataset.train.epochs"]) == (10, 150)
    # overrides land before interpolations resolve, as in Hydra
    deeper = compose("rt", "kimcnn", "adam", None, run_args=[("dataset.train.epochs", "5")])
    assert deeper["epochs"] == 5
    swept = compose("ptb", "lstm", "sgdm", "figure3", (("dataset.bptt", "400"),))
    assert swept["dataset.bptt"] == 400 and swept["epochs"] == 40


def test_the_reports_exempt_keys_are_the_engines():
    from experiments.record import IGNORED as ENGINE

    assert set(IGNORED) == set(ENGINE)


def test_dead_demo_optimizer_list_is_gone():
    assert not hasattr(grids, "DEMO_OPTIMS")
    assert demo_artifacts()["demo_table"].optims == tuple(
        yaml.safe_load((ROOT / "configs/experiment/demo.yaml").read_text())["hydra"]["sweeper"]
        ["params"]["optim"].split(","))


def test_a_run_without_a_readable_config_is_not_counted(tmp_path):
    demo_run(tmp_path, meta=False)
    artifact = demo_artifacts()["demo_table"]
    runs = load_runs(tmp_path)
    assert find_run(runs, artifact.grids[0].cell("digits", "mlp6", "adam"), 1) is None
    listed = {p.cell.optim: p for p in pending_runs(artifact, runs) if p.cell.model == "mlp6"}
    assert listed["adam"].state == "present but its config cannot be checked"
    assert listed["adam"].detail == "config.yaml missing or damaged [runs/digits/mlp6/adam/default/seed1]"


@pytest.mark.slow
def test_the_cells_config_is_the_one_the_engine_resolves(tmp_path):
    """Trains for real: a 2-epoch run on the bundled digits is listed under the demo's 30-epoch
    cell, and counted once the report is told it was made with epochs=2."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "run.py", "model=mlp6", "optim=adam", "epochs=2",
                           f"out_dir={tmp_path}", "device=cpu"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    artifact = demo_artifacts()["demo_table"]
    runs = load_runs(tmp_path)
    listed = {p.cell.optim: p for p in pending_runs(artifact, runs) if p.cell.model == "mlp6"}
    assert listed["adam"].detail.startswith("epochs 2 (expected 30) ")
    told = artifact.adapt(run_args="epochs=2")
    cell = told.grids[0].cell("digits", "mlp6", "adam")
    assert find_run(runs, cell, 1) is not None, cell.differences(runs[0])
    assert run_config("digits", "mlp6", "adam", 1)["epochs"] == 30
