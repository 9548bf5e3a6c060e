"""`python scripts/report.py [TARGET ...] [--results DIR] ...`: render tables and figures from the
runs present, print where they went and the command for every run still missing. Never trains,
and a partial sweep is not an error (exit 0); a renderer bug exits 1, and bad input or an output
folder that cannot be written exits 2 with one line."""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

from .inputs import InputError, check_out, check_results, check_run_args, parse_seeds
from .registry import KINDS, REGISTRY, TARGETS, artifacts, demo_artifacts, names, renderers

if TYPE_CHECKING:
    from .grids import Artifact


class Parser(argparse.ArgumentParser):
    """argparse, its errors in one line (with where to read the options) and exit 2."""

    def error(self, message: str):
        raise InputError(f"{message} (python scripts/report.py --help lists the options)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = Parser(
        prog="python scripts/report.py", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("targets", nargs="*", metavar="TARGET",
                        help=f"any of {', '.join(TARGETS)}, 'verdicts' (the paper's claims, "
                             "checked), 'all' (default) or 'demo'")
    parser.add_argument("--only", default="", help="comma list of targets (same as TARGET ...)")
    parser.add_argument("--results", type=Path, default=None,
                        help="folder holding runs/ (default: results, results/quick with "
                             "--scale quick, results/demo for demo)")
    parser.add_argument("--out", type=Path, default=None,
                        help="where tables/ and figures/ go (default: --results)")
    parser.add_argument("--scale", choices=["full", "quick"], default="full",
                        help="quick: label every output as the CPU-sized quick scale; seed 1")
    parser.add_argument("--dataset", default=None,
                        help="render the grids on this dataset instead (e.g. digits)")
    parser.add_argument("--seeds", default=None, help="comma list of seeds, e.g. 1 or 1,2,3")
    parser.add_argument("--run-args", default="",
                        help="the overrides the runs were made with beyond their experiment "
                             "config (e.g. \"epochs=10\"): each cell then asks for them, and "
                             "they are appended to each printed `python run.py` command "
                             "(default at --scale quick: experiment=<target>_quick)")
    parser.add_argument("--list-all", action="store_true",
                        help="print every missing run (default: the first 20; all go to "
                             "<out>/missing/<target>.txt)")
    parser.add_argument("--paper", type=Path, default=None,
                        help="paper numbers (default: scripts/reports/paper_results.yaml)")
    parser.add_argument("--sweeps", action="store_true",
                        help="print the experiment configs that make the targets' own runs "
                             "(what `make <target>` runs), then exit")
    parser.add_argument("--list", nargs="*", metavar="KIND", choices=KINDS, default=None,
                        help=f"print the artifacts' names by kind ({', '.join(KINDS)}), then "
                             "exit; with kinds: only those names, on one line (the Makefile's "
                             "lists)")
    args = parser.parse_args(argv)
    if args.list is not None:
        return args
    targets = [t for t in args.targets + args.only.split(",") if t] or ["all"]
    unknown = sorted(set(targets) - set(TARGETS) - {"all", "demo", "verdicts"})
    if unknown:
        parser.error(f"unknown target(s) {unknown}; choose from "
                     f"{TARGETS + ['verdicts', 'all', 'demo']}")
    args.targets = targets
    args.seeds = parse_seeds(args.seeds) if args.seeds is not None else None
    return args


def list_artifacts(kinds: list[str]) -> str:
    """The names of `kinds` on one line, or every kind's on a line of its own."""
    if kinds:
        return " ".join(names(*kinds))
    return "\n".join(f"{kind}: {' '.join(names(kind))}" for kind in KINDS)


def select(args: argparse.Namespace) -> dict[str, Artifact]:
    """The artifacts to render, with the dataset, seed, scale and --run-args choices applied
    (the last two shape the config each cell asks for)."""
    if "demo" in args.targets:
        return {name: art.adapt(scale=args.scale, run_args=args.run_args) for name, art in
                demo_artifacts(args.dataset or "digits", args.seeds or (1,)).items()}
    chosen = TARGETS if "all" in args.targets else [t for t in TARGETS if t in args.targets]
    seeds = args.seeds or ((1,) if args.scale == "quick" else None)
    return {name: artifacts()[name].adapt(args.dataset, seeds, args.scale, args.run_args)
            for name in chosen}


def default_results(args: argparse.Namespace) -> Path:
    if args.results is not None:
        return args.results
    if "demo" in args.targets:
        return Path("results/demo")
    return Path("results/quick") if args.scale == "quick" else Path("results")


def run_args(args: argparse.Namespace, artifact: Artifact) -> str | None:
    """Overrides for the printed commands: --run-args, or None: at quick scale each run's own
    quick sweep, `experiment=<sweep>_quick` (its epochs and subsets are not command-line
    overrides)."""
    if args.run_args or artifact.scale != "quick":
        return args.run_args
    return None


def render(artifact: Artifact, runs, out_dir: Path, paper: dict) -> list[Path]:
    """Every file the registry's renderers of `artifact` write, in their order."""
    return [path for draw in renderers(artifact.name)
            for path in draw(artifact, runs, out_dir, paper)]


def main(argv: list[str] | None = None) -> int:
    """Exit 0 when every target rendered (missing runs included), 1 when a renderer failed, 2 on
    bad input or an output that cannot be written (one line says which)."""
    try:
        args = parse_args(argv)
        if args.list is not None:
            print(list_artifacts(args.list))
            return 0
        return report(args)
    except (InputError, OSError) as error:
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return 2


def _one_line(error: Exception) -> str:
    if isinstance(error, OSError) and error.filename is not None:
        return f"cannot write {error.filename}: {error.strerror or type(error).__name__}"
    return (str(error).splitlines() or [type(error).__name__])[0]


def check(args: argparse.Namespace, chosen: dict[str, Artifact]) -> tuple[Path, Path]:
    """(the results folder, the output folder), after every check of the command line."""
    check_run_args(args.run_args, {name: {key for grid in artifact.grids
                                          for variant in grid.variants for key, _ in variant}
                                   for name, artifact in chosen.items()})
    results = default_results(args)
    check_results(results, args.results is not None)
    out_dir = args.out or results
    check_out(out_dir)
    return results, out_dir


def report(args: argparse.Namespace) -> int:
    # The rest reads runs and draws (pandas, matplotlib): imported here, so `--list` needs only
    # the standard library (make runs it while it reads the Makefile).
    from .formatting import load_paper
    from .grids import format_damaged, mixed_commit_lines
    from .runs import load_runs
    from .verdict_files import report_verdicts
    from .writer import write_atomic

    chosen = select(args)
    if args.sweeps:
        print(" ".join(dict.fromkeys(s for art in chosen.values() for s in art.sweeps)))
        return 0
    results, out_dir = check(args, chosen)
    started = time.perf_counter()
    runs = load_runs(results)
    paper = load_paper(args.paper) if args.paper else load_paper()
    banner = "QUICK SCALE (CPU-sized; not comparable to the paper)" if args.scale == "quick" \
        else "full scale"
    print(f"bng-suite report: {len(runs)} run folder(s) under {results}/runs; {banner}")
    if runs.damaged:  # listed, never fatal: each reader leaves out what it cannot read
        listing = write_atomic(Path(out_dir) / "missing" / "damaged.txt",
                               format_damaged(runs.damaged) + "\n")
        print(format_damaged(runs.damaged, None if args.list_all else 20))
        print(f"    full list: {listing}")
    failures = 0
    for name, artifact in chosen.items():
        try:
            paths = render(artifact, runs, out_dir, paper)
        except OSError:
            raise
        except Exception:  # a renderer bug must not hide the other artifacts
            failures += 1
            print(f"[{name}] FAILED to render:\n{traceback.format_exc()}", file=sys.stderr)
            continue
        print(f"[{name}] {artifact.title}" + ("  [QUICK SCALE]" if artifact.scale == "quick"
                                              else ""))
        print(f"    wrote {written(paths)}")
        _pending(args, artifact, runs, results, out_dir)
        for line in mixed_commit_lines(artifact, runs):
            print(line)
    if {"verdicts", "all"} & set(args.targets):
        seeds = args.seeds or ((1,) if args.scale == "quick" else None)
        failures += report_verdicts(runs, out_dir, paper, args.dataset, seeds, args.scale,
                                    args.run_args, tuple(t for t in args.targets
                                                         if t in TARGETS))
    print(f"done in {time.perf_counter() - started:.1f}s; outputs under {out_dir}/tables and "
          f"{out_dir}/figures")
    return 1 if failures else 0


def written(paths: list[Path]) -> str:
    """The files on one line, each stem once with its formats: `tables/t1.{md,tex,csv}`."""
    stems: dict[Path, list[str]] = {}
    for path in paths:
        stems.setdefault(path.with_suffix(""), []).append(path.suffix.lstrip("."))
    return " ".join(f"{stem}.{suffixes[0]}" if len(suffixes) == 1
                    else f"{stem}.{{{','.join(suffixes)}}}" for stem, suffixes in stems.items())


def _pending(args: argparse.Namespace, artifact: Artifact, runs, results: Path,
             out_dir: Path) -> None:
    """The artifact's claims (when any of its runs is present) and its runs without a result:
    a few lines printed, every command in missing/<name>.txt."""
    from .grids import format_pending, pending_runs
    from .verdict_files import verdict_lines
    from .writer import write_atomic

    if not REGISTRY[artifact.name].pending:  # a table whose runs are another entry's
        for line in verdict_lines(artifact.name, artifact, runs):
            print(line)
        return
    pending = pending_runs(artifact, runs, str(results), run_args(args, artifact))
    if len(pending) < len(artifact.expected()):  # no claim can be checked on no runs at all
        for line in verdict_lines(artifact.name, artifact, runs):
            print(line)
    listing = write_atomic(Path(out_dir) / "missing" / f"{artifact.name}.txt",
                           format_pending(artifact, pending) + "\n")
    print(format_pending(artifact, pending, None if args.list_all else 20, str(listing)))
