"""Scale-out without a cluster: preemption signals, wandb offline, and DDP (torchrun, gloo, CPU).

Each test runs the real CLI in a subprocess on the bundled digits data. The real-Slurm path
is tests/test_slurm.py.
"""

from __future__ import annotations

import json
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import REPO, cli_env, run_cli, stop_at_checkpoint
from experiments.loggers import WandbLogger, flatten, run_id

TIMINGS = {"epoch_seconds", "samples_per_s"}  # the only metrics allowed to differ between runs


def _run_dir(out_dir: Path, optim: str, extra: str, seed: int = 1) -> Path:
    return out_dir / "runs" / "digits" / "mlp6" / optim / extra / f"seed{seed}"


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _comparable(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMINGS} for row in rows]


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


# -- preemption: SIGUSR2 / SIGTERM mid-run, then the same command resumes ----------------------

# Batch 4 makes an epoch ~400 steps (~0.5 s), so the signal lands mid-epoch, mid-run.
PREEMPT_ARGS = ("dataset=digits", "model=mlp6", "optim=sgdmng", "epochs=5", "batch_size=4",
                "device=cpu")
PREEMPT_EXTRA = "batch_size=4,epochs=5"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    out_dir = tmp_path_factory.mktemp("uninterrupted")
    run_cli(*PREEMPT_ARGS, f"out_dir={out_dir}")
    return _run_dir(out_dir, "sgdmng", PREEMPT_EXTRA)


@pytest.mark.parametrize(
    "signum", [signal.SIGUSR2, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)],
    ids=["SIGUSR2", "SIGTERM"],
)  # fmt: skip
def test_signal_checkpoints_and_rerun_matches_uninterrupted(signum, uninterrupted, tmp_path):
    """What Slurm sends before preemption: checkpoint mid-epoch, end; the rerun finishes equal."""
    out_dir = tmp_path / "preempted"
    run_dir = _run_dir(out_dir, "sgdmng", PREEMPT_EXTRA)
    cmd = [sys.executable, str(REPO / "run.py"), *PREEMPT_ARGS, f"out_dir={out_dir}"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    output, _ = stop_at_checkpoint(proc, run_dir / "checkpoint.pt", signum)
    # The engine re-raises the signal under its default handler: the process dies of it.
    assert proc.returncode == -signum, output[-2000:]
    assert (run_dir / "checkpoint.pt").exists()
    summary = _summary(run_dir)
    assert summary["status"] not in ("completed", "running"), summary
    assert summary["epochs_done"] < 5, "the signal came too late to test a resume"

    resumed = run_cli(*PREEMPT_ARGS, f"out_dir={out_dir}")
    assert "[resume]" in resumed.stdout
    assert _comparable(_metrics(run_dir)) == _comparable(_metrics(uninterrupted))
    summary, reference = _summary(run_dir), _summary(uninterrupted)
    assert summary["status"] == "completed" and summary["epochs_done"] == 5
    assert _comparable([summary["final"]]) == _comparable([reference["final"]])
    assert summary["best"] == reference["best"]


def test_stop_request_hands_over_every_signal_in_order():
    """TERM and USR2 pending together run their handlers in signal-number order (USR2 first,
    then TERM): both must reach the previous handlers, or submitit never sees the USR2 that
    requeues (this lost a preempted Slurm cell about one time in four)."""
    from experiments.train import StopRequest

    seen: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: seen.append(signum))
                for sig in (signal.SIGTERM, signal.SIGUSR2)}
    try:
        with StopRequest() as stop:
            signal.raise_signal(signal.SIGUSR2)
            signal.raise_signal(signal.SIGTERM)
            signal.raise_signal(signal.SIGUSR2)  # a repeat is one request
            assert stop() and stop.received == [signal.SIGUSR2, signal.SIGTERM]
            assert seen == []  # nothing reached the previous handlers yet
            stop.hand_over()  # the recording handlers return, so training would go on
            assert seen == [signal.SIGUSR2, signal.SIGTERM]
            assert not stop()
            signal.raise_signal(signal.SIGTERM)  # our handler is back in place
            assert stop.received == [signal.SIGTERM] and seen == [signal.SIGUSR2, signal.SIGTERM]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# -- wandb, offline: the run files hold the config and the metrics -----------------------------


