"""The documents' fenced blocks, as written, so tests run and compare what users read."""

from __future__ import annotations

from pathlib import Path


def fenced(path: Path, language: str, containing: str) -> str:
    """The body of the fenced block of that language in `path` that contains `containing`."""
    for block in path.read_text().split(f"```{language}\n")[1:]:
        body = block.split("```", 1)[0]
        if containing in body:
            return body
    raise AssertionError(f"no ```{language} block in {path.name} contains {containing!r}")


def table(path: Path, header: str) -> list[list[str]]:
    """The cells of each row of the Markdown table whose header line starts with `header`."""
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2 :]:  # after the header and its |---| line
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows
