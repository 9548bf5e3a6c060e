"""Shared test helpers: run the real CLI in a subprocess, or compose a config in-process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent

# Two cores: one intra-op thread per test process keeps subprocess tests from fighting.
torch.set_num_threads(1)


def cli_env(**extra: str) -> dict:
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
                "HYDRA_FULL_ERROR": "0", "WANDB_MODE": "disabled"})
    env.update(extra)
    return env


def run_cli(*overrides: str, multirun: bool = False, timeout: float = 300, env: dict | None = None,
            check: bool = True) -> subprocess.CompletedProcess:
    """`python run.py <overrides>` from the repository root, as a user types it."""
    cmd = [sys.executable, str(REPO / "run.py"), *(["-m"] if multirun else []), *overrides]
    proc = subprocess.run(cmd, cwd=REPO, env=env or cli_env(), capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n"
                             f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}")
    return proc


def compose_config(overrides):
    """configs/ composed as `python run.py <overrides>` would, with the Hydra block."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(REPO / "configs"), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def train_in_process(overrides, run_dir: Path) -> dict:
    """One run in this process, as Hydra's launcher starts it (no new Python process)."""
    from omegaconf import open_dict

    from experiments.train import run

    cfg = compose_config(overrides)
    with open_dict(cfg):
        del cfg["hydra"]
    return run(cfg, run_dir, list(overrides))


# A whole run of a second or two: the bundled digits data, the smallest MLP, two epochs.
FAST = ("dataset=digits", "model=mlp6", "optim=adam", "epochs=2")


def train(run_dir: Path, *overrides: str) -> dict:
    """A FAST run in this process, `overrides` after FAST's."""
    return train_in_process([*FAST, *overrides], run_dir)


@pytest.fixture(scope="module")
def completed(tmp_path_factory) -> Path:
    """A completed FAST run folder as a run leaves it (no checkpoint.pt); a test that changes it
    takes a `copy`."""
    run_dir = tmp_path_factory.mktemp("completed") / "run"
    assert train(run_dir)["status"] == "completed"
    return run_dir


# The fixture files of every dataset (data/fixtures.py), tiny; a test module that needs more sets
# its own FIXTURE_SIZES, read by `fixture_root`.
FIXTURE_SIZES = {"mnist": (10, 4), "cifar": (10, 4), "ptb_repeat": 1, "rt_repeat": 2,
                 "imagenet_per_class": 2}


@pytest.fixture(scope="module")
def fixture_root(request, tmp_path_factory) -> Path:
    """A data root holding every dataset's fixture files, at the test module's FIXTURE_SIZES
    (train, test) counts, else these."""
    from data.fixtures import (
        PTB_TEST,
        PTB_TRAIN,
        make_cifar,
        make_imagenet,
        make_mnist,
        make_ptb,
        make_rt,
    )

    sizes = {**FIXTURE_SIZES, **getattr(request.module, "FIXTURE_SIZES", {})}
    root = tmp_path_factory.mktemp("data")
    make_mnist(root, n_train=sizes["mnist"][0], n_test=sizes["mnist"][1])
    for which in ("cifar10", "cifar100"):
        make_cifar(root, which, n_train=sizes["cifar"][0], n_test=sizes["cifar"][1])
    ptb = make_ptb(root, train=PTB_TRAIN * sizes["ptb_repeat"])
    if sizes["ptb_repeat"] > 1:                 # a test stream as long, for as many columns
        (ptb / "ptb.test.txt").write_text("".join(f" {line} \n"
                                                  for line in PTB_TEST * sizes["ptb_repeat"]))
    make_rt(root, repeat=sizes["rt_repeat"])
    make_imagenet(root, classes=2, per_class=sizes["imagenet_per_class"], size=40)
    return root


def stop_at_checkpoint(proc: subprocess.Popen, checkpoint: Path, signum: int,
                       timeout: float = 120) -> tuple[str, str]:
    """Wait for the run's first `checkpoint`, send `signum`, return (stdout, stderr).

    The process is killed if the wait fails or it does not end in time."""
    try:
        deadline = time.monotonic() + timeout
        while not checkpoint.exists():
            assert proc.poll() is None, f"the run ended before its checkpoint: {proc.communicate()}"
            assert time.monotonic() < deadline, f"no checkpoint after {timeout} s"
            time.sleep(0.02)
        proc.send_signal(signum)
        return proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def run_on_tmpfs(mount: Path, options: str, run_args: str, setup: str = "",
                 after: str = "") -> subprocess.CompletedProcess:
    """`run.py run_args` in a mount namespace where `mount` is a fresh tmpfs (mount -o
    `options`: a small one fills up, `ro` cannot be written), with `setup` before it and `after`
    after it; stdout holds `rc=<exit code>` between them. Skips where no tmpfs can be mounted."""
    mount.mkdir()
    return _in_mount_namespace(
        f"mount -t tmpfs -o {options} tmpfs {mount} || exit 99; {setup + '; ' if setup else ''}"
        f"{sys.executable} {REPO / 'run.py'} {run_args}; echo rc=$?; {after}")


def _in_mount_namespace(cmd: str) -> subprocess.CompletedProcess:
    if shutil.which("unshare") is None:
        pytest.skip("needs util-linux unshare to mount a test file system")
    for unshare in (["unshare", "--mount"], ["unshare", "--user", "--map-root-user", "--mount"]):
        proc = subprocess.run([*unshare, "sh", "-c", cmd], cwd=REPO, env=cli_env(),
                              capture_output=True, text=True, timeout=300)
        if proc.returncode != 99 and not proc.stderr.startswith("unshare:"):
            return proc
    pytest.skip("cannot mount a tmpfs here (no mount namespace)")



@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    return tmp_path / "results"


def folder_files(folder: Path) -> dict[str, bytes]:
    """The bytes of every file directly in `folder`, by name: compare before and after."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture
def copy(completed: Path, tmp_path: Path) -> Path:
    """A fresh copy of the test module's `completed` run folder, for a test that changes it."""
    run_dir = tmp_path / "run"
    shutil.copytree(completed, run_dir)
    return run_dir


class DeadLayerMLP(torch.nn.Module):
    """A classifier with a layer that never takes part: its gradient is zero every step."""

    def __init__(self, in_features: int, num_classes: int, **_: object):
        super().__init__()
        self.fc = torch.nn.Linear(in_features, num_classes)
        self.unused = torch.nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) + 0.0 * self.unused.weight.sum()
