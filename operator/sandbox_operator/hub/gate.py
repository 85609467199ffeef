"""Pacing of Hub calls: one gate for the whole process, with priorities.

The Hub's limits are per account (1,000 API calls per 5 minutes on a free account), not per
session, so the budget is global: every HTTP request to the Hub passes this gate first.

- The Hub says how much of its window is left on every answer (`RateLimit: "api";r=<remaining>;
  t=<seconds to reset>`, `RateLimit-Policy: "fixed window";"api";q=<quota>;w=300`). While it has
  room, requests go as fast as they come: the window is the Hub's limit, not a pace of ours. Once
  the remaining calls run low, they are spread evenly over the time to the reset (creates stop
  short of that mark: hub/creates_in_flight.py), so observation and deletions keep calls until the window
  ends; with none left, every request waits for the reset.
- A token bucket paces requests (`rate` per second, `burst` saved up) while the Hub has stated no
  window, or its window runs low.
- A 429 with `Retry-After` pauses *all* requests until that time, since any call sent earlier
  would be refused as well and would only extend the penalty.
- Requests that wait are served by priority: deletions (and the finalizer's reads) first, then
  creates and other changes, then observation, so sessions that keep polling never hold back a
  deletion. Within a priority, namespaces take turns (fairness.py: one namespace's burst does not
  starve another's session), and each namespace's requests go in arrival order.
  Deletions do not wait for the bucket either, only for the Hub's window: `kubectl delete`
  returns as soon as the Hub answers.
- The leader fence: no request is sent once this process may have lost its Lease, and none is
  given more time than is left before it must stop acting (`lease_left`).

The gate runs in the Hub client's worker threads (it is an httpx request hook), so it is
thread-safe and takes its clock, wall clock and wait as parameters for tests.
"""

from __future__ import annotations

import itertools
import math
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from enum import IntEnum

from sandbox_operator.fairness import FairQueue
from sandbox_operator.observability import metrics

#: `RateLimit: "api";r=12;t=55`: calls remaining in the window, seconds until it resets.
_RATELIMIT = re.compile(r";\s*r=(\d+)\s*;\s*t=(\d+)")
#: `RateLimit-Policy: "fixed window";"api";q=1000;w=300`: the window's quota.
_POLICY_QUOTA = re.compile(r";\s*q=(\d+)")
#: Pace once fewer than this share of the window's quota is left (or fewer than `burst` calls,
#: when the Hub states no quota): what observation needs for the rest of a window its creates spent,
#: and deletions (which go first); creates do not spend it. Sessions are Ready on their apps' answers
#: at the edge (hub/edge_probe.py), not on listings: such a window needs a listing after its creates
#: (two calls at a thousand Spaces: their apps' addresses) and little more. Every call kept here is a
#: create the next window sends: at 1,000 sessions on a free account's 1,000 calls, 2 % kept 20
#: sessions of a burst waiting 5 minutes for it (docs/performance.md, round thirteen).
LOW_REMAINING_SHARE = 0.005
#: Answers whose reset times differ by at most this (seconds) speak of the same window: the header
#: gives whole seconds, and answers arrive at different times.
SAME_WINDOW_SLACK = 2.0
#: Longest single wait before the fence and the pause are checked again.
_RECHECK = 1.0


class Priority(IntEnum):
    """Which waiting request goes first: lower values first."""

    #: Deletions and what the finalizer reads: a Space that should be gone keeps billing.
    DELETE = 0
    #: Creates and other writes a session is waiting for.
    CHANGE = 1
    #: Reads of state (space_info, runtime, variables, listings, the catalog).
    OBSERVE = 2


class HubPaused(Exception):
    """A request was refused locally: the Hub asked us to wait and the time has not come."""

    def __init__(self, remaining: float) -> None:
        super().__init__(f"all Hub calls are paused for {remaining:.0f}s more (the Hub's rate limit)")
        self.remaining = remaining


class NotLeader(Exception):
    """A request was refused locally: this process does not hold the leader Lease (any more)."""


class SendDeadlinePassed(Exception):
    """A request was refused locally: it waited at the gate past the time it had to leave by."""


def retry_after_seconds(headers: Mapping[str, str], now_wall: float) -> float | None:
    """Seconds a `Retry-After` header asks to wait (seconds or an HTTP date), or None without one."""
    value = headers.get("Retry-After")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now_wall)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class Window:
    """The Hub's rate-limit window as its headers describe it."""

    remaining: int
    reset_seconds: float
    quota: int | None = None


