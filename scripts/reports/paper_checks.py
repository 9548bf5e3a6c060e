"""The paper against itself and against our runs.

- paper_own: a table claim's comparisons applied to the paper's own printed numbers
  (paper_results.yaml): how many of them the paper's table itself supports ("1 of 5").
- paper_rows: our seeds against each number the paper's Tables 1-4 print. A single printed run
  (Tables 3-4) is checked against our 95% prediction interval for one new run; a printed
  mean ± std over the paper's 5 runs (Tables 1-2), by Welch's test and a Welch TOST within the
  documented margin. Both need the verdicts' minimum seed count, and both carry the protocol
  they were computed on, as the verdicts do."""

from __future__ import annotations

from functools import cache

from .claim_metrics import METRICS
from .formatting import load_paper
from .grids import Artifact, label
from .pairs import pair_seeds
from .runs import Run
from .stats import prediction_interval, welch_against
from .verdict_rules import protocol_notes


@cache
def _paper() -> dict:
    """The paper's printed numbers (formatting.load_paper: a missing file warns once, gives {})."""
    return load_paper()


def _column(spec: dict, table: dict, metric: str, model: str) -> str | None:
    """The paper table's column holding `metric` for `model`."""
    if model in (table.get("columns") or []):
        return model
    chosen = spec["metric"]
    if isinstance(chosen, dict):
        return next((column for column, name in chosen.items() if name == metric), None)
    columns = table.get("columns") or []
    return columns[0] if len(columns) == 1 and chosen == metric else None


def paper_own(claim: dict, artifact: Artifact, data: dict,
              paper: dict | None = None) -> tuple[int, int] | None:
    """(k, m): k of the claim's m comparisons hold on the paper's printed means, by the same
    rule as on ours without the noise (the paper's side of the margin, strictly: a tie does not
    hold). None for a claim whose artifact prints no numbers."""
    from .verdicts import ClaimsError, Resolver, comparisons

    spec = (data.get("paper_numbers") or {}).get(artifact.name)
    table = (paper if paper is not None else _paper()).get(artifact.name) or {}
    if spec is None or not table.get("values"):
        return None
    try:
        found = comparisons(claim, Resolver(artifact, [], artifact.seeds, data["settings"]), data)
    except ClaimsError:
        return None
    held = total = 0
    for comparison in found:
        value = comparison.offset
        for cell, weight in comparison.terms:
            column = _column(spec, table, comparison.metric, cell.model)
            printed = ((table["values"].get(cell.optim) or {}).get(column) or {}).get("mean")
            if not isinstance(printed, (int, float)):
                break
            value += weight * float(printed)
        else:
            total += 1
            held += comparison.side * value > comparison.margin + 1e-9
    return (held, total) if total else None


def paper_rows(artifacts: dict[str, Artifact], runs: list[Run], paper: dict,
               data: dict) -> list[dict]:
    """One row per number the paper's Tables 1-4 print for a trained cell."""
    from .verdicts import ClaimsError, Resolver

    rows = []
    for table, spec in (data.get("paper_numbers") or {}).items():
        artifact = artifacts.get(table)
        printed_table = paper.get(table) or {}
        if artifact is None:
            continue
        resolver = Resolver(artifact, runs, artifact.plot_seeds, data["settings"])
        protocol = (data.get("protocol") or {}).get(table) or {}
        for optim in artifact.optims:
            for column, printed in ((printed_table.get("values") or {}).get(optim) or {}).items():
                if not (isinstance(printed, dict)
                        and isinstance(printed.get("mean"), (int, float))):
                    continue
                try:
                    cell = resolver.cell(optim, {"model": column if column in artifact.models
                                                 else artifact.models[0]})
                except ClaimsError:     # no such cell in this grid (--dataset digits)
                    continue
                rows.append(_row(table, optim, column, printed, spec, artifact, cell, runs,
                                 protocol, data, int(printed_table.get("runs") or 1)))
    return rows


def _row(table, optim, column, printed, spec, artifact, cell, runs, protocol, data,
         paper_runs) -> dict:
    settings = data["settings"]
    metric = spec["metric"][column] if isinstance(spec["metric"], dict) else spec["metric"]
    done = pair_seeds(runs, [cell], artifact.plot_seeds,
                      lambda run: METRICS[metric](run, settings))
    notes = sorted({note for (run,) in done.runs
                    for note in protocol_notes(run, protocol, artifact.scale)})
    mean, std = float(printed["mean"]), printed.get("std")
    alpha = float(settings["alpha"])
    if isinstance(std, (int, float)) and paper_runs > 1:
        margin = 2.0 * float(std) if spec["margin"] == "two_sigma" else float(spec["margin"])
        found = welch_against(done.columns[0], mean, float(std), paper_runs, margin)
        kind = f"Welch: ours − paper (paper n = {paper_runs})"
        result = ("agrees" if found.tost_p < alpha else "differs" if found.p < alpha
                  else "cannot tell")
    else:
        margin = None
        found = prediction_interval(done.columns[0], mean)
        kind = "prediction interval for one new run"
        result = ("cannot tell" if found.inside is None else
                  "consistent" if found.inside else "differs")
    note = "" if found.inside is not None or found.n < 2 else "no spread between our seeds"
    if found.n < settings["min_seeds"]:
        result, note = "cannot tell", f"{found.n} seed(s), need {settings['min_seeds']}"
    qualified = result if artifact.scale != "quick" else f"{result} (quick)"
    if artifact.scale != "quick":
        qualified += f" ({'proxy: ' + '; '.join(notes) if notes else 'as the paper'})"
    return {"table": table, "scale": artifact.scale, "row": label(optim), "column": column,
            "n": found.n, "asked": len(artifact.plot_seeds), "mean": found.mean,
            "interval": kind, "low": found.low, "high": found.high, "paper": mean,
            "paper_std": std, "margin": margin, "p": found.p, "tost_p": found.tost_p,
            "result": result, "qualified": qualified, "protocol": "; ".join(notes),
            "note": note}
