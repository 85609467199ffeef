"""The Hub gate on a fake clock: token bucket, the Hub's window, the pause after a 429, priorities, the
leader fence."""

from __future__ import annotations

import threading

import httpx2
import pytest

from sandbox_operator.hub.gate import (
    LOW_REMAINING_SHARE,
    HubGate,
    HubPaused,
    NotLeader,
    Priority,
    SendDeadlinePassed,
    TokenBucket,
    rate_limit_window,
    retry_after_seconds,
)
from tests.support import wait_for


class FakeTime:
    """A clock that only moves when something waits."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def wait(self, _condition: threading.Condition, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def gate(rate: float = 2.0, burst: float = 3.0) -> tuple[HubGate, FakeTime]:
    fake = FakeTime()
    return HubGate(rate, burst, clock=fake.clock, wall=fake.clock, wait=fake.wait), fake


def test_bucket_serves_the_burst_then_one_token_per_interval() -> None:
    bucket = TokenBucket(rate=2.0, burst=3.0, now=0.0)
    for _ in range(3):
        assert bucket.wait_time(0.0) == 0.0
        bucket.take(0.0)
    assert bucket.wait_time(0.0) == 0.5
    assert bucket.wait_time(0.5) == 0.0
    bucket.take(0.5)
    assert bucket.wait_time(10.0) == 0.0  # refilled, but never beyond the burst
    for _ in range(3):
        bucket.take(10.0)
    assert bucket.wait_time(10.0) == 0.5


def test_gate_never_allows_more_than_burst_plus_rate_times_window() -> None:
    hub, fake = gate(rate=3.0, burst=20.0)
    start, sent = fake.now, 0
    while fake.now < start + 300.0:
        hub.before_request()
        if fake.now < start + 300.0:
            sent += 1
    assert sent <= 20 + 3 * 300 + 1 < 1000


def test_gate_waits_for_its_token() -> None:
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

    def sleep_while_a_429_arrives(_condition: threading.Condition, seconds: float) -> None:
        fake.now += seconds
        hub.after_response(429, {"Retry-After": "30"})

    hub._wait = sleep_while_a_429_arrives
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
    assert retry_after_seconds({"Retry-After": "soon"}, 0.0) is None
    assert retry_after_seconds({}, 0.0) is None


def test_a_429_without_retry_after_waits_for_the_windows_reset() -> None:
    hub, _ = gate()
    hub.after_response(429, {"RateLimit": '"api";r=0;t=55'})
    assert hub.paused_for() == 55.0


def test_fence_refuses_requests_when_not_leader() -> None:
    hub, _ = gate()
    hub.lease_left = lambda: 0.0
    with pytest.raises(NotLeader):
        hub.before_request()


# The Hub's RateLimit headers: slow down before a 429 --------------------------------------------

WINDOW = {"RateLimit-Policy": '"fixed window";"api";q=1000;w=300'}


def test_rate_limit_headers_parse() -> None:
    window = rate_limit_window({"RateLimit": '"api";r=12;t=55', **WINDOW})
    assert window is not None
    assert (window.remaining, window.reset_seconds, window.quota) == (12, 55.0, 1000)
    assert rate_limit_window({}) is None


def test_plenty_left_in_the_window_sends_at_bucket_speed() -> None:
    hub, fake = gate(rate=0, burst=20)
    hub.after_response(200, {"RateLimit": '"api";r=900;t=200', **WINDOW})
    for _ in range(10):
        hub.before_request()
    assert fake.slept == []


def test_while_the_hubs_window_has_room_our_own_bucket_does_not_pace() -> None:
    hub, fake = gate(rate=1, burst=2)
    hub.after_response(200, {"RateLimit": '"api";r=900;t=200', **WINDOW})
    for _ in range(30):
        hub.before_request()
    assert fake.slept == []  # not one a second: the Hub says 900 are left


def test_creates_may_spend_the_window_down_to_what_observation_keeps() -> None:
    hub, fake = gate(rate=3, burst=20)
    assert hub.spare() is None  # no window stated: the bucket paces
    hub.after_response(200, {"RateLimit": '"api";r=900;t=200', **WINDOW})
    assert hub.spare() == 900 - LOW_REMAINING_SHARE * 1000
    kept = int(LOW_REMAINING_SHARE * 1000)
    hub.after_response(200, {"RateLimit": f'"api";r={kept - 1};t=200', **WINDOW})
    assert hub.spare() == 0
    fake.now += 200.0
    assert hub.spare() is None  # the window reset


def test_the_calls_kept_are_a_share_of_the_windows_quota_not_the_buckets_burst() -> None:
    """Sessions are Ready on their apps' answers, not on listings: a free account's window keeps 5
    calls from creates (a listing after them and a little more), whatever `--hub-burst` says."""
    hub, _ = gate(rate=3, burst=20)
    hub.after_response(200, {"RateLimit": '"api";r=900;t=200', **WINDOW})
    assert hub.spare() == 895
    small = {"RateLimit-Policy": '"fixed window";"api";q=100;w=300'}
    hub.after_response(200, {"RateLimit": '"api";r=50;t=200', **small})
    assert hub.spare() == 49  # one call at least


def test_the_window_affords_a_rate_of_calls_only_with_room_for_it_until_it_resets() -> None:
    unpaced, _ = gate(rate=0)
    assert unpaced.affords(100.0)  # no window stated and no bucket: nothing paces calls
    hub, fake = gate(rate=3, burst=20)
    assert not hub.affords(0.1)  # no window stated: the bucket paces every call
    hub.after_response(200, {"RateLimit": '"api";r=900;t=200', **WINDOW})
    room = 900 - LOW_REMAINING_SHARE * 1000
    assert hub.affords(room / 200 - 0.01) and not hub.affords(room / 200 + 0.1)
    fake.now += 150.0  # the same calls left, for a quarter of the time
    assert hub.affords(room / 50 - 0.01) and not hub.affords(room / 50 + 0.1)
    assert not hub.affords(room / 50 - 0.01, reserved=10)  # calls the creates waiting will spend
    hub.pause(10.0)
    assert not hub.affords(0.1)


def test_an_answer_to_an_earlier_call_does_not_give_back_calls_sent_since() -> None:
    hub, fake = gate(rate=0, burst=20)
    hub.after_response(200, {"RateLimit": '"api";r=100;t=200', **WINDOW})
    for _ in range(10):
        hub.before_request()
    # The first of the ten is answered: the Hub had counted only it. Ninety are left, not 99.
    fake.now += 0.5
    hub.after_response(200, {"RateLimit": '"api";r=99;t=200', **WINDOW})
    assert hub.spare() == 90 - LOW_REMAINING_SHARE * 1000
    # The next window's first answer is taken as it is.
    fake.now += 200.0
    hub.after_response(200, {"RateLimit": '"api";r=999;t=300', **WINDOW})
    assert hub.spare() == 999 - LOW_REMAINING_SHARE * 1000


def test_few_calls_left_are_spread_over_the_time_to_reset() -> None:
    hub, fake = gate(rate=0, burst=20)
    start = fake.now
    hub.after_response(200, {"RateLimit": '"api";r=4;t=100', **WINDOW})  # below the low mark
    for _ in range(4):
        hub.before_request()
    # Four calls over the 100 s left, not four at once followed by a 429.
    assert fake.now - start == pytest.approx(75.0)
    assert max(fake.slept) <= 1.0  # waits in short steps, so the fence and pause are rechecked


def test_no_calls_left_waits_for_the_reset_without_asking_the_hub() -> None:
    hub, fake = gate(rate=0, burst=20)
    hub.after_response(200, {"RateLimit": '"api";r=0;t=40', **WINDOW})
    with pytest.raises(HubPaused) as paused:
        hub.before_request()
    assert paused.value.remaining == 40.0
    fake.now += 40.0
    hub.before_request()


def test_pacing_ends_with_the_window() -> None:
    hub, fake = gate(rate=0, burst=20)
    hub.after_response(200, {"RateLimit": '"api";r=2;t=10', **WINDOW})
    fake.now += 10.0
    for _ in range(5):
        hub.before_request()
    assert fake.slept == []


def test_deletions_wait_for_no_bucket_and_no_pacing_only_for_the_windows_end() -> None:
    """A Space that should be gone keeps billing: deletions go as fast as the Hub's window allows,
    and spend only what the bucket has saved (the operator's own calls do not wait off a debt)."""
    hub, fake = gate(rate=1.0, burst=2.0)
    for _ in range(10):
        hub.before_request(Priority.DELETE)
    assert fake.slept == []
    hub.before_request(Priority.CHANGE)
    assert fake.slept == [1.0]  # one token's refill, not ten
    hub.after_response(200, {"RateLimit": '"api";r=5;t=100', **WINDOW})  # low: others are spread out
    for _ in range(5):
        hub.before_request(Priority.DELETE)
    assert fake.slept == [1.0]
    start = fake.now
    hub.before_request(Priority.DELETE)  # the window counted down to nothing: its reset
    assert fake.now - start == pytest.approx(100.0)


# Priorities: deletions before observation ---------------------------------------------------------


class SharedClock:
    """A fake clock the test moves; waiting threads poll it in short real sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    @staticmethod
    def wait(condition: threading.Condition, _seconds: float) -> None:
        condition.wait(0.005)


def serve_one_token_at_a_time(
    shared: SharedClock, threads: list[threading.Thread], served: list[str]
) -> None:
    """Move the clock one token at a time until every waiting request was served."""
    for expected in range(1, len(threads) + 1):
        shared.now += 1.0
        wait_for(lambda n=expected: len(served) == n, 10, f"request {expected} to be served", interval=0.005)
    for thread in threads:
        thread.join(timeout=5)


def test_a_deletion_goes_before_observations_that_waited_longer() -> None:
    """And without a token: only the change and the observations wait for theirs."""
    shared = SharedClock()
    hub = HubGate(1.0, 1.0, clock=shared.clock, wall=shared.clock, wait=shared.wait)
    hub.before_request()  # the only token
    served: list[str] = []

    def request(name: str, priority: Priority) -> threading.Thread:
        thread = threading.Thread(target=lambda: (hub.before_request(priority), served.append(name)))
        thread.start()
        return thread

    threads = [request(f"observe-{i}", Priority.OBSERVE) for i in range(3)]
    wait_for(lambda: hub.waiting() == 3, 10, "three observations to wait", interval=0.005)
    threads.append(request("create", Priority.CHANGE))
    wait_for(lambda: hub.waiting() == 4, 10, "all four to wait", interval=0.005)
    threads.append(request("delete", Priority.DELETE))
    wait_for(lambda: served == ["delete"], 10, "the deletion to go at once", interval=0.005)
    for expected in range(2, 6):
        shared.now += 1.0  # one token per step
        wait_for(lambda n=expected: len(served) == n, 10, f"request {expected} to be served", interval=0.005)
    for thread in threads:
        thread.join(timeout=5)
    assert served == ["delete", "create", "observe-0", "observe-1", "observe-2"]


def test_namespaces_take_turns_at_the_gate_each_in_arrival_order() -> None:
    shared = SharedClock()
    hub = HubGate(1.0, 1.0, clock=shared.clock, wall=shared.clock, wait=shared.wait)
    hub.before_request()  # the only token
    served: list[str] = []

    def request(name: str, tenant: str, priority: Priority = Priority.CHANGE) -> threading.Thread:
        thread = threading.Thread(
            target=lambda: (hub.before_request(priority, tenant=tenant), served.append(name))
        )
        thread.start()
        return thread

    threads = []
    for i in range(4):  # one namespace's burst queues first
        threads.append(request(f"noisy-{i}", "noisy"))
        wait_for(lambda n=i + 1: hub.waiting() == n, 10, "the burst to wait", interval=0.005)
    threads.append(request("victim", "quiet"))
    threads.append(request("listing", "", Priority.OBSERVE))
    wait_for(lambda: hub.waiting() == 6, 10, "all six to wait", interval=0.005)
    serve_one_token_at_a_time(shared, threads, served)
    assert served == ["noisy-0", "victim", "noisy-1", "noisy-2", "noisy-3", "listing"]


def test_a_waiting_request_that_gives_up_lets_the_next_go() -> None:
    shared = SharedClock()
    hub = HubGate(1.0, 1.0, clock=shared.clock, wall=shared.clock, wait=shared.wait)
    hub.before_request()
    outcome: list[str] = []

    def observe() -> None:
        try:
            hub.before_request(Priority.OBSERVE)
            outcome.append("sent")
        except HubPaused:
            outcome.append("paused")

    thread = threading.Thread(target=observe)
    thread.start()
    wait_for(lambda: hub.waiting() == 1, 10, "the observation to wait", interval=0.005)
    hub.after_response(429, {"Retry-After": "30"})
    thread.join(timeout=5)
    assert outcome == ["paused"] and hub.waiting() == 0


def test_no_hub_request_is_given_more_time_than_the_leader_has_left() -> None:
    from sandbox_operator.hub.transport import client_factory

    hub, _ = gate()
    client = client_factory(20.0, hub)()
    (before, *_) = client.event_hooks["request"]
    request = httpx2.Request("GET", "http://hub.invalid/api/whoami-v2")
    before(request)
    assert request.extensions.get("timeout") is None or request.extensions["timeout"]["read"] == 20.0
    hub.lease_left = lambda: 6.0
    before(request)
    # Connect and read each get half of what is left: together they end before the right to act does.
    assert request.extensions["timeout"] == {"connect": 3.0, "read": 3.0, "write": 3.0, "pool": 3.0}
    client.close()


def test_a_request_that_waits_at_the_gate_past_its_send_deadline_is_not_sent() -> None:
    """A duplicate's send deadline bounds when it can land (a delete racing a create waits only so long)."""
    hub, fake = gate(rate=1.0, burst=1.0)
    hub.before_request(not_after=fake.now + 5)  # the burst token: goes at once
    hub.before_request(not_after=fake.now + 5)  # waits 1s for a token: still in time
    with pytest.raises(SendDeadlinePassed):
        hub.before_request(not_after=fake.now + 0.5)  # would leave 1s from now: never sent
    with pytest.raises(SendDeadlinePassed):
        hub.before_request(not_after=fake.now)
    hub.before_request()  # no deadline: waits as long as it takes


def test_while_paused_creates_are_not_held_for_room_but_meet_the_pause() -> None:
    """A 429 with no calls left: a create waiting for room would wait unseen; it goes to the gate,
    which refuses it at once, and its session says it is rate limited."""
    now = [0.0]
    gate = HubGate(0, 1, clock=lambda: now[0], wall=lambda: now[0])
    gate.after_response(429, {"Retry-After": "20", "RateLimit": '"api";r=0;t=20'})
    assert gate.spare() is None
    with pytest.raises(HubPaused):
        gate.before_request(Priority.CHANGE)
