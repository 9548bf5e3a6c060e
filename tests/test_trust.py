"""Results you can trust: a run folder holds what its config says, nothing finished is lost, bad
input and a failing environment get one line and an exit code, and a failed cell never stops a
sweep. Most tests train in-process on digits (a second each); a few run the real CLI."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import open_dict

from conftest import (
    FAST,
    REPO,
    cli_env,
    compose_config,
    folder_files,
    run_cli,
    run_on_tmpfs,
    stop_at_checkpoint,
    train,
)
from data.fixtures import make_mnist, make_ptb
from experiments.config import check_config
from experiments.errors import (
    EXIT_BUSY,
    EXIT_USER,
    ConfigError,
    IdentityMismatch,
    ResumeError,
    user_error,
)
from experiments.io import RunLock, save_torch, write_text
from experiments.record import config_identity

# -- run identity ------------------------------------------------------------------------------


@pytest.mark.parametrize("change", ["epochs=3", "optim.lr=0.01", "amp=bf16", "seed=2"])
def test_another_config_never_skips_or_resumes_the_folders_run(copy, change, capsys):
    before = folder_files(copy)
    with pytest.raises(IdentityMismatch) as err:
        train(copy, change)
    key, value = change.split("=")
    assert f"{key}: " in str(err.value) and value in str(err.value)
    assert "out_dir=" in str(err.value) and "retrain=true" in str(err.value)
    assert folder_files(copy) == before                 # nothing was touched, config.yaml too


def test_another_config_never_resumes_an_interrupted_run(copy):
    """The other order of the reproduction: a stopped run is not continued by another config."""
    save_torch(copy / "checkpoint.pt", {"not": "read"})     # a stopped run: a checkpoint ...
    summary = json.loads((copy / "summary.json").read_text())
    write_text(copy / "summary.json", json.dumps({**summary, "status": "interrupted"}))
    before = folder_files(copy)
    with pytest.raises(IdentityMismatch, match="epochs: 2 -> 3"):
        train(copy, "epochs=3")
    assert folder_files(copy) == before


@pytest.mark.parametrize("change", ["device=cpu", "log_every=7", "grad_norm_every=1",
                                    "logger=local", "download=true", "keep_checkpoint=true",
                                    "++dataset.verify_md5=false"])
def test_settings_that_cannot_change_the_result_still_skip(copy, change, capsys):
    before = (copy / "metrics.jsonl").read_bytes()
    assert train(copy, change)["status"] == "completed"
    assert "[skip] completed earlier" in capsys.readouterr().out
    assert (copy / "metrics.jsonl").read_bytes() == before


def test_null_and_absent_are_the_same_identity():
    """An optimizer key added later as `${oc.select:...,null}` must not orphan older runs."""
    old = {"optim": {"lr": 0.1}, "dataset": {"limit": None}}
    new = {"optim": {"lr": 0.1, "norm_dtype": None}}
    assert config_identity(old) == config_identity(new)
    assert config_identity({"device": "cuda", "out_dir": "x", "data_root": "y"}) == {}


def test_a_legacy_run_without_a_fingerprint_is_still_recognised(copy, capsys):
    summary = json.loads((copy / "summary.json").read_text())
    del summary["identity"]
    write_text(copy / "summary.json", json.dumps(summary))
    config = yaml.safe_load((copy / "config.yaml").read_text())
    del config["meta"]["identity"]
    del config["retrain"]                               # a key that did not exist back then
    write_text(copy / "config.yaml", yaml.safe_dump(config))
    assert train(copy)["status"] == "completed"
    assert "[skip]" in capsys.readouterr().out
    with pytest.raises(IdentityMismatch, match="epochs: 2 -> 4"):
        train(copy, "epochs=4")


def test_the_data_actually_loaded_is_part_of_the_identity(tmp_path):
    """Only data_root differs, but one folder holds fewer images: never mistaken for the other."""
    make_mnist(tmp_path / "small", n_train=30, n_test=10)
    make_mnist(tmp_path / "full", n_train=60, n_test=10)
    mnist = ("dataset=mnist", "++dataset.verify_md5=false", "epochs=1")
    train(tmp_path / "run", *mnist, f"data_root={tmp_path / 'small'}")
    with pytest.raises(IdentityMismatch, match="data.train_samples: 30 -> 60"):
        train(tmp_path / "run", *mnist, f"data_root={tmp_path / 'full'}")
    shutil.copytree(tmp_path / "small", tmp_path / "moved")        # the same data elsewhere
    assert train(tmp_path / "run", *mnist, f"data_root={tmp_path / 'moved'}")["status"] == (
        "completed")


def test_retrain_replaces_another_configs_run(copy, capsys):
    summary = train(copy, "epochs=3", "retrain=true")
    assert summary["status"] == "completed" and summary["epochs_done"] == 3
    assert "[retrain]" in capsys.readouterr().out
    assert train(copy, "epochs=3", "retrain=true")["epochs_done"] == 3     # now: a skip
    assert "[skip]" in capsys.readouterr().out


@pytest.mark.parametrize("artifact", ["figure1", "figure2", "figure3", "table1", "table2",
                                      "table3", "table4"])
def test_quick_and_full_experiments_never_share_an_identity(artifact):
    full = config_identity(_container(f"experiment={artifact}"))
    quick = config_identity(_container(f"experiment={artifact}_quick"))
    assert full != quick, f"{artifact}_quick has the identity of {artifact}"


def _container(override: str) -> dict:
    from omegaconf import OmegaConf

    cfg = compose_config([override])
    with open_dict(cfg):
        del cfg["hydra"]
    return OmegaConf.to_container(cfg, resolve=True)


# -- nothing finished is lost -------------------------------------------------------------------


@pytest.mark.parametrize("damage", [b'{"status": "compl', b"\x00\xff\xfe binary", b"[1, 2]"],
                         ids=["truncated", "binary", "not-an-object"])
def test_a_damaged_summary_is_rebuilt_not_retrained(copy, damage, capsys):
    history = (copy / "metrics.jsonl").read_bytes()
    (copy / "summary.json").write_bytes(damage)
    summary = train(copy)
    assert summary["status"] == "completed" and summary["epochs_done"] == 2
    assert "rebuilt from metrics.jsonl" in capsys.readouterr().out
    assert (copy / "metrics.jsonl").read_bytes() == history
    assert json.loads((copy / "summary.json").read_text())["status"] == "completed"


def test_a_stop_between_last_checkpoint_and_final_summary_loses_nothing(copy):
    """What a crash between removing the checkpoint and writing "completed" used to leave."""
    summary = json.loads((copy / "summary.json").read_text())
    write_text(copy / "summary.json", json.dumps({**summary, "status": "running"}))
    history = (copy / "metrics.jsonl").read_bytes()
    assert train(copy)["status"] == "completed"
    assert (copy / "metrics.jsonl").read_bytes() == history


def test_the_final_summary_is_written_before_the_checkpoint_goes(tmp_path, monkeypatch):
    real_unlink = Path.unlink

    def crash_on_checkpoint(self, *args, **kwargs):
        if self.name == "checkpoint.pt":
            raise SystemExit("killed while removing the checkpoint")
        return real_unlink(self, *args, **kwargs)

    monkeypatch.setattr(Path, "unlink", crash_on_checkpoint)
    with pytest.raises(SystemExit):
        train(tmp_path / "run")
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "completed"


def test_a_history_without_a_checkpoint_is_refused_not_retrained(copy):
    rows = (copy / "metrics.jsonl").read_text().splitlines()
    write_text(copy / "metrics.jsonl", rows[0] + "\n")               # 1 of 2 epochs, no checkpoint
    write_text(copy / "summary.json", json.dumps({"status": "running"}))
    with pytest.raises(ResumeError, match="1 epochs in metrics.jsonl but no checkpoint.pt"):
        train(copy)
    assert (copy / "metrics.jsonl").read_text() == rows[0] + "\n"


OLDER_EPOCH_STATES = {
    "mid-epoch": {"batch": 3, "loss_sum": torch.tensor(6.9), "correct": torch.tensor(20.0),
                  "count": torch.tensor(60.0), "norm_sum": torch.full((5,), 0.3), "steps": 3,
                  "hidden": None, "seconds": 0.5},
    "end of epoch": {"batch": 0, "loss_sum": None, "correct": None, "count": None,
                     "norm_sum": None, "steps": 0, "hidden": None, "seconds": 0.0},
}


@pytest.mark.parametrize("older", OLDER_EPOCH_STATES)
def test_a_checkpoint_of_the_older_epoch_state_resumes(tmp_path, older):
    """A checkpoint from before the norms were sampled (`steps`, a device `count`)."""
    run_dir = tmp_path / "run"
    train(run_dir, "keep_checkpoint=true")
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    ckpt["epoch"], ckpt["history"] = 2, ckpt["history"][:1]
    ckpt["ranks"][0]["epoch_state"] = OLDER_EPOCH_STATES[older]
    save_torch(run_dir / "checkpoint.pt", ckpt)
    write_text(run_dir / "metrics.jsonl", (run_dir / "metrics.jsonl").read_text().splitlines()[0]
               + "\n")
    summary = json.loads((run_dir / "summary.json").read_text())
    write_text(run_dir / "summary.json", json.dumps({**summary, "status": "interrupted"}))
    assert train(run_dir)["status"] == "completed"
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2]
    # 0.3 on the 3 steps before the stop, then the samples at steps 25, 50, ... of the rest
    assert all(0 < norm < 0.3 * 10 for norm in rows[1]["grad_norms"].values())


def test_a_damaged_checkpoint_gives_a_clear_error(copy):
    (copy / "checkpoint.pt").write_bytes(b"not a checkpoint")
    summary = json.loads((copy / "summary.json").read_text())
    write_text(copy / "summary.json", json.dumps({**summary, "status": "interrupted"}))
    with pytest.raises(ResumeError, match="cannot resume from .*Add retrain=true") as err:
        train(copy)
    assert user_error(err.value)[0] == EXIT_USER


def test_a_folder_whose_run_cannot_be_identified_is_refused(tmp_path):
    """Results with no readable config.yaml: whose run it is cannot be told, so it is kept."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "checkpoint.pt").write_bytes(b"a checkpoint of an unknown config")
    with pytest.raises(IdentityMismatch, match="its config cannot be read"):
        train(run_dir)
    assert (run_dir / "checkpoint.pt").read_bytes() == b"a checkpoint of an unknown config"