def rate_limit_window(headers: Mapping[str, str]) -> Window | None:
    """The `RateLimit` (and `RateLimit-Policy`) headers of an answer, or None without them."""
    match = _RATELIMIT.search(headers.get("RateLimit", ""))
    if match is None:
        return None
    quota = _POLICY_QUOTA.search(headers.get("RateLimit-Policy", ""))
    return Window(int(match.group(1)), float(match.group(2)), int(quota.group(1)) if quota else None)


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved up."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = max(1.0, burst)
        self._tokens = self.burst
        self._stamp = now

    def _refill(self, now: float) -> None:
        self._tokens = min(self.burst, self._tokens + max(0.0, now - self._stamp) * self.rate)
        self._stamp = now

    def wait_time(self, now: float) -> float:
        """Seconds until a token is there (0 if one is)."""
        self._refill(now)
        missing = 1.0 - self._tokens
        return 0.0 if missing <= 1e-9 else missing / self.rate  # rounding must not wait forever

    def take(self, now: float) -> None:
        """Spend a token; a request sent without one (a deletion) spends what is saved, no more."""
        self._refill(now)
        self._tokens = max(0.0, self._tokens - 1.0)


def _default_wait(condition: threading.Condition, seconds: float) -> None:
    condition.wait(seconds)


