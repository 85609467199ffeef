"""The HTTP hooks every request of the Hub client passes, pagination included: the process-wide
`HubGate` first (rate limit, the Hub's window, the pause after a 429, priorities, the leader fence),
no more time than the leader may still act, and the metrics.

`huggingface_hub` is synchronous and runs on worker threads: what a thread is calling (route,
priority, send deadline, namespace) is told to the hooks in a thread-local.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

import httpx2
from huggingface_hub.utils._http import hf_request_event_hook

from sandbox_operator.hub.gate import HubGate, HubPaused, NotLeader, Priority, SendDeadlinePassed
from sandbox_operator.observability import metrics

T = TypeVar("T")

#: What the worker thread is calling, for the HTTP-level hooks: route, priority, send time, namespace.
_current = threading.local()


def last_sent() -> float:
    """When this thread's last request left the gate for the Hub (monotonic)."""
    sent: float = _current.sent
    return sent


def client_factory(timeout: float, gate: HubGate) -> Callable[[], httpx2.Client]:
    def before(request: httpx2.Request) -> None:
        gate.before_request(
            getattr(_current, "priority", Priority.OBSERVE),
            getattr(_current, "not_after", None),
            getattr(_current, "tenant", ""),
        )
        left = gate.time_left()
        if left < timeout:
            # No request may outlive the leader's right to act (connect and read each get at most half).
            request.extensions["timeout"] = httpx2.Timeout(max(0.001, left / 2)).as_dict()
        _current.sent = time.monotonic()

    def after(response: httpx2.Response) -> None:
        route = getattr(_current, "route", "other")
        metrics.HUB_CALLS.labels(route, str(response.status_code)).inc()
        metrics.HUB_LATENCY.labels(route).observe(time.monotonic() - getattr(_current, "sent", 0.0))
        gate.after_response(response.status_code, response.headers)

    def factory() -> httpx2.Client:
        # The default client has no timeout at all; a hung Hub must not hang a session.
        return httpx2.Client(
            event_hooks={"request": [before, hf_request_event_hook], "response": [after]},
            follow_redirects=True,
            timeout=timeout,
        )

    return factory


def in_thread(
    route: str, priority: Priority, fn: Callable[[], T], not_after: float | None, tenant: str
) -> Callable[[], T]:
    """`fn` tagged with its route, priority, send deadline and namespace for the hooks; requests that
    got no response are counted here."""

    def run() -> T:
        _current.route = route
        _current.priority = priority
        _current.not_after = not_after
        _current.tenant = tenant
        try:
            return fn()
        except HubPaused:
            metrics.HUB_REFUSED.labels("paused").inc()
            raise
        except NotLeader:
            metrics.HUB_REFUSED.labels("not_leader").inc()
            raise
        except SendDeadlinePassed:
            metrics.HUB_REFUSED.labels("deadline").inc()
            raise
        except httpx2.TimeoutException:
            metrics.HUB_CALLS.labels(route, "timeout").inc()
            raise
        except httpx2.TransportError:
            metrics.HUB_CALLS.labels(route, "network").inc()
            raise

    return run
