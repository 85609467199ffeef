"""One way to wait in tests: poll, and fail loudly with the last value instead of hanging."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    probe: Callable[[], T],
    accept: Callable[[T], bool],
    timeout: float,
    what: str = "the condition",
    interval: float = 0.1,
) -> T:
    """Poll `probe` until `accept` takes its value, which is returned; fail with `what` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if accept(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {value!r}")
        time.sleep(interval)


def wait_for(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll until `check` returns something truthy, and return it."""
    value = wait_until(check, bool, timeout, what, interval)
    assert value  # for the type checker: `bool` accepted it
    return value
