"""Injected failures: a rule matches a route by name and pre-empts normal handling while it lasts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

#: Route names that faults, the call log and the admin API refer to. "*" in a fault means every /api route.
ROUTE_NAMES: Final = (
    "whoami",
    "agent_harnesses",
    "list_spaces",
    "space_info",
    "runtime",
    "hardware",
    "sleeptime",
    "pause",
    "restart",
    "duplicate",
    "create",
    "delete",
    "secrets",
    "variables",
    "hardware_catalog",
    "health",
    "app",
)
ANY_API_ROUTE: Final = "*"


@dataclass
class Fault:
    """One injection rule; `remaining=None` and `expires_at=None` mean unlimited until cleared."""

    route: str
    status: int
    remaining: int | None
    expires_at: float | None
    retry_after: int | None

    def matches(self, route: str, is_api: bool) -> bool:
        """'*' covers the Hub API only: the sandbox `health` route must be targeted by name."""
        return self.route == route or (self.route == ANY_API_ROUTE and is_api)

    def headers(self) -> dict[str, str]:
        """Rate-limit headers the way the Hub sends them, for the client's backoff parser (fidelity: F35)."""
        if self.retry_after is None:
            return {}
        headers = {"Retry-After": str(self.retry_after)}
        if self.status == 429:
            headers["RateLimit"] = f'"api";r=0;t={self.retry_after}'
            headers["RateLimit-Policy"] = '"fixed window";"api";q=1000;w=300'
        return headers

    def to_json(self, now: float) -> dict[str, object]:
        return {
            "route": self.route,
            "status": self.status,
            "remaining": self.remaining,
            "secondsLeft": None if self.expires_at is None else max(0.0, self.expires_at - now),
            "retryAfter": self.retry_after,
        }


class FaultBook:
    """Ordered fault rules; the first live rule matching a request wins and is charged one use."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> None:
        self._faults.append(fault)

    def clear(self) -> None:
        self._faults.clear()

    def live(self, now: float) -> list[Fault]:
        """Drop expired rules; what remains is what can still fire."""
        self._faults = [f for f in self._faults if f.expires_at is None or now < f.expires_at]
        return list(self._faults)

    def take(self, route: str, is_api: bool, now: float) -> Fault | None:
        for fault in self.live(now):
            if fault.matches(route, is_api):
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                return fault
        return None