@pytest.fixture
def wandb_env(tmp_path, monkeypatch) -> dict:
    """Offline, silent, and every wandb folder (cache, config, artifacts) under tmp_path."""
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(tmp_path / "wandb"),
           "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"),
           "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"),
           "WANDB_DATA_DIR": str(tmp_path / "wandb-data"),
           "WANDB_DISABLE_GIT": "true", "WANDB_DISABLE_CODE": "true"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def _read_wandb(path: Path) -> dict:
    """The records of an offline .wandb file: run (with config), config, history, summary, exit.

    The file is a 7-byte W&B header, then LevelDB-log framing (32 KiB blocks; each chunk has a
    crc32, a uint16 length and a type: 1 full, 2 first, 3 middle, 4 last) of protobuf Records.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    data, block, pos, pending = path.read_bytes(), 32768, 7, b""
    assert data[:4] == b":W&B", f"{path} is not a wandb data file"
    records: dict[str, list] = {}
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            records.setdefault(record.WhichOneof("record_type"), []).append(record)
            pending = b""
    return records


def _wandb_records(run_dir: Path) -> dict:
    """The run's one offline .wandb file, read once wandb's service has flushed its exit record.

    `finish()` can return before the service (a separate process) has written the file out.
    """
    deadline = time.monotonic() + 30
    while True:
        files = list(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
        assert len(files) <= 1, files
        records = _read_wandb(files[0]) if files else {}
        if "exit" in records or time.monotonic() > deadline:
            assert files, f"no offline run files under {run_dir / 'wandb'}"
            return {"file": files[0], **records}
        time.sleep(0.2)


def _wandb_history(records: dict) -> list[dict]:
    rows = []
    for record in records.get("history", []):
        row = {"/".join(item.nested_key) or item.key: json.loads(item.value_json)
               for item in record.history.item}
        rows.append({k: v for k, v in row.items() if not k.startswith("_")})
    return rows


def _wandb_config(records: dict) -> dict:
    items = [i for r in records["run"] for i in r.run.config.update]
    items += [i for r in records.get("config", []) for i in r.config.update]
    return {item.key: json.loads(item.value_json) for item in items}


def test_wandb_logger_offline_unit(wandb_env, tmp_path):
    """Config once, flattened metrics per epoch at step=epoch, one id per run folder."""
    run_dir = tmp_path / "runs" / "digits" / "mlp6" / "adamng" / "default" / "seed1"
    run_dir.mkdir(parents=True)
    logger = WandbLogger(mode="online")  # WANDB_MODE=offline wins over the config
    assert logger.mode == "offline"
    logger.start(run_dir, {"optim": {"name": "adamng", "lr": 1e-3}, "seed": 1},
                 "digits/mlp6/adamng/default/seed1")
    logger.log_epoch({"epoch": 1, "train_loss": 0.5, "grad_norms": {"layers.0": 0.25}})
    logger.finish("completed")

    records = _wandb_records(run_dir)
    assert records["file"].name == f"run-{run_id(run_dir)}.wandb"
    assert records["run"][0].run.display_name == "digits/mlp6/adamng/default/seed1"
    assert records["run"][0].run.project == "bng-suite"
    assert _wandb_config(records)["optim"] == {"name": "adamng", "lr": 1e-3}
    assert _wandb_history(records) == [
        {"epoch": 1, "train_loss": 0.5, "grad_norms/layers.0": 0.25}]
    assert records["exit"][0].exit.exit_code == 0
    assert run_id(run_dir) == run_id(run_dir / ".." / "seed1")  # the same folder, the same run
    assert run_id(run_dir) != run_id(tmp_path / "demo" / "runs" / "digits")


def test_flatten_nests_with_slashes():
    assert flatten({"a": 1, "g": {"x": 2, "y": {"z": 3}}}) == {"a": 1, "g/x": 2, "g/y/z": 3}


def test_local_logger_never_imports_wandb():
    code = ("import sys; from experiments.loggers import LocalLogger; l = LocalLogger();"
            "l.start(None, {}, 'x'); l.log_epoch({'epoch': 1}); l.finish('completed');"
            "assert 'wandb' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)


def test_run_with_wandb_offline_writes_metrics_and_config(wandb_env, tmp_path):
    out_dir = tmp_path / "out"
    run_cli("logger=wandb", "dataset=digits", "model=mlp6", "epochs=2", "device=cpu",
            f"out_dir={out_dir}", env=cli_env(**wandb_env))
    run_dir = _run_dir(out_dir, "adamng", "epochs=2")
    records = _wandb_records(run_dir)
    config = _wandb_config(records)
    assert config["model"]["name"] == "mlp6" and config["epochs"] == 2
    assert config["meta"]["optim"] == "adamng"
    assert records["run"][0].run.display_name == "digits/mlp6/adamng/epochs=2/seed1"
    expected = [flatten(row) for row in _metrics(run_dir)]
    assert _wandb_history(records) == expected
    assert any(key.startswith("grad_norms/") for key in expected[0])
    assert records["exit"][0].exit.exit_code == 0


# -- DDP: torchrun, 2 CPU processes with gloo, against one process ------------------------------

# 1280 = 20 global batches of 64: every rank sees 32 samples a step, no ragged last batch.
DDP_ARGS = ("dataset=digits", "dataset.limit=1280", "model=mlp6", "optim=sgdmng", "epochs=2",
            "batch_size=64", "device=cpu", "seed=3")
DDP_EXTRA = "batch_size=64,dataset.limit=1280,epochs=2"


def test_ddp_two_processes_match_one(tmp_path):
    """The global batch is split over 2 ranks; the loss trajectory is one process's within fp."""
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    run_cli(*DDP_ARGS, f"out_dir={single}")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(REPO / "run.py"), *DDP_ARGS, f"out_dir={ddp}"]
    proc = subprocess.run(cmd, cwd=REPO, env=cli_env(), capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    extra = DDP_EXTRA
    # Only rank 0 writes: one run folder, and nothing else under runs/.
    assert sorted(p.relative_to(ddp) for p in ddp.glob("runs/**/summary.json")) == [
        _run_dir(Path(), "sgdmng", extra, seed=3) / "summary.json"]
    assert proc.stdout.count("[completed]") == 1, proc.stdout[-2000:]
    one = _metrics(_run_dir(single, "sgdmng", extra, 3))
    two = _metrics(_run_dir(ddp, "sgdmng", extra, 3))
    assert [r["epoch"] for r in two] == [1, 2]
    for a, b in zip(one, two, strict=True):
        for key in ("train_loss", "test_loss", "train_acc", "test_acc", "lr"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-7), (key, a, b)
        for block, norm in a["grad_norms"].items():
            assert b["grad_norms"][block] == pytest.approx(norm, rel=1e-5, abs=1e-9), block
    assert _summary(_run_dir(ddp, "sgdmng", extra, 3))["status"] == "completed"
    config = yaml.safe_load((_run_dir(ddp, "sgdmng", extra, 3) / "config.yaml").read_text())
    assert config["meta"]["world_size"] == 2


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            str(REPO / "run.py"), *args]


@pytest.mark.slow  # three 2-rank launches, ~1 min on 2 cores
def test_ddp_resume_mid_epoch_matches_uninterrupted(tmp_path):
    """SIGTERM to torchrun in epoch 2: each rank checkpoints its own running sums and LSTM state
    and reloads its own, so the resumed run's metrics equal an uninterrupted run's bitwise."""
    import random

    from data.fixtures import make_ptb

    words = "the cat sat on mat a dog ran to log N <unk>".split()
    pick = random.Random(0)             # no period: each rank's rows are different text
    make_ptb(tmp_path / "data", train=[" ".join(pick.choices(words, k=8)) for _ in range(2000)])
    args = ("dataset=ptb", "model=lstm", "model.net.emb=16", "model.net.hidden=16",
            "optim=adamng", "epochs=3", "batch_size=4", "dataset.bptt=5", "log_every=5",
            "device=cpu", f"data_root={tmp_path / 'data'}", "dataset.verify_md5=false")
    extra = "batch_size=4,dataset.bptt=5,epochs=3,model.net.emb=16,model.net.hidden=16"
    run_dir = tmp_path / "{}" / "runs/ptb/lstm/adamng" / extra / "seed1"
    straight = subprocess.run(_torchrun(*args, f"out_dir={tmp_path / 'straight'}"), cwd=REPO,
                              env=cli_env(), capture_output=True, text=True, timeout=300)
    assert straight.returncode == 0, straight.stderr[-3000:]

    out_dir = tmp_path / "stopped"
    stopped_dir = Path(str(run_dir).format("stopped"))
    proc = subprocess.Popen(_torchrun(*args, f"out_dir={out_dir}"), cwd=REPO, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output, _ = stop_at_checkpoint(proc, stopped_dir / "checkpoint.pt", signal.SIGTERM)  # epoch 1
    summary = _summary(stopped_dir)
    assert summary["status"] == "interrupted" and summary["epochs_done"] == 1, output[-3000:]
    ckpt = torch.load(stopped_dir / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and len(ckpt["ranks"]) == 2
    assert ckpt["ranks"][0]["epoch_state"]["batch"] > 0              # stopped mid-epoch
    sums = [r["epoch_state"]["loss_sum"] for r in ckpt["ranks"]]
    assert not torch.equal(sums[0], sums[1])                         # the ranks' own sums

    resumed = subprocess.run(_torchrun(*args, f"out_dir={out_dir}"), cwd=REPO, env=cli_env(),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "[resume] epoch 2" in resumed.stdout
    reference = _metrics(Path(str(run_dir).format("straight")))
    assert _comparable(_metrics(stopped_dir)) == _comparable(reference)
    # The command that started the run, so that a user can repeat it.
    assert "torch.distributed.run" in _summary(stopped_dir)["command"]
    assert "--nproc_per_node=2" in _summary(stopped_dir)["command"]
