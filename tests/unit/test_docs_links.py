"""The documents' links between each other hold: every relative link names a file that exists and, with
`#anchor`, a heading of that page as GitHub renders its anchor."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCUMENTS = [
    REPO / "README.md",
    REPO / "CHANGELOG.md",
    REPO / "UPGRADING.md",
    REPO / "bench" / "README.md",
    REPO / "charts" / "sandbox-operator" / "README.md",
    *sorted((REPO / "docs").glob("*.md")),
]
#: A Markdown link's target, `[text](target)`.
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`[^`\n]*`")


def prose(path: Path) -> str:
    """The page without its code: a link-like text in a code block or span is not a link."""
    return CODE_SPAN.sub("", FENCE.sub("", path.read_text()))


def anchors(path: Path) -> set[str]:
    """The anchors GitHub gives a page's headings: lowercased, punctuation dropped, spaces as hyphens."""
    headings = [
        line.lstrip("#").strip() for line in FENCE.sub("", path.read_text()).splitlines() if line[:1] == "#"
    ]
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def relative_links(path: Path) -> list[str]:
    return [target for target in LINK.findall(prose(path)) if not re.match(r"[a-z]+:", target)]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(REPO)))
def test_every_relative_link_leads_to_a_page_and_heading_that_exist(document: Path) -> None:
    broken = []
    for target in relative_links(document):
        file, _, anchor = target.partition("#")
        linked = (document.parent / file).resolve() if file else document
        if not linked.exists():
            broken.append(f"{target}: no {linked.relative_to(REPO)}")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no heading #{anchor} in {linked.relative_to(REPO)}")
    assert not broken, f"{document.relative_to(REPO)}: " + "; ".join(broken)
