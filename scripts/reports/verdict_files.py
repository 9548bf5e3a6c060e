"""The verdicts as files and lines: `<out>/tables/verdicts.{md,csv,json}` (one JSON object per
claim, its comparisons nested), `verdicts_paper.csv` (our seeds against each number the paper's
tables print), `<out>/figures/verdicts.png` (.forest), and the short lines each artifact's own
target prints. Every number is rounded to 6 significant digits and nothing depends on the clock
or the folder: the same runs give the same bytes."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from .grids import Artifact
from .paper_checks import paper_rows
from .runs import Run
from .stats import ROBUST_MIN_SEEDS, WIDE_BELOW
from .verdict_rules import ClaimResult, Result
from .verdicts import ClaimsError, evaluate, load_claims
from .writer import markdown_table, write_atomic, write_table

HOW_TO_READ = (
    "How to read: each claim is the paper's sentence, checked on the runs present, paired by "
    "seed, on the measure its reading names. verdict: the word, then the protocol it was decided "
    "on (as the paper, or proxy: each deviation, derived from the runs' configs and data). "
    "n: seeds used of seeds asked († a seed trained by more than one commit). effect: the mean "
    "paired difference (for a claim, its deciding comparison's) with its 95% t interval, the "
    "interval the paired t test implies (Welch's for comparisons across depths); below 5 seeds "
    "it is wide by nature. p: the t test against the comparison's margin, Holm-adjusted within "
    "the claim and read at the claim's level α (Pocock's level where the artifact's seeds were "
    "looked at more than once: claims.yaml `looks`). holds / contradicted: p < α with the effect on the paper's / the other side of "
    "its margin; a difference equivalent to 0 within the smallest effect of interest (TOST) "
    "decides nothing, and contradicts a margin such as \"much better\"; a seed on which the "
    "paper's favoured optimizer diverged keeps a comparison from holding. inconclusive: "
    "neither (seeds, where more seeds could decide it: how many would give 80% power at the "
    "first Holm step's level, as a range over the sd's 95% interval; for a claim, only while "
    "it is inconclusive); untestable: too few paired seeds, or a value the claim is "
    "about never run. robustness (8+ seeds): the exact sign-flip permutation p and the "
    "percentile bootstrap interval. paper's own numbers: how many of the claim's comparisons "
    "hold on the paper's printed values. docs/PROTOCOL.md, \"Statistics\", has the rules.")


def _round(value):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return float(f"{value:.6g}") if isinstance(value, float) else value


def _text(value, digits: int = 4) -> str:
    value = _round(value)
    return "—" if value is None else f"{value:.{digits}g}"


def comparison_record(result: Result) -> dict:
    effect = result.effect
    seeds = list(result.seeds) if result.seeds else None
    return {"comparison": result.comparison.label, "metric": result.comparison.metric,
            "margin": result.comparison.margin, "n": result.used, "asked": result.asked,
            "n_other": effect.n_other if effect else 0,
            "effect": _round(effect.mean) if effect else None,
            "ci": [_round(effect.low), _round(effect.high)] if effect else [None, None],
            "interval": ("Welch 95% t" if effect.n_other else "95% t") if effect else None,
            "p": _round(effect.p) if effect else None, "p_holm": _round(result.p_holm),
            "alpha": _round(result.alpha), "tost_p": _round(effect.tost_p) if effect else None,
            "perm_p": _round(effect.perm_p) if effect else None,
            "bootstrap_ci": [_round(effect.boot_low), _round(effect.boot_high)] if effect
            else [None, None],
            "verdict": result.verdict, "reason": result.reason,
            "seeds_for_power": seeds, "power_basis": result.power_basis or None,
            "protocol": result.protocol, "diverged": result.diverged, "mixed": result.mixed,
            "conflicts": result.conflicts, "warnings": result.warnings}


def _claim_seeds(claim: ClaimResult) -> list[int | None] | None:
    """The seeds that would decide every comparison still open in an inconclusive claim: the
    largest of their ranges' ends, None (more than 1000) when any end is. None for a decided
    claim (it needs no more seeds) or when no comparison has a power figure."""
    if claim.verdict != "inconclusive":
        return None
    results = claim.results
    powered = [r for r in results if r.power_basis and r.effect is not None and r.effect.sd > 0]
    if not powered:
        return None
    ends = [r.seeds or (None, None) for r in powered]
    return [None if any(end[i] is None for end in ends) else max(end[i] for end in ends)
            for i in (0, 1)]


def claim_record(claim: ClaimResult) -> dict:
    deciding = comparison_record(claim.decided_by) if claim.decided_by else {}
    power = _claim_seeds(claim)
    secondary = claim.secondary
    return {"id": claim.claim["id"], "artifact": claim.claim["artifact"],
            "claim": claim.claim["quote"],
            "reading": " ".join(str(claim.claim.get("reading") or "").split()) or None,
            "measure": sorted({r.comparison.metric for r in claim.results}),
            "scale": claim.scale, "n": deciding.get("n", 0),
            "asked": deciding.get("asked", 0), "effect": deciding.get("effect"),
            "ci": deciding.get("ci", [None, None]), "p": deciding.get("p_holm"),
            "alpha": _round(claim.alpha), "looks": list(claim.looks),
            "verdict": claim.verdict, "qualified": claim.qualified, "reason": claim.reason,
            "seeds_for_power": power, "decided_by": deciding.get("comparison"),
            "protocol": claim.protocol, "diverged": claim.diverged,
            "mixed": sorted({s for r in claim.results for s in r.mixed}),
            "conflicts": sorted({c for r in claim.results for c in r.conflicts}),
            "paper_own": list(claim.paper_own) if claim.paper_own else None,
            "secondary": None if secondary is None else {
                "measure": sorted({r.comparison.metric for r in secondary.results}),
                "verdict": secondary.verdict, "reason": secondary.reason},
            "comparisons": [comparison_record(r) for r in claim.results]}


def _columns(rows: list[dict]) -> tuple[list[str], list[list]]:
    """(header, rows) of a list of records, for the one table writer; [] when there are none."""
    header = list(rows[0]) if rows else []
    return header, [[_round(row[key]) for key in header] for row in rows]


def comparison_rows(claims: list[ClaimResult]) -> list[dict]:
    """One row per comparison, with its claim's id, artifact, scale and qualified verdict."""
    rows = []
    for claim in claims:
        for record in claim_record(claim)["comparisons"]:
            low, high = record.pop("ci")
            boot_low, boot_high = record.pop("bootstrap_ci")
            seeds = record.pop("seeds_for_power") or [None, None]
            rows.append({"id": claim.claim["id"], "artifact": claim.claim["artifact"],
                         "scale": claim.scale, "claim_verdict": claim.qualified, **record,
                         "ci_low": low, "ci_high": high, "bootstrap_low": boot_low,
                         "bootstrap_high": boot_high, "seeds_low": seeds[0],
                         "seeds_high": seeds[1],
                         **{key: "; ".join(map(str, record[key])) for key in
                            ("protocol", "diverged", "mixed", "conflicts", "warnings")}})
    return rows


