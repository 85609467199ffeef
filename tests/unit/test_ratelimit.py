"""The Hub gate: token bucket, the global pause after a 429, the leader fence; on a fake clock."""

from __future__ import annotations

import pytest

from sandbox_operator.ratelimit import HubGate, HubPaused, NotLeader, TokenBucket, retry_after_seconds


class FakeTime:
    """A clock that only moves when something sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def gate(rate: float = 2.0, burst: float = 3.0) -> tuple[HubGate, FakeTime]:
    fake = FakeTime()
    return HubGate(rate, burst, clock=fake.clock, wall=fake.clock, sleep=fake.sleep), fake


def test_bucket_serves_the_burst_then_paces_at_the_rate_in_arrival_order() -> None:
    bucket = TokenBucket(rate=2.0, burst=3.0, now=0.0)
    assert [bucket.reserve(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert [bucket.reserve(0.0) for _ in range(3)] == [0.5, 1.0, 1.5]
    assert bucket.reserve(10.0) == 0.0  # refilled, but never beyond the burst


def test_bucket_never_allows_more_than_burst_plus_rate_times_window() -> None:
    bucket = TokenBucket(rate=3.0, burst=20.0, now=0.0)
    sent, now = 0, 0.0
    while now < 300.0:
        now += bucket.reserve(now)
        if now < 300.0:
            sent += 1
    assert sent <= 20 + 3 * 300 < 1000


def test_gate_sleeps_for_its_token() -> None:
    hub, fake = gate(rate=2.0, burst=1.0)
    hub.before_request()
    hub.before_request()
    assert fake.slept == [0.5]


def test_a_429_pauses_every_request_for_retry_after() -> None:
    hub, fake = gate()
    hub.after_response(429, {"Retry-After": "60"})
    with pytest.raises(HubPaused) as paused:
        hub.before_request()
    assert paused.value.remaining == 60.0
    fake.now += 59.9
    with pytest.raises(HubPaused):
        hub.before_request()
    fake.now += 0.1
    hub.before_request()


def test_a_shorter_retry_after_does_not_shorten_the_pause() -> None:
    hub, _ = gate()
    hub.after_response(429, {"Retry-After": "60"})
    hub.after_response(429, {"Retry-After": "5"})
    assert hub.paused_for() == 60.0


def test_a_request_that_waited_for_its_token_is_not_sent_into_a_pause() -> None:
    hub, fake = gate(rate=1.0, burst=1.0)
    hub.before_request()

    def sleep_while_a_429_arrives(seconds: float) -> None:
        fake.now += seconds
        hub.after_response(429, {"Retry-After": "30"})

    hub._sleep = sleep_while_a_429_arrives
    with pytest.raises(HubPaused):
        hub.before_request()


def test_429_without_headers_pauses_for_the_default() -> None:
    hub, _ = gate()
    hub.after_response(429, {})
    assert hub.paused_for() == hub.default_pause
    other, _ = gate()
    other.after_response(503, {"Retry-After": "60"})
    assert other.paused_for() == 0.0


def test_retry_after_forms() -> None:
    assert retry_after_seconds({"Retry-After": "12"}, 0.0) == 12.0
    assert retry_after_seconds({"Retry-After": "Thu, 01 Jan 1970 00:01:40 GMT"}, 40.0) == 60.0
    assert retry_after_seconds({"RateLimit": '"api";r=0;t=55'}, 0.0) == 55.0
    assert retry_after_seconds({}, 0.0) is None


def test_fence_refuses_requests_when_not_leader() -> None:
    hub, _ = gate()
    hub.fence = lambda: False
    with pytest.raises(NotLeader):
        hub.before_request()
