"""The verdicts as files and lines: `<out>/tables/verdicts.{md,csv,json}` (one JSON object per
claim, its comparisons nested), `verdicts_paper.csv` (our mean against each number the paper's
tables print), and the short lines each artifact's own target prints. Every number is rounded
to 6 significant digits and nothing depends on the clock or the folder: the same runs give the
same bytes."""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from pathlib import Path

from .grids import Artifact, label
from .output import write_atomic
from .pairs import pair_seeds
from .runs import Run
from .stats import agreement
from .verdicts import (
    METRICS,
    ClaimResult,
    ClaimsError,
    Resolver,
    Result,
    evaluate,
    load_claims,
    protocol_notes,
)

HOW_TO_READ = (
    "How to read: each claim is the paper's sentence, checked on the runs present, paired by "
    "seed. effect: the mean over seeds of the paired difference (the sign the paper predicts "
    "is in the comparison's words; for a claim, the deciding comparison's); CI: its 95% "
    "percentile bootstrap interval; p: the paired t test, Holm-adjusted within the claim. "
    "holds / contradicted: the CI excludes 0 on the paper's / the other side and p < 0.05; "
    "inconclusive: not so (seeds: how many would give 80% power); untestable: too few paired "
    "seeds (reason). A claim holds when all its comparisons hold and is contradicted when any "
    "is. docs/PROTOCOL.md, \"Statistics\", has the rules.")


def _round(value):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return float(f"{value:.6g}") if isinstance(value, float) else value


def _text(value, digits: int = 4) -> str:
    value = _round(value)
    return "—" if value is None else f"{value:.{digits}g}"


def comparison_record(result: Result) -> dict:
    effect = result.effect
    return {"comparison": result.comparison.label, "metric": result.comparison.metric,
            "n": effect.n if effect else 0, "effect": _round(effect.mean) if effect else None,
            "ci": [_round(effect.low), _round(effect.high)] if effect else [None, None],
            "p": _round(effect.p) if effect else None, "p_holm": _round(result.p_holm),
            "verdict": result.verdict, "reason": result.reason,
            "seeds_for_power": result.seeds, "power_basis": result.power_basis or None,
            "protocol": result.protocol}


def claim_record(claim: ClaimResult) -> dict:
    deciding = comparison_record(claim.decided_by) if claim.decided_by else {}
    return {"id": claim.claim["id"], "artifact": claim.claim["artifact"],
            "claim": claim.claim["quote"],
            "reading": " ".join(str(claim.claim.get("reading") or "").split()) or None,
            "scale": claim.scale, "n": deciding.get("n", 0), "effect": deciding.get("effect"),
            "ci": deciding.get("ci", [None, None]), "p": deciding.get("p_holm"),
            "verdict": claim.verdict, "reason": claim.reason,
            "seeds_for_power": claim.seeds_for_power, "decided_by": deciding.get("comparison"),
            "protocol": claim.protocol,
            "comparisons": [comparison_record(r) for r in claim.results]}


def _word(claim: ClaimResult) -> str:
    return f"{claim.verdict} (quick)" if claim.scale == "quick" else claim.verdict


def paper_rows(artifacts: dict[str, Artifact], runs: list[Run], paper: dict,
               data: dict) -> list[dict]:
    """One row per number the paper's Tables 1-4 print for a trained cell: our mean and 95% t
    interval over the seeds present, whether the paper's value is in it, TOST against the
    documented margin, and the result: agrees, differs or cannot tell."""
    rows = []
    alpha = data["settings"]["alpha"]
    for table, spec in (data.get("paper_numbers") or {}).items():
        artifact = artifacts.get(table)
        values = ((paper.get(table) or {}).get("values")) or {}
        if artifact is None:
            continue
        resolver = Resolver(artifact, runs, artifact.plot_seeds, data["settings"])
        protocol = (data.get("protocol") or {}).get(table) or {}
        for optim in artifact.optims:
            for column, printed in (values.get(optim) or {}).items():
                if not (isinstance(printed, dict)
                        and isinstance(printed.get("mean"), (int, float))):
                    continue
                try:
                    rows.append(_paper_row(table, optim, column, printed, spec, artifact,
                                           resolver, runs, protocol, data, alpha))
                except ClaimsError:     # no such cell in this grid (--dataset digits)
                    continue
    return rows


