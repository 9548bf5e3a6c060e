"""What a person reads while work runs: the sweep's [k/N] with time left, its end counts, one
line per reason, the CPU-share note, and warnings that repeat only when something is new."""

from __future__ import annotations

import os

import pytest
from omegaconf import OmegaConf

from conftest import compose_config, run_cli
from experiments import loops, sweep


@pytest.mark.parametrize("experiment,command_line,cells", [
    (["experiment=table4"], [], 60),                          # 6 optimizers x seeds 1-10
    (["experiment=table4"], ["seed=1,2", "epochs=3"], 12),    # the command line's seeds win
    ([], ["model=mlp6,mlp12", "optim=adam,sgdm,adamng", "seed=1,2"], 12), ([], ["seed=3"], 1),
])  # fmt: skip
def test_sweep_size_is_the_product_of_the_swept_values(experiment, command_line, cells):
    config = compose_config(experiment)
    OmegaConf.update(config, "hydra.overrides.task", experiment + command_line, force_add=True)
    assert sweep.sweep_size(config) == cells


def test_progress_estimates_the_time_left_from_the_cells_done(monkeypatch):
    report = sweep.SweepReport()
    report.total, report.started = 12, 1000.0
    monkeypatch.setattr(sweep.time, "monotonic", lambda: 1000.0 + 5.0)
    first = report.progress("/x/results/runs/digits/mlp6/adam/default/seed1")
    assert first == "[sweep 1/12] digits/mlp6/adam/default/seed1  0m05s so far"
    report.finished = 3                                       # 3 cells in 300 s: 100 s each
    monkeypatch.setattr(sweep.time, "monotonic", lambda: 1000.0 + 300.0)
    line = report.progress("/x/runs/digits/mlp6/sgdm/default/seed2")
    assert line == "[sweep 4/12] digits/mlp6/sgdm/default/seed2  5m00s so far, about 15m00s left"
    assert sweep.duration(3 * 3600 + 65) == "3h01m"


def test_failed_cells_are_listed_once_per_reason():
    failed = [{"status": "failed", "message": "mnist: missing files", "run_dir": f"r{i}"}
              for i in range(12)] + [{"status": "busy", "message": "another process", "run_dir": "b"}]
    lines = sweep.failed_lines(failed)
    assert lines == ["  failed (12 cells): mnist: missing files", "    r0", "    r1", "    r2",
                     "    ... and 9 more", "  busy (1 cell): another process", "    b"]


def test_the_cpu_share_note_is_one_line_once(monkeypatch, capsys):
    monkeypatch.setattr(sweep, "_CPU_NOTED", False)
    monkeypatch.setattr(os, "getloadavg", lambda: (7.5, 6.0, 3.0))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    sweep.note_cpu_share("auto")
    sweep.note_cpu_share("auto")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and "load average 7.5 on 2 cores" in lines[0]
    assert "OMP_NUM_THREADS" in lines[0] and len(lines[0]) <= 150
    monkeypatch.setattr(sweep, "_CPU_NOTED", False)
    monkeypatch.setattr(os, "getloadavg", lambda: (1.5, 1.0, 1.0))
    sweep.note_cpu_share("cpu")                               # an idle machine: nothing to say
    assert capsys.readouterr().out == ""


def test_a_dead_layer_warning_comes_only_with_a_new_layer(capsys):
    epochs = [{"a": 0.0, "b": 1.0, "c": 1.0}, {"a": 0.0, "b": 0.0, "c": 1.0},
              {"a": 1.0, "b": 0.0, "c": 1.0}, {"a": 0.0, "b": 0.0, "c": 1.0},
              {"a": 0.0, "b": 0.0, "c": 0.0}]
    warned: frozenset[str] = frozenset()
    for epoch, norms in enumerate(epochs, 1):
        warned = loops.warn_dead_layers({"grad_norms": norms}, epoch, True, warned, "float64")
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["[warning] epoch 1: zero gradient all epoch in a; they do not move",
                     "[warning] epoch 2: zero gradient all epoch in b; they do not move",
                     "[warning] epoch 5: zero gradient all epoch in c; they do not move"]


@pytest.mark.parametrize("dtype,advised", [(None, True), ("float32", True), ("float64", False)])
def test_the_float64_advice_goes_only_to_a_run_without_it(dtype, advised):
    names = [f"layers.{i}" for i in range(17)]
    line = loops.dead_layer_line(12, names, dtype)
    assert ("norm_dtype=float64" in line) == advised
    assert len(line) <= 152 and "layers.0, layers.1 and 15 more" in line


def test_a_sweep_shows_k_of_n_and_the_time_left(tmp_path):
    proc = run_cli("model=mlp6", "optim=adam,sgdm", "epochs=1", f"out_dir={tmp_path}",
                   multirun=True)
    out = proc.stdout
    assert "[sweep 1/2] digits/mlp6/adam/epochs=1/seed1" in out, out
    assert "[sweep 2/2] digits/mlp6/sgdm/epochs=1/seed1" in out and "left" in out
    assert ": 2 completed" in out.splitlines()[-1]
    assert "#1 :" not in out                                  # Hydra's own launch lines are off


def test_the_hydra_logger_is_quiet_in_the_root_config():
    cfg = compose_config([])
    assert OmegaConf.select(cfg, "hydra.job_logging.loggers.hydra.level") == "WARNING"
