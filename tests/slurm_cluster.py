"""A throwaway single-node Slurm cluster for tests: munged + slurmctld + slurmd on this machine.

Everything lives in one temporary folder: the munge key and socket, slurm.conf, the state and
spool folders, pid files and logs. The daemons listen on free ports and authenticate through
their own munge socket, so two test runs (or a system Slurm) never see each other. It needs
Debian's `slurm-wlm` and `munge` and runs as root (SlurmUser=root).

    with SlurmCluster() as cluster:          # or the `slurm_cluster` fixture in tests/test_slurm.py
        subprocess.run(["sbatch", ...], env=cluster.env)

`cluster.env` is os.environ plus SLURM_CONF; clients (sbatch, squeue, submitit) need only that.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")


def missing_binaries() -> list[str]:
    """The daemons and client commands this helper needs that are not on PATH."""
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    needed = (*DAEMONS, "sbatch", "squeue", "scontrol", "scancel", "sinfo")
    return [name for name in needed if shutil.which(name, path=path) is None]


def skip_reason() -> str | None:
    """One line saying why a real-Slurm test cannot run here, or None when it can."""
    missing = missing_binaries()
    if missing:
        return f"Slurm not installed ({', '.join(missing)} missing): run `make slurm-test`"
    if os.geteuid() != 0:
        return "the test Slurm cluster runs its daemons as root (SlurmUser=root)"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _node_resources() -> tuple[int, int]:
    """(CPUs, RealMemory in MB) of this machine; memory leaves 10% so slurmd never drains it."""
    cpus = os.cpu_count() or 1
    with open("/proc/meminfo") as meminfo:
        total_kb = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal:"))
    return cpus, int(total_kb / 1024 * 0.9)


class SlurmCluster:
    """munged, slurmctld and slurmd, started in `start()` and always stopped by `stop()`."""

    partition = "debug"

    def __init__(self, root: str | Path | None = None):
        # A short path under /tmp: the munge socket path must fit in sun_path (108 bytes).
        self.root = Path(root or tempfile.mkdtemp(prefix="bng-slurm-"))
        self.node = socket.gethostname().split(".")[0]
        self.conf = self.root / "slurm.conf"
        self.munge_socket = self.root / "munge.socket"
        self.processes: dict[str, subprocess.Popen] = {}
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        sbin = "/usr/sbin:/sbin"
        self.env["PATH"] = f"{self.env.get('PATH', '')}:{sbin}"

    # -- configuration -------------------------------------------------------------------------
    def write_config(self) -> None:
        for sub in ("state", "spool", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        key = self.root / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        cpus, memory_mb = _node_resources()
        root = self.root
        self.conf.write_text(
            f"""\
ClusterName=bngtest
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire also holds a requeued job back (cred_expire + 1 s): 120 s by default.
AuthInfo=socket={self.munge_socket},cred_expire=10
# No cgroups in containers: track processes by parent pid, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
# CPUs are the only consumable, so jobs without --mem still run side by side.
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
# Look at pending jobs every 2 s (default 60 s), so a requeued job restarts promptly.
SchedulerParameters=sched_interval=2,bf_interval=2
# No slurmdbd: sacct warns, submitit falls back to its result files.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
# Trust the node line below even if the hardware layout differs (sockets, cores).
SlurmdParameters=config_overrides
JobRequeue=1
KillWait=5
InactiveLimit=0
MinJobAge=300
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName={self.partition} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
"""
        )

    # -- lifecycle -----------------------------------------------------------------------------
    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.root / "log" / f"{name}.out", "wb")  # noqa: SIM115 - closed with the process
        self.processes[name] = subprocess.Popen(
            args, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()

    def start(self, timeout: float = 60.0) -> SlurmCluster:
        """Write the config, start the three daemons and wait until the node is idle."""
        self.write_config()
        root = self.root
        try:
            self._spawn("munged", [
                "munged", "--foreground", "--force",
                f"--socket={self.munge_socket}", f"--key-file={root / 'munge.key'}",
                f"--pid-file={root / 'munged.pid'}", f"--log-file={root / 'log/munged.log'}",
                f"--seed-file={root / 'munged.seed'}",
            ])  # fmt: skip
            self._wait(lambda: self.munge_socket.exists(), 10, "munged socket")
            # -i: ignore state from an earlier run (there is none: a fresh folder).
            self._spawn("slurmctld", ["slurmctld", "-D", "-i", "-f", str(self.conf)])
            self._spawn("slurmd", ["slurmd", "-D", "-f", str(self.conf)])
            self._wait(self._node_idle, timeout, f"node {self.node} idle")
        except BaseException:
            self.stop()
            raise
        return self

    def _node_idle(self) -> bool:
        result = self.run("sinfo", "-h", "-n", self.node, "-o", "%T", check=False)
        return result.returncode == 0 and result.stdout.strip() in ("idle", "mixed")

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited ({process.returncode})\n{self.logs()}")
            if ready():
                return
            time.sleep(0.3)
        raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}\n{self.logs()}")

    def stop(self) -> None:
        """Cancel every job, then stop the daemons (TERM, then KILL) and remove the folder."""
        if self.processes.get("slurmctld") and self.processes["slurmctld"].poll() is None:
            self.run("scancel", "--full", "--user", "root", check=False, timeout=10)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.run(
                "squeue", "-h", "-o", "%i", check=False, timeout=10
            ).stdout.strip():
                time.sleep(0.3)
        for name in reversed(DAEMONS):
            process = self.processes.pop(name, None)
            if process is None:
                continue
            for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
                if process.poll() is not None:
                    break
                try:
                    # The daemon's whole session: slurmd's slurmstepd children go with it.
                    os.killpg(process.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    process.wait(wait)
                except subprocess.TimeoutExpired:
                    pass
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> SlurmCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- helpers -------------------------------------------------------------------------------
    def run(self, *args: str, check: bool = True, timeout: float = 30):
        """Run a Slurm client command against this cluster."""
        return subprocess.run(
            args, env=self.env, capture_output=True, text=True, check=check, timeout=timeout
        )

    def logs(self, tail: int = 30) -> str:
        """The last lines of every daemon log, for failure messages."""
        parts = []
        for log in sorted((self.root / "log").glob("*")):
            lines = log.read_text(errors="replace").splitlines()[-tail:]
            parts.append(f"--- {log.name}\n" + "\n".join(lines))
        return "\n".join(parts)
