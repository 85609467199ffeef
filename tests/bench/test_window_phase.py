"""Where a hub-shape burst falls in the Hub's rate-limit window: said, and set on request."""

from __future__ import annotations

from typing import Any, cast

import pytest

from bench import run
from sandbox_testbench.hubsim import HubSimAdmin


class FakeAdmin:
    """The emulator's rate-limit standing, its clock moved by the sleeps the benchmark takes."""

    def __init__(self, into_window: float, quota: int | None = 1000, window: int = 300) -> None:
        self.into_window, self.quota, self.window = into_window, quota, window

    def rate_limit(self) -> dict[str, Any]:
        return {"quota": self.quota, "window": self.window, "intoWindow": self.into_window}

    def sleep(self, seconds: float) -> None:
        self.into_window = (self.into_window + seconds) % self.window


@pytest.mark.parametrize(
    ("now", "offset", "slept"),
    [(250.0, 0.0, 50.0), (10.0, 0.0, 290.0), (10.0, 100.0, 90.0), (120.0, 100.0, 280.0), (37.5, None, 0.0)],
)
def test_a_burst_waits_for_the_offset_asked_for_and_says_where_it_falls(
    monkeypatch: pytest.MonkeyPatch, now: float, offset: float | None, slept: float
) -> None:
    admin = FakeAdmin(now)
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        admin.sleep(seconds)

    monkeypatch.setattr(run.time, "sleep", sleep)
    into = run.burst_into_window(cast(HubSimAdmin, admin), offset)
    assert sum(sleeps) == pytest.approx(slept)
    assert into == pytest.approx(now if offset is None else offset)


def test_without_a_rate_limit_there_is_no_window_to_fall_in() -> None:
    assert run.burst_into_window(cast(HubSimAdmin, FakeAdmin(12.0, quota=None)), 0.0) is None
