"""Whole training steps with this checkout's bng against the bng of another git revision.

    python scripts/bench_against.py --against 7eeed7c --models MLP-18 ResNet-20 \\
        --threads 1 --clock cpu --repeats 80      # ~4 min on 2 cores (docs/SPEED.md)

For each model of bench_optim's ``e2e`` part (ResNet-20 with SGDMNG on CIFAR-shaped batches of
128, MLP-18 and the PTB LSTM with AdamNG on MNIST-shaped batches of 100 and 100 x 40 token
windows; ``--pairs`` picks other base optimizers), the same model, seed and batch are built under
each version's optimizer, called by its public name with the same arguments, and one training
step (``zero_grad``, forward, backward, ``step``) is timed again and again. It prints each
version's median step time, the this/other throughput (the median over repetitions of the
other's summed step times over this checkout's), the noise (this checkout's copies against each
other: the same code, so its distance from 1 is what the run can resolve), and how far the
copies' losses lie apart after one update (the same work: a speed ratio means little if the
versions no longer compute the same step). "This checkout" is the working tree's bng,
uncommitted changes included; the header says so when there are some.

Why worker processes: bng imports its own modules by absolute name (``from bng.functional
import ...``), so a second copy loaded under another top-level name would still run this
checkout's submodules. Each copy of each version therefore lives in its own long-lived worker
process (this script with ``--worker ROOT``), which imports the bng under ROOT before anything
else can, builds its model once and times one step per request on its own clock (with ``--clock
cpu``, its own process's CPU time). The parent interleaves the requests with bench_optim's
``interleaved`` (order rotated each repetition, no worker twice in a row); the clock it hands
that helper is the running sum of the times the workers report, so each difference it takes is
one step's own time, without the messaging. This checkout's copies are separate processes too,
so the noise carries the same process-to-process spread (memory layout) as the ratio.

The other revision's bng/ is taken from git (``git ls-tree`` and ``git show``) into a temporary
folder, removed at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench_optim import Timing

# Only the standard library at the top: a worker must import its own bng before bench_optim
# (which imports bng) is loaded, and the one-line errors below need no torch.
REPO = Path(__file__).resolve().parents[1]
WARMUP = 2  # untimed steps of every copy before the timed ones, as bench_optim's e2e part


class BenchError(Exception):
    """A problem the user can fix: printed as one line, exit 2."""


def git(*args: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True)
    except FileNotFoundError:
        raise BenchError("git is not installed; --against reads the other revision from git") \
            from None


def extract(rev: str, dest: Path) -> str:
    """Write the bng/ of ``rev`` under ``dest`` (``dest/bng``); return how to name the
    revision (its short hash and subject)."""
    found = git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    if found.returncode != 0:
        if b"not a git repository" in found.stderr:
            raise BenchError(f"{REPO} is not a git checkout; --against needs its history")
        raise BenchError(f"unknown revision {rev!r}: name a commit, branch or tag of this "
                         "checkout (`git log --oneline -- bng/` lists bng's own history; a "
                         "shallow clone needs `git fetch --unshallow`)")
    commit = found.stdout.decode().strip()
    listed = git("ls-tree", "-r", "-z", "--name-only", commit, "--", "bng/")
    files = [name for name in listed.stdout.decode().split("\0") if name]
    if "bng/__init__.py" not in files:
        raise BenchError(f"revision {rev} has no bng/ package (no bng/__init__.py); pick a later "
                         "one: `git log --oneline -- bng/__init__.py` lists those that have it")
    for name in files:
        blob = git("show", f"{commit}:{name}")
        if blob.returncode != 0:
            raise BenchError(f"git show {commit}:{name} failed: {blob.stderr.decode().strip()}")
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        (dest / name).write_bytes(blob.stdout)
    named = git("log", "-1", "--format=%h %s", commit).stdout.decode().strip()
    return named if len(named) <= 80 else named[:77].rsplit(" ", 1)[0] + " ..."


def describe_this() -> str:
    head = git("log", "-1", "--format=%h", "HEAD").stdout.decode().strip() or "no commit"
    dirty = git("status", "--porcelain", "--", "bng/").stdout.strip()
    return f"this checkout ({head}{', with uncommitted changes in bng/' if dirty else ''})"


# --- the worker: one copy of one version, in its own process ----------------------------------

def serve(root: Path, threads: int, clock: str) -> None:
    """A worker's life: import the bng under ``root``, say which public names it has, then build
    a model and time its steps as asked, one JSON request a line on stdin and one reply a line
    on stdout, until stdin closes."""
    replies, sys.stdout = sys.stdout, sys.stderr  # anything else printed goes to the log

    def reply(message: dict) -> None:
        replies.write(json.dumps(message) + "\n")
        replies.flush()

    sys.path.insert(0, str(root))
    import bng
    if Path(bng.__file__).resolve().parent != (root / "bng").resolve():
        return reply({"error": f"imported bng from {Path(bng.__file__).parent}, not {root}"})
    reply({"names": [name for name in dir(bng) if not name.startswith("_")]})
    import bench_optim  # its own `import bng` finds the one loaded above
    import torch

    torch.set_num_threads(threads)
    now = time.process_time if clock == "cpu" else time.perf_counter
    step: Callable[[], Any] | None = None
    for line in sys.stdin:
        request = json.loads(line)
        try:
            if "build" in request:
                step = build_step(bng, bench_optim.e2e_task, **request["build"])
                reply({"built": True})
                continue
            start = now()
            loss = step()
            seconds = now() - start
            reply({"seconds": seconds, "loss": float(loss)})  # read after the clock stops
        except Exception as error:  # another revision's code: reported, not a traceback
            reply({"error": f"{type(error).__name__}: {error}"})


def build_step(bng: Any, task: Callable, model: str, optimizer: str,
               kwargs: dict) -> Callable[[], Any]:
    """One training step of ``model`` (bench_optim's e2e task, seed 0) under ``bng.<optimizer>``,
    returning its loss."""
    import torch
    torch.manual_seed(0)
    net, loss_of = task(model)
    opt = getattr(bng, optimizer)(net, **kwargs)

    def step() -> Any:
        opt.zero_grad()
        loss = loss_of(net)
        loss.backward()
        opt.step()
        return loss.detach()

    return step


class Worker:
    """The parent's handle on one worker process; a context manager that ends it."""

    def __init__(self, root: Path, label: str, threads: int, clock: str, log: Path) -> None:
        self.label, self.log = label, log
        with open(log, "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, __file__, "--worker", str(root), str(threads), clock],
                cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True)
        self.names: list[str] = []

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        """Killed, not asked to stop: it holds nothing to save, and one still starting (after
        an error elsewhere) is not waited for."""
        self.proc.kill()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:  # a dead worker's pipe
                pass
        self.proc.wait()

    def read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            lines = self.log.read_text(errors="replace").strip().splitlines()
            raise BenchError(f"the worker with {self.label}'s bng stopped: "
                             f"{lines[-1] if lines else 'no message'}")
        message = json.loads(line)
        if "error" in message:
            raise BenchError(f"{self.label}'s bng: {message['error']}")
        return message

    def ask(self, request: dict) -> dict:
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass  # it has stopped: read() says why
        return self.read()

    def wait_ready(self) -> None:
        self.names = self.read()["names"]

    def require(self, optimizers: set[str]) -> None:
        missing = sorted(optimizers - set(self.names))
        if missing:
            raise BenchError(f"{self.label}'s bng has no {', '.join(missing)} (its names: "
                             f"{', '.join(self.names)}); choose other --pairs or another revision")

    def build(self, model: str, optimizer: str, kwargs: dict) -> None:
        self.ask({"build": {"model": model, "optimizer": optimizer, "kwargs": kwargs}})

    def step(self) -> tuple[float, float]:
        reply = self.ask({"step": True})
        return reply["seconds"], reply["loss"]


# --- the parent: interleave the workers' steps -------------------------------------------------

class WorkerClock:
    """The clock bench_optim's ``interleaved`` reads: the sum of the step times the workers
    have reported, so that each difference it takes is one step's time in its own worker."""

    def __init__(self) -> None:
        self.total = 0.0

    def __call__(self) -> float:
        return self.total


def progress(model: str, total: int) -> Callable[[], None]:
    """A line on stderr per model; on a terminal it counts the steps as they run."""
    live = sys.stderr.isatty()
    print(f"{model}: {total} steps", end="" if live else "\n", file=sys.stderr, flush=True)
    done = [0]

    def tick() -> None:
        done[0] += 1
        if live:
            end = "\n" if done[0] == total else ""
            print(f"\r{model}: {done[0]}/{total} steps", end=end, file=sys.stderr, flush=True)

    return tick


def measure(workers: dict[str, Worker], model: str, optimizer: str, kwargs: dict,
            repeats: int) -> tuple[Timing, dict[str, float]]:
    """Interleaved steps of every worker on ``model``: the Timing, and each copy's loss after
    its first update."""
    import bench_optim

    for worker in workers.values():
        worker.build(model, optimizer, kwargs)
    clock = WorkerClock()
    # The loss each copy reads at its second step, after one update: a later one would differ
    # by more than the versions' rounding, which chaotic training amplifies step by step.
    losses: dict[str, list[float]] = {name: [] for name in workers}
    tick = progress(model, len(workers) * (repeats + WARMUP))

    def variant(name: str) -> Callable[[], None]:
        def run() -> None:
            seconds, loss = workers[name].step()
            clock.total += seconds
            losses[name].append(loss)
            tick()
        return run

    timing = bench_optim.interleaved({name: variant(name) for name in workers}, repeats, WARMUP,
                                     clock=clock)
    return timing, {name: history[1] for name, history in losses.items()}


def compare(args: argparse.Namespace, other: Path, other_label: str, scratch: Path) -> None:
    roots = {"this": (REPO, "this checkout"), "other": (other, args.against)}
    # this #0, other #0, this #1, ...: the rotation in `interleaved` keeps them alternating
    names = [f"{kind} #{c}" for c in range(args.copies) for kind in roots]
    with ExitStack() as stack:
        workers = {name: stack.enter_context(Worker(*roots[name.split()[0]], args.threads,
                                                    args.clock, scratch / f"{name}.log"))
                   for name in names}
        import bench_optim  # here, while the workers import theirs

        jobs = []
        for model in args.models or list(bench_optim.E2E):
            if model not in bench_optim.E2E:
                raise BenchError(f"unknown model {model!r}; choose from "
                                 f"{', '.join(bench_optim.E2E)}")
            for base in args.pairs or [bench_optim.E2E[model]]:
                if base not in bench_optim.PAIRS:
                    raise BenchError(f"unknown pair {base!r}; choose from "
                                     f"{', '.join(bench_optim.PAIRS)}")
                jobs.append((model, f"{base}NG", dict(bench_optim.PAIRS[base][1], foreach=True)))
        for worker in workers.values():
            worker.wait_ready()
            worker.require({optimizer for _, optimizer, _ in jobs})
        report(args, workers, jobs, other_label)


def report(args: argparse.Namespace, workers: dict[str, Worker], jobs: list[tuple],
           other_label: str) -> None:
    import torch

    print(f"{describe_this()} against {other_label}")
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.clock} clock; "
          f"{args.copies} {'copy' if args.copies == 1 else 'copies'} of each version, each in "
          f"its own process, {args.repeats} interleaved steps each; batches as bench_optim's e2e "
          "part (ResNet-20: 128 CIFAR-shaped, MLP-18: 100 MNIST-shaped, PTB-LSTM: 100 x 40 tokens)")
    header = (f"{'model':<10} {'optimizer':<10} {'this ms':>8} {'other ms':>8} "
              f"{'this/other throughput':>21} {'noise':>6} {'loss gap':>8}")
    print(header + "\n" + "-" * len(header), flush=True)
    this = [name for name in workers if name.startswith("this")]
    other = [name for name in workers if name.startswith("other")]
    for model, optimizer, kwargs in jobs:
        t, losses = measure(workers, model, optimizer, kwargs, args.repeats)
        ms = {kind: statistics.median(t[k] for k in names) * 1e3
              for kind, names in (("this", this), ("other", other))}
        noise = t.noise(this)
        gap = max(abs(loss - losses[this[0]]) for loss in losses.values())
        print(f"{model:<10} {optimizer:<10} {ms['this']:>8.2f} {ms['other']:>8.2f} "
              f"{t.group_ratio(other, this):>21.3f} {'-' if noise is None else f'{noise:.3f}':>6} "
              f"{gap:>8.1e}", flush=True)
    print("this/other throughput: median over repetitions of the other's summed step times over "
          "this checkout's; noise: this checkout's copies against each other (same code); loss "
          "gap: the largest difference of the copies' losses after one update")