class HubGate:
    """What every Hub request passes: the leader fence, the pause, the bucket, the Hub's window.

    `rate` <= 0 disables the bucket (the rest still applies).
    """

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        default_pause: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        wait: Callable[[threading.Condition, float], None] = _default_wait,
    ) -> None:
        self._clock = clock
        self._wall = wall
        self._wait = wait
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._bucket = TokenBucket(rate, burst, clock()) if rate > 0 else None
        self._burst = max(1, int(burst))
        self._paused_until = 0.0
        #: Requests waiting to go (their arrival numbers): by priority, namespaces in turn, arrival.
        self._queue: FairQueue[int] = FairQueue()
        self._arrivals = itertools.count()
        #: The Hub's window: calls left (counted down as we send) and when it resets (monotonic).
        self._remaining: int | None = None
        self._reset_at = 0.0
        self._quota: int | None = None
        #: Earliest time of the next request while the remaining calls are spread out.
        self._next_paced = 0.0
        self.default_pause = default_pause
        #: Seconds this process may still act (set by leader election); <= 0: it may not.
        self.lease_left: Callable[[], float] = lambda: math.inf

    def paused_for(self) -> float:
        """Seconds until Hub calls may be sent again (0 when not paused)."""
        with self._lock:
            return max(0.0, self._paused_until - self._clock())

    def waiting(self) -> int:
        """Requests waiting for their turn now (for tests and metrics)."""
        with self._lock:
            return len(self._queue)

    def pause(self, seconds: float) -> None:
        """Hold every request for `seconds` from now; a longer pause already set is kept."""
        with self._lock:
            until = self._clock() + seconds
            if until <= self._paused_until:
                return
            self._paused_until = until
            self._changed.notify_all()
        metrics.HUB_PAUSES.inc()
        metrics.HUB_PAUSED_UNTIL.set(self._wall() + seconds)

    def time_left(self) -> float:
        """Seconds a request sent now may take before this process must stop acting."""
        return self.lease_left()

    def _check(self, not_after: float | None) -> None:
        if self.lease_left() <= 0:
            raise NotLeader("this operator does not hold the leader Lease; it sends no Hub calls")
        remaining = self.paused_for()
        if remaining > 0:
            raise HubPaused(remaining)
        if not_after is not None and self._clock() >= not_after:
            raise SendDeadlinePassed("the request waited past its send deadline; it was not sent")

    def _low(self) -> float:
        return max(1.0, LOW_REMAINING_SHARE * self._quota) if self._quota else self._burst

    def _room(self, now: float) -> bool:
        """The Hub's window, as it last said, has more than its low mark left."""
        return self._remaining is not None and now < self._reset_at and self._remaining >= self._low()

    def spare(self) -> int | None:
        """Calls the Hub's window has left above its low mark, which creates may spend; None when the
        Hub has stated no window that is still open (the bucket paces then), or while every call is
        paused: a create then meets the pause at once and its session says it is rate limited, rather
        than waiting for a turn unseen."""
        with self._lock:
            now = self._clock()
            if self._remaining is None or now >= self._reset_at or now < self._paused_until:
                return None
            return max(0, self._remaining - math.ceil(self._low()))

    def affords(self, calls_per_second: float, reserved: int = 0) -> bool:
        """Whether the Hub's window, as it last said, has room above its low mark and the `reserved`
        calls for `calls_per_second` until it resets; with no window stated, whether nothing paces
        calls (no token bucket)."""
        with self._lock:
            spare = self.spare()
            if spare is None:  # no window open, or every call paused
                return self._bucket is None and self.paused_for() == 0
            return spare - reserved >= calls_per_second * (self._reset_at - self._clock())

    def _pacing(self, now: float) -> float:
        """Seconds between requests while the Hub's window runs low (0: no pacing)."""
        if self._remaining is None or now >= self._reset_at:
            self._remaining = None
            return 0.0
        if self._remaining >= self._low():
            return 0.0
        return (self._reset_at - now) / max(1, self._remaining)

    def _wait_time(self, now: float, priority: Priority) -> float:
        if priority is Priority.DELETE:
            # Owed, not chosen: a Space that should be gone keeps billing, and there is one deletion
            # per session. Only the Hub's window holds it back, not the operator's own pace.
            spent = self._remaining is not None and self._remaining <= 0
            return max(0.0, self._reset_at - now) if spent else 0.0
        bucket = self._bucket.wait_time(now) if self._bucket is not None and not self._room(now) else 0.0
        paced = max(0.0, self._next_paced - now) if self._pacing(now) > 0 else 0.0
        return max(bucket, paced)

    def _take(self, now: float) -> None:
        if self._bucket is not None and not self._room(now):
            self._bucket.take(now)
        spacing = self._pacing(now)
        if spacing > 0:
            self._next_paced = now + spacing
        if self._remaining is not None:
            self._remaining -= 1

    def before_request(
        self, priority: Priority = Priority.OBSERVE, not_after: float | None = None, tenant: str = ""
    ) -> None:
        """Block until the request may go, or raise `HubPaused` / `NotLeader` / `SendDeadlinePassed`
        (nothing is sent). `not_after` (on this gate's clock): the request goes before then or never.
        `tenant`: the namespace of the session it is made for ("": none), which takes turns with others."""
        with self._lock:
            ticket = next(self._arrivals)
            self._queue.push(ticket, tenant=tenant, key=ticket, level=int(priority))
            arrived = self._clock()
            try:
                while True:
                    self._check(not_after)
                    now = self._clock()
                    if self._queue.peek() != ticket:
                        self._wait(self._changed, _RECHECK)
                        continue
                    wait = self._wait_time(now, priority)
                    if wait <= 0:
                        self._take(now)
                        self._queue.pop()
                        metrics.RATE_LIMIT_WAIT.observe(now - arrived)
                        return
                    self._wait(self._changed, min(wait, _RECHECK))
            finally:
                self._queue.remove(ticket)  # a request that gave up (one that went was taken out)
                self._changed.notify_all()

    def after_response(self, status: int, headers: Mapping[str, str]) -> None:
        """Learn the Hub's window from every answer; a 429 pauses every request as long as the Hub asks.

        With no calls left in the window, requests wait for its reset as after a 429 (the next one
        would be refused), so the Hub never has to say it.
        """
        window = rate_limit_window(headers)
        if window is not None:
            with self._lock:
                reset_at = self._clock() + window.reset_seconds
                same = self._remaining is not None and abs(reset_at - self._reset_at) <= SAME_WINDOW_SLACK
                # Within one window the lower count holds: an answer to a call sent before others still
                # in flight counts fewer of ours than were sent (taken as it is, the window's last calls
                # would go out one too many each, and meet a 429).
                self._remaining = min(self._remaining or 0, window.remaining) if same else window.remaining
                self._reset_at = max(self._reset_at, reset_at) if same else reset_at
                self._quota = window.quota or self._quota
        if status == 429:
            seconds = retry_after_seconds(headers, self._wall())
            if seconds is None and window is not None and window.remaining == 0:
                seconds = window.reset_seconds
            self.pause(self.default_pause if seconds is None else seconds)
        elif window is not None and window.remaining == 0 and window.reset_seconds > 0:
            self.pause(window.reset_seconds)
