"""The image test's report: the time of each step, always, and each container's log when a test fails.

tests/image runs only when named (`make image-test`): pyproject's norecursedirs keeps `pytest` and
`make test` out of it, since it needs root and builds an image.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterator
from contextlib import AbstractContextManager, contextmanager

import pytest

from sandbox_testbench.container import RuncContainer

_TIMINGS: list[tuple[str, float]] = []
_STARTED: list[RuncContainer] = []
REPORT_LINES = 150


@pytest.fixture(scope="session")
def timed() -> Callable[[str], AbstractContextManager[None]]:
    """`with timed("step"):` records how long the step took, for the summary at the end."""

    @contextmanager
    def step(name: str) -> Iterator[None]:
        start = time.monotonic()
        yield
        _TIMINGS.append((name, time.monotonic() - start))

    return step


@pytest.fixture(scope="session")
def started_containers() -> list[RuncContainer]:
    """Every container a test starts goes here, so that a failed test's report shows what each logged."""
    return _STARTED


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report: pytest.TestReport = yield
    if report.failed:
        for container in _STARTED:
            lines = container.log().splitlines()[-REPORT_LINES:]
            report.sections.append((f"container {container.id} ({container.log_path})", "\n".join(lines)))
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _TIMINGS:
        terminalreporter.section("image test timings")
        for step, seconds in _TIMINGS:
            terminalreporter.write_line(f"{seconds:7.1f}s  {step}")
