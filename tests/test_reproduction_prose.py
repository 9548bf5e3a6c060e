"""The published reproduction's prose quotes only what its generated tables hold: every number
with two or more decimals in docs/reproduction/REPRODUCTION.md appears in a rendered table, and
every verdict it names (`claim-id`: **word**) is the word the verdicts file computed.
tests/test_reproduction.py checks that the tables themselves re-render byte for byte, so a
change of code or runs that moves a quoted number or verdict fails here."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

REPRO = Path(__file__).resolve().parent.parent / "docs" / "reproduction"
PAGE = REPRO / "REPRODUCTION.md"
TABLE_DIRS = (REPRO / "tables", REPRO / "longer" / "tables")
NUMBER = re.compile(r"(?<![\w.])[-+−]?(\d+\.\d{2,})(?!\d|\.\d)")  # not versions (2.14.1)
VERDICT = re.compile(r"`([a-z0-9][a-z0-9-]+)`: \*\*(holds|contradicted|inconclusive|untestable)\*\*")

pytestmark = pytest.mark.skipif(not PAGE.exists(), reason="no published reproduction")


def _prose() -> str:
    """The page without code blocks and link targets (paths and commands are not quotes)."""
    text = re.sub(r"```.*?```", "", PAGE.read_text(), flags=re.S)
    return re.sub(r"\]\([^)]*\)", "]", text)


def _tables() -> str:
    return "\n".join(path.read_text() for folder in TABLE_DIRS if folder.is_dir()
                     for path in sorted(folder.iterdir()) if path.suffix in (".md", ".csv"))


def test_every_quoted_number_is_in_a_generated_table():
    tables = _tables()
    quoted = {match.group(1) for match in NUMBER.finditer(_prose())}
    assert quoted, "the page quotes no number: the check would be empty"
    missing = sorted(number for number in quoted if number not in tables)
    assert not missing, f"REPRODUCTION.md quotes numbers no generated table holds: {missing}"


def test_every_named_verdict_is_the_computed_one():
    computed: dict[str, str] = {}
    for folder in TABLE_DIRS:
        for path in sorted(folder.glob("verdicts*.json")):
            computed.update({claim["id"]: claim["verdict"] for claim in json.loads(path.read_text())})
    named = VERDICT.findall(_prose())
    assert named, "the page names no computed verdict"
    wrong = [(claim, word, computed.get(claim)) for claim, word in named
             if computed.get(claim) != word]
    assert not wrong, f"verdicts named in REPRODUCTION.md differ from the computed ones: {wrong}"
