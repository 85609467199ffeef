"""The Hub's API rate limit: fixed windows per caller, advertised on every answer (fidelity: F33, F34)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

#: Quota advertised when no limit is enforced: the headers stay well-formed and never ask to slow down.
UNLIMITED: Final = 2**31 - 1
#: The Hub's bucket for /api routes, named in both headers.
API_BUCKET: Final = "api"


@dataclass(frozen=True)
class Verdict:
    """One call's standing in its window: whether it may be served, and the headers that say so."""

    allowed: bool
    remaining: int
    reset_seconds: int
    quota: int
    window: int

    def headers(self) -> dict[str, str]:
        """`RateLimit` and `RateLimit-Policy` as huggingface_hub's parse_ratelimit_headers reads them."""
        headers = {
            "RateLimit": f'"{API_BUCKET}";r={self.remaining};t={self.reset_seconds}',
            "RateLimit-Policy": f'"fixed window";"{API_BUCKET}";q={self.quota};w={self.window}',
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.reset_seconds)
        return headers


class RateLimiter:
    """Counts calls per caller in fixed windows aligned on the emulator clock; `quota=None` counts nothing."""

    def __init__(self, quota: int | None, window: int) -> None:
        self.quota = quota
        self.window = window
        self._counts: dict[str, tuple[int, int]] = {}

    def charge(self, caller: str, now: float) -> Verdict:
        """Count one call of `caller` (a user, or an anonymous client address) at `now`."""
        index = math.floor(now / self.window)
        reset = max(1, math.ceil((index + 1) * self.window - now))
        if self.quota is None:
            return Verdict(True, UNLIMITED, reset, UNLIMITED, self.window)
        window_index, used = self._counts.get(caller, (index, 0))
        used = (used if window_index == index else 0) + 1
        self._counts[caller] = (index, used)
        return Verdict(used <= self.quota, max(0, self.quota - used), reset, self.quota, self.window)

    def into_window(self, now: float) -> float:
        """Seconds since the current window began: where a burst sent now falls in it."""
        return now - math.floor(now / self.window) * self.window

    def usage(self, now: float) -> dict[str, int]:
        """Calls counted per caller in the current window, for the admin API."""
        index = math.floor(now / self.window)
        return {caller: used for caller, (i, used) in self._counts.items() if i == index}
