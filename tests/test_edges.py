"""The edges of a run: before its first epoch (every error one line, exit 2; no path outside
out_dir), the code versions that trained it, non-finite values, and folders shared read-only.

Most tests run in this process: `entry` calls run.py's main as the command line would, and
`train` trains on digits (a second or two). The few that need a new process are marked slow.
"""

from __future__ import annotations

import errno
import importlib
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import REPO, cli_env, folder_files, run_on_tmpfs, train, train_in_process
from experiments.errors import EXIT_USER, ResumeError
from experiments.io import RunLock, save_torch, write_json, write_jsonl, write_text
from experiments.record import FOLDER_KEYS, IGNORED, exempt_keys


def entry(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """`python run.py <args>` in this process: (exit code, stdout, stderr)."""
    from hydra.core.global_hydra import GlobalHydra

    import run

    monkeypatch.setattr(sys, "argv", ["run.py", *args])
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    # Hydra would point the logging at this test's captured stdout, closed by the next test.
    for module in ("hydra.core.utils", "hydra._internal.hydra",
                   "hydra._internal.core_plugins.basic_launcher"):
        monkeypatch.setattr(importlib.import_module(module), "configure_log",
                            lambda *args, **kwargs: None)
    code = 0
    try:
        run.main()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        GlobalHydra.instance().clear()
    out, err = capsys.readouterr()
    return code, out, err


def _strict_load(text: str):
    def refuse(constant: str):
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


# -- before the first epoch: one line, exit 2, nothing outside out_dir ---------------------------


@pytest.mark.parametrize(("args", "expected"), [
    (["optim=doesnotexist"], "Could not find 'optim/doesnotexist'. Available options in 'optim': "),
    (["device=tpu"], "device=tpu is not a device this suite trains on"),
    (["out_dir=résultats"], "cannot parse the override out_dir=résultats. Quote a value"),
    ([f"dataset.limit={'x' * 250}"], "bytes; a file system allows 255"),
    (["epochs=${nope}"], "Interpolation key 'nope' not found"),
])  # fmt: skip
def test_every_error_before_the_first_epoch_is_one_line(monkeypatch, capsys, tmp_path, args,
                                                        expected):
    out_dir = tmp_path / "out"
    if not any(a.startswith("out_dir=") for a in args):
        args = [*args, f"out_dir={out_dir}"]
    code, _, err = entry(monkeypatch, capsys, "model=mlp6", "epochs=1", *args)
    assert code == EXIT_USER, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert expected in err
    if "optim" in args[0]:
        assert "adamng" in err and "sgdmng" in err             # Hydra's list of choices stays


@pytest.mark.parametrize("retrain", [False, True])
@pytest.mark.parametrize("override", ["model.name=../../../esc", "optim.name=a/b",
                                      "dataset.limit=../../x", "dataset.name=.."])
def test_a_value_that_names_the_folder_cannot_leave_out_dir(monkeypatch, capsys, tmp_path,
                                                            override, retrain):
    out_dir = tmp_path / "a" / "b" / "c" / "out"
    out_dir.parent.mkdir(parents=True)
    marker = tmp_path / "esc" / "mlp6" / "keep.txt"      # what retrain=true must never delete
    marker.parent.mkdir(parents=True)
    marker.write_text("not a run")
    before = sorted(p for p in tmp_path.rglob("*"))
    code, _, err = entry(monkeypatch, capsys, "model=mlp6", "epochs=1", override,
                         f"out_dir={out_dir}", f"retrain={str(retrain).lower()}")
    assert code == EXIT_USER and "would put the run folder outside out_dir" in err, err
    assert len(err.strip().splitlines()) == 1
    assert marker.read_text() == "not a run"
    created = [p for p in tmp_path.rglob("*") if p not in before]
    assert all(p == out_dir or out_dir in p.parents for p in created), created
    assert not list(out_dir.rglob("*.json"))                      # nothing written


def test_a_sweep_refuses_a_folder_value_before_any_cell(monkeypatch, capsys, tmp_path):
    code, out, err = entry(monkeypatch, capsys, "-m", "model=mlp6", "epochs=1",
                           "model.name=../../../esc", f"out_dir={tmp_path / 'out'}")
    assert code == EXIT_USER and "outside out_dir" in err and "Traceback" not in err
    assert not list(tmp_path.rglob("summary.json"))


@pytest.mark.slow  # a new process: Ctrl-C has to land while torch and Hydra are imported
def test_ctrl_c_during_start_up_exits_130_without_a_traceback(tmp_path):
    proc = subprocess.Popen([sys.executable, str(REPO / "run.py"), f"out_dir={tmp_path}"],
                            cwd=REPO, env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    maps, deadline = Path(f"/proc/{proc.pid}/maps"), time.monotonic() + 120
    while "torch" not in maps.read_text():              # run.py is importing torch: seconds
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert not list(tmp_path.rglob("summary.json"))


@pytest.mark.slow  # needs a read-only mount, so a new process in a mount namespace
def test_a_read_only_runs_tree_is_one_line_for_a_new_cell(tmp_path):
    mount = tmp_path / "mnt"
    runs = f"{mount}/out/runs"
    proc = run_on_tmpfs(mount, "size=1m", f"model=mlp6 epochs=1 out_dir={mount}/out",
                        setup=f"mkdir -p {runs}; mount --bind {runs} {runs} && "
                              f"mount -o remount,bind,ro {runs} || exit 99")
    assert "rc=2" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [
        f"error: read-only file system: {runs}/digits. Point out_dir= at a writable folder; "
        "then run the same command to go on."]


# -- the code that trained a run -----------------------------------------------------------------


def _stop_after_first_epoch(run_dir: Path, legacy: bool = False) -> None:
    """Make a completed, checkpoint-kept 2-epoch run look stopped after its first epoch.

    `legacy`: as a version before the commit record left it (no `commits` anywhere)."""
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    ckpt["epoch"], ckpt["history"] = 2, ckpt["history"][:1]
    ckpt["commits"] = None if legacy else [{"commit": "aaa", "epochs": [1, 1]}]
    save_torch(run_dir / "checkpoint.pt", ckpt)
    rows = (run_dir / "metrics.jsonl").read_text().splitlines()
    write_text(run_dir / "metrics.jsonl", rows[0] + "\n")
    summary = json.loads((run_dir / "summary.json").read_text())
    summary.pop("commits", None)
    write_text(run_dir / "summary.json", json.dumps({**summary, "status": "interrupted"}))
    if legacy:
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        config["meta"].pop("commits", None)
        write_text(run_dir / "config.yaml", yaml.safe_dump(config))


@pytest.mark.parametrize("legacy", [False, True], ids=["recorded", "older-run"])
def test_a_resume_under_another_commit_is_said_and_recorded(tmp_path, monkeypatch, capsys,
                                                            legacy):
    monkeypatch.setattr("experiments.config._git_commit", lambda: "aaa")
    run_dir = tmp_path / "run"
    summary = train(run_dir, "keep_checkpoint=true")
    assert summary["commits"] == [{"commit": "aaa", "epochs": [1, 2]}]
    _stop_after_first_epoch(run_dir, legacy)
    capsys.readouterr()
    monkeypatch.setattr("experiments.config._git_commit", lambda: "bbb")
    summary = train(run_dir, "keep_checkpoint=true")
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "commit aaa" in line]
    assert len(lines) == 1 and "commit bbb" in lines[0] and "epoch 1 " in lines[0], out
    both = [{"commit": "aaa", "epochs": [1, 1]}, {"commit": "bbb", "epochs": [2, 2]}]
    assert summary["status"] == "completed" and summary["commits"] == both
    meta = yaml.safe_load((run_dir / "config.yaml").read_text())["meta"]
    assert meta["commits"] == both and meta["git_commit"] == "bbb"


def test_resume_across_commits_refuse_stops_with_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr("experiments.config._git_commit", lambda: "aaa")
    run_dir = tmp_path / "run"
    train(run_dir, "keep_checkpoint=true")
    _stop_after_first_epoch(run_dir)
    history = (run_dir / "metrics.jsonl").read_bytes()
    monkeypatch.setattr("experiments.config._git_commit", lambda: "bbb")
    with pytest.raises(ResumeError, match="commit aaa; this code is commit bbb") as err:
        train(run_dir, "keep_checkpoint=true", "resume_across_commits=refuse")
    assert "resume_across_commits=allow" in str(err.value)
    assert (run_dir / "metrics.jsonl").read_bytes() == history
    assert "resume_across_commits" in IGNORED           # the switch is not part of the identity


# -- non-finite values ---------------------------------------------------------------------------


class NaNTestMLP(torch.nn.Module):
    """Trains normally; its test pass gives NaN logits (a finite training loss, a NaN test one)."""

    def __init__(self, in_features: int, num_classes: int, **_: object):
        super().__init__()
        self.fc = torch.nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.fc(x)
        return logits if self.training else logits * float("nan")


def test_a_nan_test_loss_stops_the_run_as_diverged(tmp_path):
    run_dir = tmp_path / "run"
    summary = train(run_dir, f"model.net._target_={__name__}.NaNTestMLP")
    assert summary["status"] == "diverged"
    assert "test_loss became nan in epoch 1" in summary["message"]
    for name in ("summary.json", "metrics.jsonl", "config.yaml"):
        assert (run_dir / name).exists()
    _strict_load((run_dir / "summary.json").read_text())


def test_run_files_hold_strict_json_with_a_null_and_its_reason(tmp_path):
    row = {"epoch": 1, "test_loss": float("nan"), "grad_norms": {"fc": float("inf"), "b": 1.0}}
    write_jsonl(tmp_path / "metrics.jsonl", [row, {"epoch": 2, "test_loss": 0.5}])
    write_json(tmp_path / "summary.json", {"final": row, "wall_seconds": 1.0})
    rows = [_strict_load(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["test_loss"] is None and rows[0]["grad_norms"] == {"fc": None, "b": 1.0}
    assert rows[0]["nonfinite"] == ["grad_norms.fc", "test_loss"]
    assert "nonfinite" not in rows[1]
    summary = _strict_load((tmp_path / "summary.json").read_text())
    assert summary["nonfinite"] == ["final.grad_norms.fc", "final.test_loss"]


# -- folders: relocatable, shared read-only, leftovers, advice that works ------------------------


def test_run_files_keep_no_machine_paths(tmp_path):
    out_dir = tmp_path / "out"
    run_dir = out_dir / "runs/digits/mlp6/adam/epochs=2/seed1"
    data_root = tmp_path / "where-the-data-sat"
    summary = train(run_dir, f"out_dir={out_dir}", f"data_root={data_root}")
    assert summary["run_dir"] == "runs/digits/mlp6/adam/epochs=2/seed1"
    for name in ("summary.json", "config.yaml", "metrics.jsonl"):
        text = (run_dir / name).read_text()
        assert "where-the-data-sat" not in text and str(tmp_path) not in text, name
    assert json.loads((run_dir / "summary.json").read_text())["run_dir"] == summary["run_dir"]
    assert "out_dir" not in yaml.safe_load((run_dir / "config.yaml").read_text())


def test_a_failed_runs_message_names_no_machine_path(tmp_path):
    """The terminal's line names the data folder; the run files keep it as <data_root>."""
    from data import DataError

    out_dir, data_root = tmp_path / "out", tmp_path / "where-the-data-sat"
    run_dir = out_dir / "runs/mnist/mlp6/adam/default/seed1"
    with pytest.raises(DataError, match="where-the-data-sat"):
        train_in_process(["dataset=mnist", "model=mlp6", "optim=adam", f"out_dir={out_dir}",
                          f"data_root={data_root}"], run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and "<data_root>" in summary["message"]
    assert str(tmp_path) not in (run_dir / "summary.json").read_text()
    assert summary["run_dir"] == "runs/mnist/mlp6/adam/default/seed1"


def test_a_rebuilt_summary_keeps_its_folder_relative(tmp_path, capsys):
    out_dir = tmp_path / "out"
    run_dir = out_dir / "runs/digits/mlp6/adam/epochs=2/seed1"
    train(run_dir, f"out_dir={out_dir}")
    (run_dir / "summary.json").write_bytes(b'{"status": "compl')
    summary = train(run_dir, f"out_dir={out_dir}")
    assert "rebuilt from metrics.jsonl" in capsys.readouterr().out
    stored = json.loads((run_dir / "summary.json").read_text())
    assert stored["run_dir"] == summary["run_dir"] == "runs/digits/mlp6/adam/epochs=2/seed1"


@pytest.mark.parametrize("damage", ["cut", "binary"])
@pytest.mark.parametrize("checkpoint", [True, False], ids=["checkpoint", "no-checkpoint"])
def test_a_finished_summary_over_a_damaged_history_is_not_skipped(tmp_path, capsys, checkpoint,
                                                                   damage):
    """metrics.jsonl cut to 1 of the 2 epochs the completed summary claims, or unreadable: gone
    on from the kept checkpoint (which holds both), else trained again; one line says which."""
    run_dir = tmp_path / "run"
    keep = [f"keep_checkpoint={str(checkpoint).lower()}"]
    train(run_dir, *keep)
    history = (run_dir / "metrics.jsonl").read_text()
    cut = damage == "cut"
    (run_dir / "metrics.jsonl").write_bytes(history.encode()[:history.index("\n") + 1] if cut
                                            else b"\x00\xff not text")
    why = "holds 1 of the 2 epochs summary.json claims" if cut else "metrics.jsonl cannot be read"
    capsys.readouterr()
    summary = train(run_dir, *keep)
    said = [line for line in capsys.readouterr().out.splitlines() if why in line]
    assert len(said) == 1 and said[0].startswith("[resume]" if checkpoint else "[retrain]")
    assert summary["status"] == "completed" and summary["epochs_done"] == 2
    rows = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(row)["epoch"] for row in rows] == [1, 2]
    if checkpoint:                                   # the checkpoint's own history, unchanged
        assert (run_dir / "metrics.jsonl").read_text() == history


@pytest.mark.slow  # needs a read-only mount, so a new process in a mount namespace
def test_a_finished_run_under_a_read_only_out_dir_is_skipped(tmp_path):
    """docs/RELIABILITY.md: a shared results folder mounted read-only is read, not refused."""
    mount = tmp_path / "mnt"
    args = f"model=mlp6 epochs=1 out_dir={mount}/out"
    proc = run_on_tmpfs(mount, "size=4m", args,
                        setup=f"{sys.executable} {REPO / 'run.py'} {args} >/dev/null && "
                              f"mount -o remount,ro {mount} || exit 99")
    assert "rc=0" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "[skip] completed earlier" in proc.stdout and "error" not in proc.stderr


def test_a_completed_run_in_a_folder_that_cannot_be_written_is_skipped(copy, monkeypatch, capsys):
    """A teammate reading a shared results folder: no lock, no write, not even a leftover."""
    (copy / ".summary.json.1a2b3c4d.tmp").write_bytes(b"a killed write")
    before = folder_files(copy)

    def read_only(self):
        raise PermissionError(errno.EACCES, "Permission denied", str(self.path))

    monkeypatch.setattr(RunLock, "acquire", read_only)
    assert train(copy, "keep_checkpoint=true")["status"] == "completed"
    assert "[skip] completed earlier" in capsys.readouterr().out
    assert folder_files(copy) == before
    write_text(copy / "summary.json", json.dumps({"status": "interrupted"}))  # one to train
    (copy / "checkpoint.pt").write_bytes(b"stopped")                            # from here
    with pytest.raises(PermissionError):
        train(copy, "keep_checkpoint=true")


def test_leftover_temporary_files_go_from_a_skipped_folder_too(copy, capsys):
    orphan = copy / ".checkpoint.pt.1a2b3c4d.tmp"
    orphan.write_bytes(b"half a checkpoint")
    assert train(copy, "keep_checkpoint=true")["status"] == "completed"
    assert "[skip]" in capsys.readouterr().out
    assert not orphan.exists()


def test_the_advice_for_a_damaged_checkpoint_works_the_first_time(copy):
    """It used to say "delete it to restart", and the run was then refused a second time."""
    (copy / "checkpoint.pt").write_bytes(b"not a checkpoint")
    summary = json.loads((copy / "summary.json").read_text())
    write_text(copy / "summary.json", json.dumps({**summary, "status": "interrupted"}))
    with pytest.raises(ResumeError) as err:
        train(copy, "keep_checkpoint=true")
    advice = re.search(r"Add (\S+=\S+) ", str(err.value))
    assert advice, str(err.value)
    summary = train(copy, "keep_checkpoint=true", advice.group(1))
    assert summary["status"] == "completed" and summary["epochs_done"] == 2


def test_an_ignored_signal_is_not_a_stop_request():
    """`nohup` or a shell that starts a job with SIGINT ignored: that signal must not stop it."""
    from experiments.signals import StopRequest

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with StopRequest() as stop:
            signal.raise_signal(signal.SIGINT)
            assert not stop()
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_dead_layer_is_warned_about_once_per_run(tmp_path, capsys):
    train(tmp_path / "run", "epochs=3", "model.net._target_=conftest.DeadLayerMLP")
    out = capsys.readouterr().out
    assert out.count("zero gradient all epoch in unused") == 1, out


# -- one list of the keys that cannot change a result --------------------------------------------


def test_the_identity_exempt_keys_are_the_folder_names_exclusions():
    from conftest import compose_config

    cfg = compose_config(["model=mlp6"])
    hydra_list = {k.lstrip("+") for k in cfg.hydra.job.config.override_dirname.exclude_keys}
    assert set(exempt_keys()) == hydra_list - set(FOLDER_KEYS)
    assert set(IGNORED) == set(exempt_keys()) | {"meta", "hydra", "dataset.vocab_size"}
    from omegaconf import OmegaConf

    datasets = [yaml.safe_load(p.read_text()) for p in (REPO / "configs/dataset").glob("*.yaml")]
    for key in exempt_keys():                 # a typo in the list would exempt nothing
        is_group = (REPO / "configs" / key).is_dir()        # launcher: its node lives in hydra
        in_a_dataset = key.startswith("dataset.") and any(key[8:] in d for d in datasets)
        assert is_group or in_a_dataset or OmegaConf.select(cfg, key, default="-") != "-", key


def _listed_keys(text: str) -> set[str]:
    """The backquoted keys of the paragraph that lists the identity-exempt keys."""
    match = re.search(r"identity-exempt keys[^:]*:(.*?)(?:\n\n|\.\s)", text, re.S)
    assert match, "no sentence naming the identity-exempt keys"
    return set(re.findall(r"`([\w.]+)`", match.group(1)))


@pytest.mark.parametrize("doc", ["docs/DESIGN.md", "docs/RELIABILITY.md"])
def test_the_docs_list_the_identity_exempt_keys_as_they_are(doc):
    assert _listed_keys((REPO / doc).read_text()) == set(exempt_keys())
