"""The Hub gate's per-call send deadline: a request that would leave after it is never sent."""

from __future__ import annotations

import pytest

from sandbox_operator.ratelimit import HubGate, SendDeadlinePassed


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_a_request_that_waits_at_the_gate_past_its_deadline_is_not_sent() -> None:
    fake = FakeTime()
    gate = HubGate(1.0, 1, clock=fake.clock, wall=fake.clock, sleep=fake.sleep)
    gate.before_request(not_after=fake.now + 5)  # the burst token: goes at once
    gate.before_request(not_after=fake.now + 5)  # waits 1s for a token: still in time
    with pytest.raises(SendDeadlinePassed):
        gate.before_request(not_after=fake.now + 0.5)  # would leave 1s from now: never sent
    with pytest.raises(SendDeadlinePassed):
        gate.before_request(not_after=fake.now)
    gate.before_request()  # no deadline: waits as long as it takes
