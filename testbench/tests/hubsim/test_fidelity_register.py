"""docs/hub-fidelity.md stays true: its rows name tests that exist, and hubsim cites only its rows."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
REGISTER = ROOT / "docs" / "hub-fidelity.md"
HUBSIM = ROOT / "testbench" / "sandbox_testbench" / "hubsim"
#: The operator's tests and the test bench's own.
TEST_FILES = [*(ROOT / "tests").rglob("test_*.py"), *(ROOT / "testbench" / "tests").rglob("test_*.py")]


def _rows() -> dict[str, str]:
    """Row id -> the row's text."""
    rows = {}
    for line in REGISTER.read_text().splitlines():
        match = re.match(r"\| (F\d+) \|", line)
        if match:
            rows[match.group(1)] = line
    return rows


def _test_functions() -> set[str]:
    names = set()
    for path in TEST_FILES:
        names |= set(re.findall(r"^def (test_\w+)", path.read_text(), flags=re.MULTILINE))
    return names


def test_rows_are_numbered_in_order_and_each_has_a_source_and_a_test() -> None:
    rows = _rows()
    assert list(rows) == [f"F{n}" for n in range(1, len(rows) + 1)]
    for row_id, line in rows.items():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert len(cells) == 4 and all(cells), f"{row_id}: behaviour, source and test must all be filled"


#: Named by the register but written on another branch (the private Space edge, F37).
ELSEWHERE = {"test_edge"}


def test_every_test_the_register_names_exists() -> None:
    existing = _test_functions() | {path.stem for path in TEST_FILES}
    for row_id, line in _rows().items():
        tests_cell = line.strip("|").split("|")[3]
        tests_cell = re.sub(r"\[test_\w+\]", "", tests_cell)  # cassette names, not our tests
        missing = set(re.findall(r"\b(test_\w+)", tests_cell)) - existing - ELSEWHERE
        assert not missing, f"{row_id} names tests that do not exist: {sorted(missing)}"


def test_hubsim_cites_only_rows_that_exist() -> None:
    rows = set(_rows())
    cited = set()
    for path in HUBSIM.glob("*.py"):
        for group in re.findall(r"fidelity: (F\d+(?:, F\d+)*)", path.read_text()):
            cited |= set(group.split(", "))
    assert cited, "hubsim cites no register row"
    assert cited <= rows, f"cited but not in the register: {sorted(cited - rows)}"
