"""The README stays a front door: short, and every link in it and in the reference pages it sends
readers to leads to a file that exists (a moved or renamed page breaks a test, not a reader)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MAX_README_LINES = 200  # what a newcomer reads in five minutes; reference material lives in docs/
PAGES = ("README.md", "docs/SPEED.md", "docs/GPU_CHECK.md", "docs/RELIABILITY.md")
# `[text](target)` and `![alt](target)`; the target ends at the first space or closing parenthesis.
LINK = re.compile(r"\]\(([^)\s]+)\)")


def relative_links(page: Path) -> list[str]:
    """The page's link targets that point into the repository (no URL scheme, no bare anchor)."""
    targets = LINK.findall(page.read_text(encoding="utf-8"))
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, (
        f"README.md has {len(lines)} lines (at most {MAX_README_LINES}): move reference material "
        "to docs/ and link it")


@pytest.mark.parametrize("name", PAGES)
def test_relative_links_resolve(name):
    page = ROOT / name
    links = relative_links(page)
    assert links, f"{name} links nowhere: the link pattern no longer matches its links"
    missing = [t for t in links if not (page.parent / t.split("#")[0]).exists()]
    assert not missing, f"{name} links to files that do not exist: {missing}"


def test_readme_links_every_reference_page():
    linked = {(ROOT / t.split("#")[0]).resolve() for t in relative_links(README)}
    pages = sorted((ROOT / "docs").glob("*.md"))
    unlinked = [p.name for p in pages if p.resolve() not in linked]
    assert not unlinked, f"README.md does not link these pages of docs/: {unlinked}"