def _paper_row(table, optim, column, printed, spec, artifact, resolver, runs, protocol, data,
               alpha) -> dict:
    metric = spec["metric"][column] if isinstance(spec["metric"], dict) else spec["metric"]
    model = column if column in artifact.models else artifact.models[0]
    cell = resolver.cell(optim, {"model": model})
    done = pair_seeds(runs, [cell], artifact.plot_seeds,
                      lambda run: METRICS[metric](run, data["settings"]))
    values = done.columns[0]
    notes = {note for (run,) in done.runs
             for note in protocol_notes(run, protocol, artifact.scale)}
    std = printed.get("std")
    margin = 2.0 * float(std) if spec["margin"] == "two_sigma" and std is not None \
        else float(spec["margin"]) if spec["margin"] != "two_sigma" else math.nan
    found = agreement(values, float(printed["mean"]), margin)
    note = ""
    if found.n < 2:
        result, note = "cannot tell", f"{found.n} seed(s), need 2"
    elif notes:
        result = "cannot tell"
        note = f"protocol differs ({'; '.join(sorted(notes))}): not a test of the paper's number"
    elif found.tost_p < alpha:
        result = "agrees"
    elif not found.inside:
        result = "differs"
    else:
        result, note = "cannot tell", "neither equivalent within the margin nor outside the CI"
    return {"table": table, "scale": artifact.scale, "row": label(optim), "column": column,
            "n": found.n, "mean": _round(found.mean), "ci_low": _round(found.low),
            "ci_high": _round(found.high), "paper": float(printed["mean"]),
            "margin": _round(margin), "paper_in_ci": found.inside,
            "tost_p": _round(found.tost_p), "result": result, "note": note}


def to_json(claims: list[ClaimResult]) -> str:
    return json.dumps([claim_record(c) for c in claims], indent=2, ensure_ascii=False) + "\n"


def _csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return buffer.getvalue()


def to_csv(claims: list[ClaimResult]) -> str:
    """One row per comparison, with its claim's id, artifact, scale and verdict."""
    rows = []
    for claim in claims:
        for record in claim_record(claim)["comparisons"]:
            low, high = record.pop("ci")
            rows.append({"id": claim.claim["id"], "artifact": claim.claim["artifact"],
                         "scale": claim.scale, "claim_verdict": claim.verdict, **record,
                         "ci_low": low, "ci_high": high,
                         "protocol": "; ".join(record["protocol"])})
    return _csv(rows)


def _cells(*values) -> str:
    return "| " + " | ".join(str(v).replace("|", "\\|") for v in values) + " |"


def _effect_text(record: dict) -> str:
    low, high = record["ci"]
    if record["effect"] is None:
        return "—"
    return f"{_text(record['effect'])} [{_text(low)}, {_text(high)}]"


def to_markdown(claims: list[ClaimResult], paper: list[dict], scales: set[str]) -> str:
    banner = ("QUICK SCALE (CPU-sized runs, one seed): these verdicts test the code path, not "
              "the paper. " if "quick" in scales else "")
    lines = ["# Verdicts: the claims of the paper's section 4, computed from the runs", "",
             banner + HOW_TO_READ, "",
             _cells("claim", "artifact", "verdict", "n", "effect [95% CI]", "p (Holm)",
                    "seeds for 80% power", "reason"), "|---" * 8 + "|"]
    records = [claim_record(c) for c in claims]
    for claim, record in zip(claims, records, strict=True):
        reason = record["reason"] + (f" (protocol differs: {'; '.join(record['protocol'])})"
                                     if record["protocol"] else "")
        lines.append(_cells(record["id"], record["artifact"], f"**{_word(claim)}**",
                            record["n"], _effect_text(record), _text(record["p"], 3),
                            record["seeds_for_power"] or "", reason))
    lines += ["", "## Each claim's comparisons", ""]
    for record in records:
        lines += [f"### {record['id']} ({record['artifact']}): {record['verdict']}", "",
                  f"> {record['claim']}", ""]
        if record["reading"]:
            lines += [f"Read as: {record['reading']}", ""]
        lines += [_cells("comparison", "n", "effect [95% CI]", "p", "p (Holm)", "verdict",
                         "seeds for 80% power", "reason"), "|---" * 8 + "|"]
        for item in record["comparisons"]:
            power = (f"{item['seeds_for_power']} ({item['power_basis']})"
                     if item["seeds_for_power"] else item["power_basis"] or "")
            lines.append(_cells(item["comparison"], item["n"], _effect_text(item),
                                _text(item["p"], 3), _text(item["p_holm"], 3), item["verdict"],
                                power, item["reason"]))
        lines.append("")
    lines += ["## Against the paper's numbers", "",
              "Our mean over the seeds present, its 95% t interval, and a TOST equivalence test "
              "(two one-sided t tests) of |ours − paper| < margin: twice the paper's printed ± "
              "(Tables 1-2) or 1 point (Tables 3-4). agrees: TOST p < 0.05; differs: the "
              "paper's value lies outside our interval; cannot tell: neither, fewer than 2 "
              "seeds, or runs whose protocol differs from the paper's.", ""]
    if paper:
        lines += [_cells("table", "row", "column", "n", "ours [95% CI]", "paper", "margin",
                         "paper in CI", "TOST p", "result", "note"), "|---" * 11 + "|"]
        for row in paper:
            ours = f"{_text(row['mean'])} [{_text(row['ci_low'])}, {_text(row['ci_high'])}]"
            inside = {True: "yes", False: "no", None: "—"}[row["paper_in_ci"]]
            lines.append(_cells(row["table"], row["row"], row["column"], row["n"], ours,
                                row["paper"], _text(row["margin"], 3), inside,
                                _text(row["tost_p"], 3), row["result"], row["note"]))
    else:
        lines.append("No table of the paper among the artifacts checked.")
    return "\n".join(lines) + "\n"