def _effect_text(record: dict) -> str:
    low, high = record["ci"]
    if record["effect"] is None:
        return "—"
    wide = " (n < 5: wide by nature)" if 0 < record["n"] < WIDE_BELOW else ""
    return f"{_text(record['effect'])} [{_text(low)}, {_text(high)}]{wide}"


def _n_text(record: dict) -> str:
    used = f"{record['n']}" + (f" and {record['n_other']}" if record.get("n_other") else "")
    mixed = f" (†: seed {', '.join(map(str, record['mixed']))})" if record["mixed"] else ""
    return f"{used} of {record['asked']}{mixed}"


def _seeds_text(seeds) -> str:
    if not seeds:
        return ""
    low, high = seeds
    return f"{low or '>1000'}-{high or '>1000'}" if low != high else str(low or ">1000")


def _robust_text(item: dict) -> str:
    if item["n"] < ROBUST_MIN_SEEDS or item["perm_p"] is None:
        return "—"
    low, high = item["bootstrap_ci"]
    return f"perm p {_text(item['perm_p'], 3)}; boot [{_text(low)}, {_text(high)}]"


SUMMARY_HEADER = ["claim", "verdict (protocol)", "measure", "n used of asked",
                  "effect [95% t interval]", "p (Holm)", "seeds for 80% power",
                  "paper's own numbers", "secondary measure", "diverged / conflicts", "reason"]


def _claim_row(record: dict) -> list[str]:
    own = record["paper_own"]
    secondary = record["secondary"]
    rests = "; ".join(filter(None, [
        f"diverged: {'; '.join(record['diverged'])}" if record["diverged"] else "",
        f"conflicting folders, not used: {'; '.join(record['conflicts'])}"
        if record["conflicts"] else ""]))
    return [record["id"], f"**{record['verdict']}** "
            f"{record['qualified'][len(record['verdict']):].strip()}",
            ", ".join(record["measure"]), _n_text(record), _effect_text(record),
            f"{_text(record['p'], 3)} (α {_text(record['alpha'], 3)})",
            _seeds_text(record["seeds_for_power"]), f"{own[0]} of {own[1]}" if own else "—",
            f"{secondary['verdict']} ({', '.join(secondary['measure'])})" if secondary else "—",
            rests or "—", record["reason"]]


