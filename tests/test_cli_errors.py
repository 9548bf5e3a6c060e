"""The command line before Hydra: unknown keys are one line with the nearest key, `+key=` only
where the code reads the key, and one value has one spelling (one folder, one identity)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import REPO, run_cli
from experiments.config import OPTIONAL_KEYS, check_overrides
from experiments.errors import EXIT_USER, ConfigError


@pytest.mark.parametrize("args,expected", [
    (["epoch=3"], "unknown key 'epoch'; did you mean 'epochs'?"),
    (["+epoch=3"], "unknown key 'epoch'; did you mean 'epochs'?"),
    (["optim.normalize.treshold=0.1"], "did you mean 'optim.normalize.threshold'?"),
    (["optim=adam", "optim.momentum=0.8"], "unknown key 'optim.momentum'"),
    (["dataset.train.nesterov=true"], "it is optional, add it with +dataset.train.nesterov=true"),
])  # fmt: skip
def test_a_key_the_config_lacks_is_refused(args, expected):
    with pytest.raises(ConfigError, match=expected.replace("?", r"\?").replace("+", r"\+")):
        check_overrides(args)


@pytest.mark.parametrize("args", [
    ["+dataset.workers=2"], ["++dataset.verify_md5=false"], ["+dataset.train.nesterov=true"],
    ["optim=sgdm", "optim.momentum=0.8"], ["model=kimcnn", "dataset=rt", "model.net.max_norm=3.0"],
    ["-m", "optim=adam,sgdm", "optim.momentum=0.5"],      # a key of one of the swept choices
    ["~model.net.max_norm"], ["hydra.verbose=true"], ["--cfg", "job"],
])  # fmt: skip
def test_known_and_optional_keys_pass_unchanged(args):
    assert check_overrides(args) == args


def test_every_optional_key_is_read_by_the_code():
    """A key may be added with + only where some code reads it: each is named in the code."""
    sources = "".join(p.read_text() for folder in ("data", "experiments", "bng")
                      for p in (REPO / folder).glob("*.py") if p.name != "config.py")
    sources += "".join(f'"{line}"' for p in (REPO / "configs").rglob("*.yaml")
                       for line in p.read_text().replace(".", " ").replace(",", " ").split())
    for key in OPTIONAL_KEYS:
        assert f'"{key.rpartition(".")[2]}"' in sources, key


@pytest.mark.parametrize("typed,stored", [
    ("optim.lr=1", "optim.lr=1.0"), ("optim.lr=1,0.1,2", "optim.lr=1.0,0.1,2.0"),
    ("optim.lr=1.0", "optim.lr=1.0"), ("optim.lr=1e-1", "optim.lr=1e-1"),
    ("epochs=3", "epochs=3"), ("optim.lr=abc", "optim.lr=abc"),   # check_config refuses that one
])  # fmt: skip
def test_an_integer_for_a_float_key_is_written_as_that_float(typed, stored):
    assert check_overrides(["-m", typed]) == ["-m", stored]


def test_lr_1_and_1_0_share_one_folder(tmp_path: Path):
    args = ("model=mlp6", "optim=sgdm", "epochs=1", f"out_dir={tmp_path}")
    run_cli(*args, "optim.lr=1")
    again = run_cli(*args, "optim.lr=1.0")
    assert "[skip]" in again.stdout, again.stdout
    runs = list((tmp_path / "runs").rglob("summary.json"))
    assert [p.parent.parent.name for p in runs] == ["epochs=1,optim.lr=1.0"]
    summary = json.loads(runs[0].read_text())
    assert "optim.lr=1.0" in summary["command"]


def test_an_unknown_key_on_the_command_line_is_one_line(tmp_path: Path):
    proc = run_cli("epoch=3", f"out_dir={tmp_path}", check=False)
    assert proc.returncode == EXIT_USER
    assert proc.stderr.strip().splitlines() == [
        "error: unknown key 'epoch'; did you mean 'epochs'? (python run.py --cfg job lists the "
        "keys). Nothing was run."]
    assert not tmp_path.exists() or not any(tmp_path.iterdir())
