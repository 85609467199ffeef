"""Print the operator's line and branch coverage, as measured by the last `pytest --cov` (make test)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import coverage


def share(covered: int, total: int) -> str:
    return f"{100 * covered / total:.1f}% ({covered}/{total})"


def main() -> None:
    measured = coverage.Coverage()  # [tool.coverage] in pyproject.toml: the data file, the source
    measured.load()
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "coverage.json"
        measured.json_report(outfile=str(report))
        totals = json.loads(report.read_text())["totals"]
    lines = share(totals["covered_lines"], totals["num_statements"])
    branches = share(totals["covered_branches"], totals["num_branches"])
    print(f"coverage of operator/sandbox_operator: lines {lines}, branches {branches}")


if __name__ == "__main__":
    main()
