"""gpu-check's child processes: scripts/gpu_bench.py workers and logged commands, each killed
(with its whole process group) when it overruns, so one stuck step cannot stall the check."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

BENCH = HERE / "gpu_bench.py"
STARTUP_S = 60                                # import torch and hydra, initialize CUDA


def _spawn(items: list[dict], device: str, log_dir: Path, tag: str) -> subprocess.Popen:
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / f"items-{tag}.json"
    path.write_text(json.dumps(items))
    stderr = open(log_dir / f"bench-{tag}.log", "a")   # noqa: SIM115 (the child holds it)
    return subprocess.Popen([sys.executable, str(BENCH), "--device", device, str(path)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=stderr, text=True,
                            start_new_session=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))


def _lines(proc: subprocess.Popen) -> queue.Queue:
    """The child's stdout lines, read by a thread; None at the end."""
    lines: queue.Queue = queue.Queue()

    def pump() -> None:
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def run_items(items: list[dict], device: str, deadline: float, item_cap: float, log_dir: Path,
              keep) -> list[dict]:
    """Run the items in one worker; an item that overruns `item_cap` (or the deadline) is
    killed with its worker and recorded as `timeout`, and a new worker takes the rest."""
    pending, results, rounds = list(items), [], 0
    while pending and deadline - time.monotonic() > 3:
        rounds += 1
        proc = _spawn(pending, device, log_dir, f"{pending[0]['id'].split(':')[0]}-{rounds}")
        lines, current = _lines(proc), None
        until = min(deadline, time.monotonic() + STARTUP_S + item_cap)
        while True:
            try:
                line = lines.get(timeout=max(0.05, until - time.monotonic()))
            except queue.Empty:
                line = "timeout"
            if line == "timeout" or line is None:
                _kill(proc)
                victim = current or pending[0]["id"]
                if line != "timeout":
                    status, reason = "crashed", f"the worker exited with {proc.returncode}"
                elif time.monotonic() >= deadline - 1:
                    status, reason = "timeout", "the step's time ran out"
                else:
                    status, reason = "timeout", f"over the {item_cap:.0f} s cap of one item"
                item = next(i for i in pending if i["id"] == victim)
                result = {**item, "status": status, "message": reason}
                results.append(result)
                keep(result)
                pending.remove(item)
                break
            if not line.startswith("@@ "):
                continue
            payload = json.loads(line[3:])
            if payload["event"] == "start":
                current = payload["id"]
                until = min(deadline, time.monotonic() + item_cap)
                continue
            if payload["event"] != "result":
                continue
            item = next(i for i in pending if i["id"] == payload["id"])
            pending.remove(item)
            result = {**item, **payload}
            results.append(result)
            keep(result)
            current = None
            if not pending:
                _kill(proc)
                break
    for item in pending:
        result = {**item, "status": "skipped", "message": "out of time"}
        results.append(result)
        keep(result)
    return results


def run_concurrent(item: dict, procs: int, device: str, deadline: float,
                   log_dir: Path) -> float | None:
    """Samples/s summed over `procs` workers training at once: each warms up and says ready,
    then a go file starts them together for `item['duration']` s. None if it does not fit
    before the deadline or a worker fails."""
    if deadline - time.monotonic() < 20 + item["duration"]:
        return None
    go = log_dir / f"go-{item['name']}-{procs}"
    go.unlink(missing_ok=True)
    workers = [_spawn([{**item, "id": f"concurrent:{item['name']}x{procs}:{k}",
                        "go_file": str(go)}], device, log_dir, f"concurrent-{procs}-{k}")
               for k in range(procs)]
    queues = [_lines(proc) for proc in workers]
    try:
        for lines in queues:                      # every worker ready (warmed up)?
            if _next_event(lines, deadline - item["duration"] - 5) != "ready":
                return None
        go.touch()
        total = 0.0
        for lines in queues:
            row = _next_event(lines, deadline, payload=True)
            if not row or row.get("status") != "ok":
                return None
            total += row["train_per_s"]
        return total
    finally:
        for proc in workers:
            _kill(proc)


def _next_event(lines: queue.Queue, deadline: float, payload: bool = False):
    """The next `@@` event of a worker other than `start` (its payload if asked), or None."""
    while True:
        try:
            line = lines.get(timeout=max(0.05, deadline - time.monotonic()))
        except queue.Empty:
            return None
        if line is None:
            return None
        if line.startswith("@@ "):
            event = json.loads(line[3:])
            if event["event"] != "start":
                return event if payload else event["event"]


def run_logged(cmd: list[str], env: dict, deadline: float, log: Path) -> tuple[int | None, str]:
    """Run a command to a log file until `deadline`; (exit code or None if killed, output)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as sink:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            code = None
    return code, log.read_text(errors="replace")
