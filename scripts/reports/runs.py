"""Find and read run folders tolerantly: a partial sweep, a crash mid-write or a run still going
never raises here. A run is identified from config.yaml's `meta` block, else from its path."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pandas as pd
import yaml

# When several folders of a cell's exact config answer the same seed, the first status here
# wins. A diverged run of the right config counts as diverged: a cell never reads better than
# one of its own runs.
STATUS_RANK = {"diverged": 0, "completed": 1, "running": 2, "interrupted": 3, "incomplete": 4,
               "failed": 5, "damaged": 6}
# Statuses without a result yet: the run's command produces (or resumes) it. `damaged`: a
# completed run whose metrics.jsonl holds fewer epochs than its summary claims.
PENDING = ("running", "interrupted", "incomplete", "failed", "damaged")


# What a reader may meet in a damaged file: undecodable bytes, bad syntax, deep nesting, no access.
READ_ERRORS = (OSError, ValueError, yaml.YAMLError, RecursionError)


def _text(path: Path) -> tuple[str | None, str | None]:
    """(the file's text, None), or (None, why) when it cannot be read as UTF-8; (None, None)
    when it does not exist."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return None, None
    except OSError as error:
        return None, f"cannot be read ({error.strerror or type(error).__name__})"
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as error:
        return None, f"not UTF-8 text (byte {error.start})"


def _first_line(error: BaseException) -> str:
    return (str(error).splitlines() or [type(error).__name__])[0]


def check_mapping(path: Path, parse) -> tuple[dict | None, str | None]:
    """(the mapping `parse` reads from `path`, or None; why it is damaged, or None).

    A missing file is not damaged; a binary, truncated or wrongly typed one is."""
    text, why = _text(path)
    if text is None:
        return None, why
    try:
        value = parse(text)
    except READ_ERRORS as error:
        return None, f"cannot be parsed ({_first_line(error)})"
    if not isinstance(value, dict):
        return None, f"holds a {type(value).__name__}, not a mapping"
    return value, None


def check_jsonl(path: Path) -> tuple[list[dict], str | None]:
    """(one dict per well-formed line, why some lines are damaged or None). A half-written last
    line (a crash mid-write) is skipped like any other bad line, and named."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return [], None
    except OSError as error:
        return [], f"cannot be read ({error.strerror or type(error).__name__})"
    records, bad = [], []
    for number, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            record = strict_json(raw.decode("utf-8"))
        except (ValueError, RecursionError):
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            bad.append(number)
    if not bad:
        return records, None
    lines = ", ".join(map(str, bad[:3])) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
    return records, f"line(s) {lines} not a JSON object (binary, cut off or another type); skipped"


def _refuse_constant(name: str):
    raise ValueError(f"a bare {name}: not strict JSON (the engine writes null)")


def strict_json(text: str):
    """JSON as the engine writes it: a bare NaN or Infinity is damage, not a number."""
    return json.loads(text, parse_constant=_refuse_constant)


def read_json(path: Path) -> dict | None:
    """The JSON object in `path`, or None if it is missing, damaged or not an object."""
    return check_mapping(path, json.loads)[0]


def read_yaml(path: Path) -> dict | None:
    return check_mapping(path, yaml.safe_load)[0]


def read_jsonl(path: Path) -> list[dict]:
    """One dict per well-formed line; a half-written last line (a crash mid-write) is skipped."""
    return check_jsonl(path)[0]


def split_overrides(extra: object) -> dict[str, str]:
    """`"dataset.bptt=400,epochs=3"` (or a list of such, or `"default"`) -> {key: value}.

    Commas inside brackets (`schedule.milestones=[80,120]`) do not split."""
    if extra is None:
        return {}
    if isinstance(extra, dict):
        return {str(k): str(v) for k, v in extra.items()}
    items: list[str] = []
    if isinstance(extra, (list, tuple)):
        items = [str(item) for item in extra]
    else:
        text, depth, start = str(extra).strip(), 0, 0
        if text in ("", "default"):
            return {}
        for index, char in enumerate(text):
            depth += char in "[{("
            depth -= char in "]})"
            if char == "," and depth == 0:
                items.append(text[start:index])
                start = index + 1
        items.append(text[start:])
    overrides = {}
    for item in items:
        key, sep, value = item.strip().lstrip("+~").partition("=")
        if sep:
            overrides[key] = value
    return overrides


def is_finite_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class Run:
    """One run folder: who it is (from meta, else the path), how it ended, and its metrics."""

    path: Path
    dataset: str
    model: str
    optim: str
    extra: str
    seed: int
    summary: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    damaged: dict[str, str] = field(default_factory=dict)   # file name -> what is wrong with it
    results: Path | None = None     # the folder holding runs/, for paths shown relative to it

    @cached_property
    def records(self) -> list[dict]:
        records, why = check_jsonl(self.path / "metrics.jsonl")
        if why:
            self.damaged["metrics.jsonl"] = why
        return records

    @property
    def name(self) -> str:
        """The folder as shown to a reader: relative to the results folder it was read from."""
        if self.results is not None:
            try:
                return str(self.path.relative_to(self.results))
            except ValueError:
                pass
        return str(self.path)

    @property
    def meta(self) -> dict:
        meta = self.config.get("meta")
        return meta if isinstance(meta, dict) else {}

    @property
    def commits(self) -> list[tuple[str, str]]:
        """(commit, the epochs it trained, as text) for each commit that trained the run, in
        order: the `commits` list ({commit, epochs: [first, last]}) of summary.json, else of
        config.yaml's meta; else the one `meta.git_commit` of a run that predates the list."""
        for listed in (self.summary.get("commits"), self.meta.get("commits")):
            found = [(item["commit"], _epochs_text(item.get("epochs")))
                     for item in (listed if isinstance(listed, list) else [])
                     if isinstance(item, dict) and isinstance(item.get("commit"), str)]
            if found:
                return found
        commit = self.meta.get("git_commit")
        return [(commit, "?")] if isinstance(commit, str) else []

    @property
    def mixed_commits(self) -> bool:
        """Trained by more than one commit (resumed under other code)."""
        return len({commit for commit, _ in self.commits}) > 1

    @cached_property
    def metrics(self) -> pd.DataFrame:
        """One row per epoch (scalar columns only), sorted by epoch; empty if nothing logged."""
        rows = [{k: v for k, v in r.items() if not isinstance(v, (dict, list))} for r in self.records]
        frame = pd.DataFrame(rows)
        if frame.empty or "epoch" not in frame:
            return pd.DataFrame()
        frame = frame.apply(pd.to_numeric, errors="coerce")
        return frame.dropna(subset=["epoch"]).drop_duplicates("epoch", keep="last").sort_values("epoch")

    @property
    def overrides(self) -> dict[str, str]:
        return split_overrides(self.extra)

    @property
    def final(self) -> dict:
        """The last epoch's metrics: summary.json's `final`, else the last jsonl line."""
        final = self.summary.get("final")
        if isinstance(final, dict) and final:
            return final
        return self.records[-1] if self.records else {}

    @property
    def best(self) -> dict:
        best = self.summary.get("best")
        return best if isinstance(best, dict) else {}

    @property
    def status(self) -> str:
        """completed | diverged | running | interrupted | failed | incomplete (no summary.json)."""
        status = str(self.summary.get("status", "incomplete"))
        if status not in STATUS_RANK or status == "damaged":
            status = "incomplete"
        if status == "completed" and self.cut_short:
            return "damaged"
        if status == "completed" and self._nonfinite_loss():
            return "diverged"
        return status

    @property
    def cut_short(self) -> str:
        """Why a completed run's history is partial (metrics.jsonl holds fewer epochs than its
        summary.json claims), or "": such a run is listed as damaged, never counted or drawn."""
        claimed = self.summary.get("epochs_done", self.summary.get("epochs"))
        if not isinstance(claimed, int) or isinstance(claimed, bool):
            return ""
        logged = {r["epoch"] for r in self.records
                  if isinstance(r.get("epoch"), int) and 1 <= r["epoch"] <= claimed}
        if len(logged) >= claimed:
            return ""
        return (f"holds {len(logged)} of the {claimed} epochs its completed summary.json "
                "claims; the run is not counted")

    @property
    def data_content(self) -> str | None:
        """The fingerprint of the data files the run read (`identity.data.content` of
        summary.json, else of config.yaml's meta); None in a run from before it was recorded."""
        for identity in (self.summary.get("identity"), self.meta.get("identity")):
            data = identity.get("data") if isinstance(identity, dict) else None
            content = data.get("content") if isinstance(data, dict) else None
            if isinstance(content, str) and content:
                return content
        return None

    def _nonfinite_loss(self) -> bool:
        final = self.final
        return any(key in final and not is_finite_number(final[key])
                   for key in ("train_loss", "test_loss"))

    @property
    def command(self) -> str | None:
        for command in (self.summary.get("command"), self.meta.get("command")):
            if isinstance(command, str) and command.strip():
                return command
        return None

    @property
    def progress(self) -> str:
        done = self.summary.get("epochs_done", len(self.records))
        total = self.summary.get("epochs", "?")
        return f"{done}/{total} epochs"


def _epochs_text(epochs: object) -> str:
    """`[3, 7]` -> "epochs 3-7"; anything else, as it is."""
    if isinstance(epochs, list) and len(epochs) == 2:
        return f"epochs {epochs[0]}-{epochs[1]}"
    return "?" if epochs is None else f"epochs {epochs}"


def _identity_from_path(run_dir: Path, runs_root: Path) -> dict:
    parts = run_dir.relative_to(runs_root).parts
    if len(parts) != 5 or not parts[4].startswith("seed"):
        return {}
    return {"dataset": parts[0], "model": parts[1], "optim": parts[2], "extra": parts[3],
            "seed": parts[4][len("seed"):]}


# summary.json keeps Python's reading of a bare NaN: a NaN final loss reads as diverged, which
# is never a better number than the run's own (metrics.jsonl is strict: a NaN line is damage).
RUN_FILES = {"summary.json": json.loads, "config.yaml": yaml.safe_load}


def load_run(run_dir: Path, runs_root: Path) -> Run | None:
    """A Run for `run_dir`, or None if the folder is not one (no files we know, bad layout).
    Damaged files are noted in `Run.damaged`, never raised."""
    if not any((run_dir / name).exists() for name in ("metrics.jsonl", *RUN_FILES)):
        return None
    read, damaged = {}, {}
    for name, parse in RUN_FILES.items():
        read[name], why = check_mapping(run_dir / name, parse)
        if why:
            damaged[name] = why
    config = read["config.yaml"] or {}
    identity = _identity_from_path(run_dir, runs_root)
    meta = config.get("meta")
    if meta is not None and not isinstance(meta, dict):
        damaged["config.yaml"] = f"its meta block is a {type(meta).__name__}, not a mapping"
    for key in ("dataset", "model", "optim", "extra", "seed"):
        if isinstance(meta, dict) and meta.get(key) not in (None, ""):
            identity[key] = meta[key]
    extra = identity.get("extra", "default")
    if isinstance(extra, (list, tuple)):
        extra = ",".join(map(str, extra)) or "default"
    try:
        seed = int(identity["seed"])
        names = [identity[key] for key in ("dataset", "model", "optim")]
    except (KeyError, TypeError, ValueError):
        return None
    run = Run(path=run_dir, dataset=str(names[0]), model=str(names[1]), optim=str(names[2]),
              extra=str(extra), seed=seed, summary=read["summary.json"] or {}, config=config,
              damaged=damaged, results=runs_root.parent)
    run.records  # noqa: B018 -- read now, so a damaged metrics.jsonl is known before rendering
    if run.summary.get("status") == "completed" and run.cut_short:
        known = run.damaged.get("metrics.jsonl")
        run.damaged["metrics.jsonl"] = "; ".join(filter(None, [known, run.cut_short]))
    return run


class Runs(list):
    """load_runs' answer: the runs (a list of Run), and `damaged`: every damaged file found
    under runs/, as (path relative to the results folder, what is wrong)."""

    damaged: list[tuple[str, str]]
    contents: dict   # cell -> the data its runs were made on (.cells.cell_content), as asked


def load_runs(results_dir: Path) -> Runs:
    """Every run under `<results_dir>/runs/`, in path order. A missing folder gives []. A folder
    with run files that cannot be told apart as a run is listed as damaged."""
    found = Runs()
    found.damaged, found.contents = [], {}
    runs_root = Path(results_dir) / "runs"
    if not runs_root.is_dir():
        return found
    run_dirs = sorted({p.parent for name in ("metrics.jsonl", *RUN_FILES)
                       for p in runs_root.rglob(name)})
    for run_dir in run_dirs:
        run = load_run(run_dir, runs_root)
        if run is None:
            found.damaged.append((str(run_dir.relative_to(results_dir)), "not a run folder: no "
                                  "readable meta block and not runs/<dataset>/<model>/<optim>/"
                                  "<extra>/seed<k>"))
            continue
        found.append(run)
        found.damaged += [(f"{run.name}/{name}", why) for name, why in run.damaged.items()]
    return found
