"""scripts/migrate_runs.py: runs stored with the old optimizer shape are recognized again."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf, open_dict

from conftest import REPO, compose_config, run_cli, train_in_process
from experiments.io import read_json, write_json
from experiments.record import Identity, StoredRun, config_identity, fingerprint
from scripts import migrate_runs


def old_shape(optim: dict) -> dict:
    """The optim node as the configs wrote it before the `normalize` node (the inverse of the
    migration, written out by hand for the three kinds of target there were)."""
    optim = dict(optim)
    normalize = optim.pop("normalize")
    target = optim.pop("_target_")
    if target == "bng.AdaGradBNG":       # it took blocks and norm_dtype itself, always mode ng
        normalize.pop("mode")
        return {"_target_": target, **optim, **normalize}
    if target.startswith("torch.optim.") and optim["name"] == "rmsprop":
        if normalize.get("mode") == "none":   # no mode line: the old engine never normalized
            normalize.pop("mode")
        return {"_target_": target, **optim, **normalize}
    return {"_target_": "bng.build", "base": target, **optim, **normalize}


def make_old(run_dir: Path) -> None:
    """Rewrite a run that today's engine wrote as the old engine would have stored it."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    config["optim"] = old_shape(config["optim"])
    identity = {key: value for key, value in config.items() if key != "meta"}
    config["meta"]["identity"]["fingerprint"] = fingerprint(identity)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    summary = read_json(run_dir / "summary.json")
    summary["identity"]["fingerprint"] = fingerprint(identity)
    write_json(run_dir / "summary.json", summary)


def migrate(results: Path, capsys: pytest.CaptureFixture, monkeypatch) -> str:
    """`python scripts/migrate_runs.py RESULTS`, in this process; what it printed."""
    capsys.readouterr()
    monkeypatch.setattr("sys.argv", ["migrate_runs.py", str(results)])
    assert migrate_runs.main() == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("optim", ["adamng", "rmsprop", "adagradbng"])
def test_a_migrated_old_run_is_skipped_not_retrained(optim: str, tmp_path: Path, capsys,
                                                     monkeypatch) -> None:
    overrides = [f"optim={optim}", "model=mlp6", "epochs=1"]
    run_dir = tmp_path / "runs" / "digits" / "mlp6" / optim / "epochs=1" / "seed1"
    train_in_process(overrides, run_dir)
    make_old(run_dir)
    with pytest.raises(Exception, match="another config"):   # the old shape is not recognized
        train_in_process(overrides, run_dir)

    printed = migrate(tmp_path, capsys, monkeypatch)
    assert f"{run_dir}: optim: _target_" in printed
    history = (run_dir / "metrics.jsonl").read_bytes()
    summary = train_in_process(overrides, run_dir)
    assert summary["status"] == "completed"
    assert (run_dir / "metrics.jsonl").read_bytes() == history     # skipped: nothing retrained
    stored = StoredRun.read(run_dir)
    assert stored.summary["identity"]["fingerprint"] == fingerprint(stored.config)

    config = (run_dir / "config.yaml").read_bytes()
    assert migrate(tmp_path, capsys, monkeypatch) == ""             # once: a second pass is a no-op
    assert (run_dir / "config.yaml").read_bytes() == config


def test_a_swept_old_key_moves_the_run_to_todays_folder(tmp_path: Path, capsys,
                                                        monkeypatch) -> None:
    """`optim.threshold=0.05` named the <extra> folder; today's sweep writes to
    `optim.normalize.threshold=0.05`. Beside it, an already migrated run is left alone."""
    command = ["optim=adamclip", "optim.normalize.threshold=0.05", "epochs=1",
               f"out_dir={tmp_path}"]
    run_cli(*command)
    runs = tmp_path / "runs" / "digits" / "mlp18" / "adamclip"
    today = runs / "epochs=1,optim.normalize.threshold=0.05"
    old = runs / "epochs=1,optim.threshold=0.05"
    make_old(today / "seed1")
    today.rename(old)
    train_in_process(["optim=adamclip", "epochs=1"], runs / "epochs=1" / "seed1")  # today's shape
    untouched = (runs / "epochs=1" / "seed1" / "config.yaml").read_bytes()

    printed = migrate(tmp_path, capsys, monkeypatch)
    assert f"moved to {today / 'seed1'}" in printed and not old.exists()
    assert (runs / "epochs=1" / "seed1" / "config.yaml").read_bytes() == untouched
    config = yaml.safe_load((today / "seed1" / "config.yaml").read_text())
    assert config["optim"]["normalize"]["threshold"] == 0.05
    assert config["meta"]["extra"] == today.name
    proc = run_cli(*command)
    assert "[skip]" in proc.stdout