def test_a_failure_is_never_written_into_a_run_it_may_not_own(copy):
    """A config error before the folder's run is identified leaves that run's summary alone."""
    summary = json.loads((copy / "summary.json").read_text())
    write_text(copy / "summary.json", json.dumps({**summary, "status": "interrupted"}))
    with pytest.raises(ConfigError):
        train(copy, "log_every=0")
    assert json.loads((copy / "summary.json").read_text())["status"] == "interrupted"


def test_orphan_temporary_files_are_removed_when_the_run_starts(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    orphan = run_dir / ".checkpoint.pt.1a2b3c4d.tmp"                  # a kill -9 mid-write
    orphan.write_bytes(b"half a checkpoint")
    train(run_dir, "epochs=1")
    assert not orphan.exists()
    assert not list(run_dir.glob(".*.tmp"))


def test_run_files_respect_the_umask(tmp_path):
    old = os.umask(0o002)                                             # a group-shared folder
    try:
        train(tmp_path / "run", "epochs=1", "keep_checkpoint=true")
    finally:
        os.umask(old)
    for name in ("summary.json", "metrics.jsonl", "config.yaml", "checkpoint.pt", ".lock"):
        assert (tmp_path / "run" / name).stat().st_mode & 0o777 == 0o664, name


# -- bad input: one line, exit 2 ----------------------------------------------------------------


@pytest.mark.parametrize(("override", "expected"), [
    ("seed=abc", "seed must be a non-negative integer"),
    ("log_every=0", "log_every must be a positive integer"),
    ("grad_norm_every=0", "grad_norm_every must be a positive integer"),
    ("optim.lr=inf", "optim.lr must be a positive number"),
    ("optim.lr=1e38", "optim.lr must be a positive number no larger than 1e+06"),
    ("retrain=maybe", "retrain must be true or false"),
])  # fmt: skip
def test_config_checks(override, expected):
    cfg = compose_config([*FAST, override])
    with pytest.raises(ConfigError, match=re.escape(expected)) as err:
        check_config(cfg)
    assert user_error(err.value) == (EXIT_USER, str(err.value))


def _dataset(name: str, **overrides) -> dict:
    """configs/dataset/<name>.yaml as a plain dict, with `overrides`."""
    return {**yaml.safe_load((REPO / "configs" / "dataset" / f"{name}.yaml").read_text()),
            **overrides}


@pytest.mark.parametrize("limit", [0, -5])
def test_a_limit_that_is_not_a_positive_size_is_refused(limit, tmp_path):
    from data import DataError, build_dataset

    with pytest.raises(DataError, match="dataset.limit must be a positive integer"):
        build_dataset(_dataset("digits", limit=limit), root=tmp_path)
    make_ptb(tmp_path)
    with pytest.raises(DataError, match="dataset.limit must be a positive integer"):
        build_dataset(_dataset("ptb", limit=limit, verify_md5=False), root=tmp_path)


def test_an_empty_ptb_file_is_named(tmp_path):
    from data import DataError, build_dataset

    folder = make_ptb(tmp_path)
    (folder / "ptb.train.txt").write_text("")
    with pytest.raises(DataError, match=r"ptb.train.txt in .* is empty"):
        build_dataset(_dataset("ptb", verify_md5=False), root=tmp_path)


def test_a_user_error_in_a_sweep_cell_fails_that_cell_only(tmp_path):
    proc = run_cli("model=lstm,mlp6", "epochs=1", f"out_dir={tmp_path}", multirun=True,
                   check=False)
    assert proc.returncode == EXIT_USER, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    runs = tmp_path / "runs" / "digits"
    assert json.loads((runs / "mlp6/adamng/epochs=1/seed1/summary.json").read_text())[
        "status"] == "completed"                                    # the later cell still ran
    failed = json.loads((runs / "lstm/adamng/epochs=1/seed1/summary.json").read_text())
    assert failed["status"] == "failed" and "Compatible datasets: ptb" in failed["message"]
    assert "[sweep 2/2]" in proc.stdout and ": 1 completed, 1 failed\n" in proc.stdout
    assert "failed (1 cell): " in proc.stderr and "lstm" in proc.stderr.split("failed (1 cell)")[-1]


@pytest.mark.slow  # the config check itself is test_config_checks; this is the CLI around it
def test_seed_abc_on_the_command_line_is_one_line(tmp_path):
    proc = run_cli("seed=abc", f"out_dir={tmp_path}", check=False)
    assert proc.returncode == EXIT_USER
    assert proc.stderr.strip().splitlines() == [
        "error: seed must be a non-negative integer, got 'abc' (e.g. seed=1)."]


def test_lock_busy_has_its_own_exit_code(tmp_path):
    run_dir = tmp_path / "runs/digits/mlp6/adamng/epochs=1/seed1"
    lock = RunLock(run_dir)
    assert lock.acquire()
    try:
        proc = run_cli("model=mlp6", "epochs=1", f"out_dir={tmp_path}", check=False)
    finally:
        lock.release()
    assert proc.returncode == EXIT_BUSY
    assert "another process is training this run" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (run_dir / "metrics.jsonl").exists()


# -- environment failures: one line, exit 2, and a summary that says so --------------------------


def test_a_full_disk_is_one_line_and_marks_the_run_failed(tmp_path):
    """200 kB: config.yaml and summary.json fit, the first checkpoint (~300 kB) does not."""
    mount = tmp_path / "mnt"
    run_dir = f"{mount}/out/runs/digits/mlp6/adamng/epochs=2/seed1"
    proc = run_on_tmpfs(mount, "size=200k", f"model=mlp6 epochs=2 out_dir={mount}/out",
                        after=f"cat {run_dir}/summary.json; ls -a {run_dir}")
    assert "rc=2" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert "error: no space left on device" in proc.stderr
    summary = json.loads(proc.stdout.split("rc=2", 1)[1].split("\n}", 1)[0] + "\n}")
    assert summary["status"] == "failed"
    assert summary["message"].startswith("no space left on device")
    assert ".tmp" not in proc.stdout.split("\n}", 1)[1]            # no half checkpoint left


@pytest.mark.slow  # a CLI start; the full-disk test covers the same path in the default run
def test_a_read_only_out_dir_is_one_line(tmp_path):
    mount = tmp_path / "mnt"
    proc = run_on_tmpfs(mount, "ro,size=100k", f"epochs=1 out_dir={mount}/out")
    assert "rc=2" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [
        f"error: cannot write out_dir={mount}/out: read-only file system: {mount}/out. "
        "Point out_dir= at a writable folder; then run the same command to go on."]


@pytest.mark.slow  # the same checkpoint path as test_scaleout's SIGUSR2 test, plus the exit code
def test_ctrl_c_checkpoints_and_exits_130_without_a_traceback(tmp_path):
    args = ("model=mlp6", "epochs=5", "batch_size=4", f"out_dir={tmp_path}")
    run_dir = tmp_path / "runs/digits/mlp6/adamng/batch_size=4,epochs=5/seed1"
    proc = subprocess.Popen([sys.executable, str(REPO / "run.py"), *args], cwd=REPO,
                            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    out, err = stop_at_checkpoint(proc, run_dir / "checkpoint.pt", signal.SIGINT)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert "[interrupted] checkpoint at epoch" in out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["message"] == "stopped by SIGINT"
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert ckpt["ranks"][0]["epoch_state"]["batch"] > 0                # mid-epoch
