"""Pacing of Hub calls: one token bucket and one pause for the whole process.

The Hub's limits are per account (1,000 API calls per 5 minutes on a free account), not per
session, so the budget is global: every HTTP request to the Hub takes a token first, and a 429
with `Retry-After` pauses *all* requests until that time, since any call sent earlier would be
refused as well and would only extend the penalty. The gate runs in the Hub client's worker
threads (it is an httpx request hook), so it is thread-safe and takes its clock as a parameter.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime

from . import metrics

#: `RateLimit: "api";r=0;t=55`: the Hub's own header, seconds until the window resets.
_RATELIMIT_RESET = re.compile(r";\s*t=(\d+)")


class HubPaused(Exception):
    """A request was refused locally: the Hub asked us to wait and the time has not come."""

    def __init__(self, remaining: float) -> None:
        super().__init__(f"all Hub calls are paused for {remaining:.0f}s more after a 429")
        self.remaining = remaining


class NotLeader(Exception):
    """A request was refused locally: this process does not hold the leader Lease (any more)."""


class SendDeadlinePassed(Exception):
    """A request was refused locally: it waited at the gate past the time it had to leave by."""


def retry_after_seconds(headers: Mapping[str, str], now_wall: float) -> float | None:
    """Seconds the Hub asks to wait: `Retry-After` (seconds or HTTP date), else the `RateLimit` reset."""
    value = headers.get("Retry-After")
    if value is not None:
        value = value.strip()
        if value.isdigit():
            return float(value)
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - now_wall)
        except (TypeError, ValueError):
            pass
    match = _RATELIMIT_RESET.search(headers.get("RateLimit", ""))
    return float(match.group(1)) if match else None


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved up; a caller that finds none reserves the
    next one and is told how long to wait, so waiting callers are served in arrival order."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = max(1.0, burst)
        self._tokens = self.burst
        self._stamp = now

    def reserve(self, now: float) -> float:
        """Take one token; returns the seconds to wait before using it (0 if one was there)."""
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


class HubGate:
    """What every Hub request passes: the leader fence, the global 429 pause, the token bucket.

    `rate` <= 0 disables the bucket (the pause and the fence still apply).
    """

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        default_pause: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._clock = clock
        self._wall = wall
        self._sleep = sleep
        self._lock = threading.Lock()
        self._bucket = TokenBucket(rate, burst, clock()) if rate > 0 else None
        self._paused_until = 0.0
        self.default_pause = default_pause
        #: Returns False once this process may no longer act (set by leader election).
        self.fence: Callable[[], bool] = lambda: True

    def paused_for(self) -> float:
        """Seconds until Hub calls may be sent again (0 when not paused)."""
        with self._lock:
            return max(0.0, self._paused_until - self._clock())

    def pause(self, seconds: float) -> None:
        """Hold every request for `seconds` from now; a longer pause already set is kept."""
        with self._lock:
            until = self._clock() + seconds
            if until <= self._paused_until:
                return
            self._paused_until = until
        metrics.HUB_PAUSES.inc()
        metrics.HUB_PAUSED_UNTIL.set(self._wall() + seconds)

    def _check(self, not_after: float | None) -> None:
        if not self.fence():
            raise NotLeader("this operator does not hold the leader Lease; it sends no Hub calls")
        remaining = self.paused_for()
        if remaining > 0:
            raise HubPaused(remaining)
        if not_after is not None and self._clock() >= not_after:
            raise SendDeadlinePassed("the request waited past its send deadline; it was not sent")

    def before_request(self, not_after: float | None = None) -> None:
        """Block until the request may go, or raise `HubPaused` / `NotLeader` / `SendDeadlinePassed`
        (nothing is sent). `not_after` (on this gate's clock): the request goes before then or never."""
        self._check(not_after)
        if self._bucket is None:
            return
        with self._lock:
            wait = self._bucket.reserve(self._clock())
        metrics.RATE_LIMIT_WAIT.observe(wait)
        if wait > 0:
            self._sleep(wait)
            self._check(not_after)  # a 429, a lost Lease or the deadline may have come meanwhile

    def after_response(self, status: int, headers: Mapping[str, str]) -> None:
        """A 429 pauses every request for as long as the Hub asks (or `default_pause` if it does not say)."""
        if status == 429:
            seconds = retry_after_seconds(headers, self._wall())
            self.pause(self.default_pause if seconds is None else seconds)