def to_markdown(records: list[dict], paper: list[dict], scales: set[str]) -> str:
    banner = ("QUICK SCALE (CPU-sized runs, one seed): these verdicts test the code path, not "
              "the paper. " if "quick" in scales else "")
    lines = ["# Verdicts: the claims of the paper's section 4, computed from the runs", "",
             banner + HOW_TO_READ, ""]
    lines += markdown_table(SUMMARY_HEADER, [_claim_row(r) for r in records], aligned=False)
    lines += ["", "## Each claim's comparisons", ""]
    for record in records:
        lines += _claim_section(record)
    return "\n".join(lines + _paper_section(paper)) + "\n"


def _claim_section(record: dict) -> list[str]:
    lines = [f"### {record['id']} ({record['artifact']}): {record['qualified']}", "",
             f"> {record['claim']}", ""]
    if record["reading"]:
        lines += [f"Read as: {record['reading']}", ""]
    header = ["comparison", "n used of asked", "effect [95% t interval]", "p", "p (Holm)",
              "TOST p (± SESOI)", "robustness", "verdict", "seeds for 80% power", "reason"]
    rows = []
    for item in record["comparisons"]:
        power = (f"{_seeds_text(item['seeds_for_power'])} ({item['power_basis']})"
                 if item["seeds_for_power"] else item["power_basis"] or "")
        reason = "; ".join(filter(None, [item["reason"], *item["warnings"]]))
        rows.append([item["comparison"], _n_text(item), _effect_text(item),
                     _text(item["p"], 3), _text(item["p_holm"], 3), _text(item["tost_p"], 3),
                     _robust_text(item), item["verdict"], power, reason])
    return lines + markdown_table(header, rows, aligned=False) + [""]


def _paper_section(paper: list[dict]) -> list[str]:
    lines = ["## Against the paper's numbers", "",
             "A single printed run (Tables 3-4) against our 95% prediction interval for one new "
             "run (consistent: inside; differs: outside). A printed mean ± std over the paper's 5 "
             "runs (Tables 1-2) by Welch's test of ours − paper (differs: p < 0.05) and a Welch "
             "TOST within twice the printed ± (agrees: p < 0.05). Fewer than 3 seeds: cannot "
             "tell. Each result carries the protocol it was computed on.", ""]
    if not paper:
        return lines + ["No table of the paper among the artifacts checked."]
    header = ["table", "row", "column", "n used of asked", "ours", "interval", "paper", "p",
              "TOST p", "result (protocol)", "note"]
    rows = []
    for row in paper:
        interval = f"{row['interval']} [{_text(row['low'])}, {_text(row['high'])}]"
        printed = f"{row['paper']}" + (f" ± {row['paper_std']}" if row["paper_std"] else "")
        rows.append([row["table"], row["row"], row["column"], f"{row['n']} of {row['asked']}",
                     _text(row["mean"]), interval, printed, _text(row["p"], 3),
                     _text(row["tost_p"], 3), row["qualified"], row["note"]])
    return lines + markdown_table(header, rows, aligned=False)


def render_verdicts(artifacts: dict[str, Artifact], runs: list[Run], out_dir: Path,
                    paper: dict, stem: str = "verdicts") -> list[Path]:
    """Write `<out_dir>/tables/<stem>.{md,tex,csv,json}` (tex: the claims' summary table; csv:
    one row per comparison), `<stem>_paper.csv` and the forest plots under `<out_dir>/figures`."""
    from .forest import forest_plot

    data = load_claims()
    claims = evaluate(artifacts, runs, data)
    records = [claim_record(c) for c in claims]
    rows = paper_rows(artifacts, runs, paper, data)
    scales = {a.scale for a in artifacts.values()}
    folder = Path(out_dir) / "tables"
    markdown = folder / f"{stem}.md"
    write_atomic(markdown, to_markdown(records, rows, scales))
    written = [markdown]
    written += write_table(folder / stem, SUMMARY_HEADER, [_claim_row(r) for r in records],
                           HOW_TO_READ, formats=("tex",), title="Verdicts")
    written += write_table(folder / stem, *_columns(comparison_rows(claims)), formats=("csv",))
    json_path = folder / f"{stem}.json"
    write_atomic(json_path, json.dumps(records, indent=2, ensure_ascii=False) + "\n")
    written += [json_path]
    written += write_table(folder / f"{stem}_paper", *_columns(rows), formats=("csv",))
    return written + forest_plot(claims, data, Path(out_dir) / "figures" / stem)


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
        lines.append(f"    verdict {claim.claim['id']}: {claim.qualified} (n={_n_text(record)};"
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
    from .registry import artifacts

    known = artifacts()

    extra = {} if run_args is None else {"run_args": run_args}
    try:
        names = [name for name in dict.fromkeys(c["artifact"] for c in load_claims()["claims"])
                 if name in known]
        chosen = [name for name in names if name in only] or names
        artifacts = {name: known[name].adapt(dataset, seeds, scale, **extra)
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