def main() -> None:
    if sys.argv[1:2] == ["--worker"]:  # started by Worker, not by hand
        serve(Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", required=True, metavar="REV",
                        help="the git revision whose bng to compare with (a hash, branch, tag)")
    parser.add_argument("--models", nargs="*", help="ResNet-20, MLP-18, PTB-LSTM (default: all)")
    parser.add_argument("--pairs", nargs="*", help="base optimizers whose NG version is timed: "
                        "SGDM, Adam, AdaGrad (default: SGDM for ResNet-20, else Adam)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="cpu: each worker's own CPU time (time.process_time), which leaves "
                             "out the time other processes hold the cores; use with --threads 1")
    counts = {"threads": (2, "torch.set_num_threads per worker"),
              "repeats": (20, "timed steps per copy"),
              "copies": (2, "worker processes per version")}
    for flag, (default, meaning) in counts.items():
        parser.add_argument(f"--{flag}", type=int, default=default, help=meaning)
    args = parser.parse_args()
    for flag in counts:  # checked here: bench_optim's `positive` would import torch first
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be at least 1, got {getattr(args, flag)}")
    try:
        with tempfile.TemporaryDirectory(prefix="bench_against-") as scratch:
            label = extract(args.against, Path(scratch) / "other")
            compare(args, Path(scratch) / "other", label, Path(scratch))
    except BenchError as error:
        print(f"bench_against: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("bench_against: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