# One committed run of each experiment in docs/reproduction, by the command that made it.
COMMITTED = ["runs/mnist/mlp6/adam/default/seed1",                 # figure1
             "runs/rt/kimcnn/adam/epochs=10/seed1",                 # table4
             "runs/ptb/lstm/adamng/dataset.bptt=40,epochs=3/seed1",  # figure3
             "longer/runs/rt/kimcnn/sgdmng/epochs=20/seed1"]        # table4, 20 epochs


@pytest.mark.parametrize("run", COMMITTED)
def test_committed_runs_have_the_identity_of_their_command_today(run: str) -> None:
    """`make reproduce-cpu` re-renders them: their stored config is what today's configs make
    of the same command (the vocabulary size, filled from the loaded data, taken as stored)."""
    stored = StoredRun.read(REPO / "docs" / "reproduction" / run)
    cfg = compose_config(shlex.split(stored.meta["command"])[2:])
    with open_dict(cfg):
        del cfg["hydra"]
        cfg.dataset.vocab_size = stored.config["dataset"].get("vocab_size")
    today = config_identity(OmegaConf.to_container(cfg, resolve=True))
    assert stored.identity().differences(Identity(today)) == []


def test_a_missing_folder_is_a_one_line_error(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr("sys.argv", ["migrate_runs.py", str(tmp_path / "nowhere")])
    assert migrate_runs.main() == 2
    assert capsys.readouterr().out.strip().endswith("give a results folder such as results/")


def test_machine_paths_leave_older_run_files(tmp_path: Path, capsys, monkeypatch) -> None:
    """An older run kept an absolute run_dir and the data_root: both go, once."""
    overrides = ["optim=adam", "model=mlp6", "epochs=1"]
    run_dir = tmp_path / "runs" / "digits" / "mlp6" / "adam" / "epochs=1" / "seed1"
    train_in_process(overrides, run_dir)
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    config["data_root"] = "/elsewhere/data"
    config["meta"]["command"] = "python run.py optim=adam data_root=/elsewhere/data epochs=1"
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    summary = read_json(run_dir / "summary.json")
    write_json(run_dir / "summary.json", {**summary, "run_dir": f"/old/machine/{run_dir}",
                                          "command": config["meta"]["command"]})

    printed = migrate(tmp_path, capsys, monkeypatch)
    assert "data_root removed" in printed and "without machine paths" in printed
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    summary = read_json(run_dir / "summary.json")
    assert "data_root" not in config and "data_root" not in config["meta"]["command"]
    assert summary["run_dir"] == "runs/digits/mlp6/adam/epochs=1/seed1"
    assert summary["command"] == "python run.py optim=adam epochs=1"
    assert migrate(tmp_path, capsys, monkeypatch) == ""             # once
    assert train_in_process(overrides, run_dir)["status"] == "completed"   # still skipped


@pytest.mark.parametrize("damage", [b"\x00\xff\xfe binary", b"optim: [unclosed\nmeta: {"],
                         ids=["binary", "not-yaml"])
def test_a_damaged_folder_is_passed_over_listed_and_exit_2(damage: bytes, tmp_path: Path, capsys,
                                                           monkeypatch) -> None:
    """The others are migrated; the damaged one is said in one line, listed again at the end."""
    good = tmp_path / "runs" / "digits" / "mlp6" / "adam" / "epochs=1" / "seed1"
    train_in_process(["optim=adam", "model=mlp6", "epochs=1"], good)
    make_old(good)
    bad = tmp_path / "runs" / "digits" / "mlp6" / "adam" / "default" / "seed1"
    bad.mkdir(parents=True)
    (bad / "config.yaml").write_bytes(damage)
    monkeypatch.setattr("sys.argv", ["migrate_runs.py", str(tmp_path)])
    assert migrate_runs.main() == 2
    out, err = capsys.readouterr()
    assert f"{good}: optim: _target_ torch.optim.Adam" in out               # migrated all the same
    assert "normalize" in yaml.safe_load((good / "config.yaml").read_text())["optim"]
    said = [line for line in out.splitlines() if line.startswith(f"{bad}: not migrated: ")]
    assert len(said) == 1 and "config.yaml is not" in said[0]
    assert err.splitlines()[0].startswith("error: 1 run folder(s) not migrated")
    assert err.splitlines()[1:] == [f"  {said[0].replace(': not migrated: ', ': ', 1)}"]
    assert "Traceback" not in out + err