def render_verdicts(artifacts: dict[str, Artifact], runs: list[Run], out_dir: Path,
                    paper: dict, stem: str = "verdicts") -> list[Path]:
    """Write `<out_dir>/tables/<stem>.{md,csv,json}` and `<stem>_paper.csv`."""
    data = load_claims()
    claims = evaluate(artifacts, runs, data)
    rows = paper_rows(artifacts, runs, paper, data)
    scales = {a.scale for a in artifacts.values()}
    folder = Path(out_dir) / "tables"
    return [write_atomic(folder / f"{stem}.md", to_markdown(claims, rows, scales)),
            write_atomic(folder / f"{stem}.csv", to_csv(claims)),
            write_atomic(folder / f"{stem}.json", to_json(claims)),
            write_atomic(folder / f"{stem}_paper.csv", _csv(rows))]


def verdict_lines(name: str, artifact: Artifact, runs: list[Run]) -> list[str]:
    """What `report.py <artifact>` prints under the artifact: one line per claim (or one line
    saying why the claims file cannot be read)."""
    try:
        claims = evaluate({name: artifact}, runs, load_claims(), only=(name,))
    except ClaimsError as error:
        return [f"    verdicts not computed: {error}"]
    lines = []
    for claim in claims:
        record = claim_record(claim)
        effect = f" effect {_effect_text(record)}, p {_text(record['p'], 3)};" \
            if record["effect"] is not None else ""
        lines.append(f"    verdict {claim.claim['id']}: {_word(claim)} (n={record['n']};"
                     f"{effect} {record['reason']})")
    return lines


def report_verdicts(runs: list[Run], out_dir: Path, paper: dict, dataset: str | None,
                    seeds: tuple[int, ...] | None, scale: str, run_args: str | None = None,
                    only: tuple[str, ...] = ()) -> int:
    """`report.py verdicts`: every claim's artifact, adapted as its own target would be (the
    same dataset, seeds, scale and --run-args); writes the files and prints where. `only`: the
    artifacts named beside `verdicts` (`report.py verdicts table4 --run-args epochs=10`, for
    runs made with other overrides than the rest): their claims alone, written to
    `verdicts_<artifact>...` so that a full check is never overwritten by a partial one.
    Returns 1 if the claims file cannot be read (one line says why), else 0."""
    from .grids import ARTIFACTS

    extra = {} if run_args is None else {"run_args": run_args}
    try:
        names = [name for name in dict.fromkeys(c["artifact"] for c in load_claims()["claims"])
                 if name in ARTIFACTS]
        chosen = [name for name in names if name in only] or names
        artifacts = {name: ARTIFACTS[name].adapt(dataset, seeds, scale, **extra)
                     for name in chosen}
        stem = "verdicts" if chosen == names else "_".join(["verdicts", *chosen])
        paths = render_verdicts(artifacts, runs, out_dir, paper, stem)
    except ClaimsError as error:
        print(f"[verdicts] {error}. Fix the file (scripts/reports/claims.yaml).", file=sys.stderr)
        return 1
    print("[verdicts] the paper's claims, checked" + ("  [QUICK SCALE]" if scale == "quick"
                                                       else ""))
    for path in paths:
        print(f"    wrote {path}")
    return 0
