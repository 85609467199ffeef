"""Prometheus metrics of the operator, served on `--metrics-port` from a thread of its own.

The server thread answers even while the event loop is blocked, so a scrape still shows what
the loop was doing last (`sandbox_operator_event_loop_lag_seconds` keeps growing).
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Mapping
from contextlib import suppress
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from sandbox_operator.api import parse_rfc3339
from sandbox_operator.core.conditions import BUDGET_EXHAUSTED, STALLED

_PREFIX = "sandbox_operator"

SESSIONS = Gauge(f"{_PREFIX}_sessions", "AgentSessions seen by the operator, by status.phase.", ["phase"])
SPEND_USD = Gauge(
    f"{_PREFIX}_spend_usd",
    "Estimated spend on paid hardware per session (status.spend.estimatedUsd).",
    ["namespace", "session"],
)
PENDING_APPROVALS = Gauge(
    f"{_PREFIX}_pending_approvals",
    "Sessions waiting for an approver (status.pendingApproval), by namespace: alert when it stays above 0.",
    ["namespace"],
)
PENDING_APPROVAL_OLDEST = Gauge(
    f"{_PREFIX}_pending_approval_oldest_timestamp_seconds",
    "When the longest-waiting session of a namespace started waiting for an approver "
    "(status.pendingApproval.requestedTime, Unix time); absent while none waits: alert on time() minus it.",
    ["namespace"],
)
SESSIONS_BUDGET_EXHAUSTED = Gauge(
    f"{_PREFIX}_sessions_budget_exhausted",
    "Sessions whose BudgetExhausted condition is True (their approval's budget is spent; back on "
    "cpu-basic until an approver grants more), by namespace.",
    ["namespace"],
)
SESSIONS_STALLED = Gauge(
    f"{_PREFIX}_sessions_stalled",
    "Sessions whose Stalled condition is True (the operator cannot get there without a change of the "
    "spec), by namespace.",
    ["namespace"],
)
LAUNCH_SECONDS = Histogram(
    f"{_PREFIX}_launch_seconds",
    "Session creation to Ready, by launch type: warm (a Space claimed from a pool) or cold (created).",
    ["launch_type"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
RECONCILE_ERRORS = Counter(
    f"{_PREFIX}_reconcile_errors_total",
    "Reconciles that ended in a failure, by the reason shown in the Ready condition.",
    ["reason"],
)

HUB_CALLS = Counter(
    f"{_PREFIX}_hub_calls_total",
    "HTTP requests to the Hub API by route and status code (timeout/network: no response).",
    ["route", "code"],
)
HUB_LATENCY = Histogram(
    f"{_PREFIX}_hub_call_seconds",
    "Time from sending a Hub request to its response headers.",
    ["route"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
HUB_RETRIES = Counter(
    f"{_PREFIX}_hub_retries_total", "In-call retries of idempotent Hub reads, by route.", ["route"]
)
HUB_REFUSED = Counter(
    f"{_PREFIX}_hub_calls_refused_total",
    "Hub calls refused locally before sending: paused after a 429, or not the leader.",
    ["reason"],
)
RATE_LIMIT_WAIT = Histogram(
    f"{_PREFIX}_hub_rate_limit_wait_seconds",
    "Time each Hub request waited for the operator's own rate limiter.",
    buckets=(0, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
HUB_PAUSES = Counter(f"{_PREFIX}_hub_pauses_total", "429 answers that paused every Hub call.")
HUB_PAUSED_UNTIL = Gauge(
    f"{_PREFIX}_hub_paused_until_timestamp_seconds", "Unix time until which Hub calls are paused."
)
EDGE_PROBES = Counter(
    f"{_PREFIX}_edge_probes_total",
    "Health probes of building Spaces' apps at the Hub's edge (no Hub API call), by answer: healthy, "
    "refused (429: the rate in use is halved), or other (still building, an error, no answer).",
    ["answer"],
)
EDGE_PROBE_RATE = Gauge(
    f"{_PREFIX}_edge_probe_rate",
    "Edge probes a second the operator may send now: --edge-probe-rate, or less for a minute after the "
    "edge answered 429.",
)

SWEEP_PASSES = Counter(f"{_PREFIX}_sweep_passes_total", "Orphan sweeper passes, by outcome.", ["outcome"])
SWEEP_DECISIONS = Counter(
    f"{_PREFIX}_sweep_decisions_total", "Orphan sweeper decisions about Spaces, by verdict.", ["verdict"]
)
ORPHANS_FOUND = Gauge(f"{_PREFIX}_orphans_found", "Orphaned Spaces found by the last sweeper pass.")
ORPHANS_SWEPT = Counter(f"{_PREFIX}_orphans_swept_total", "Orphaned Spaces the sweeper deleted.")

LEADER = Gauge(f"{_PREFIX}_leader", "1 while this process holds the leader Lease.")
SHARD_OVERLAP = Gauge(
    f"{_PREFIX}_shard_overlap",
    "1 while another shard's live Lease claims some of this shard's namespaces (the loser does not act).",
)
SHARD_YIELDING = Gauge(
    f"{_PREFIX}_shard_yielding",
    "1 for each other shard's Lease (namespace/name) this process stands by for: it serves nothing while "
    "any is 1.",
    ["lease"],
)
LOOP_LAG = Gauge(f"{_PREFIX}_event_loop_lag_seconds", "How late the event loop's last heartbeat was.")
WATCH_STALLED = Gauge(
    f"{_PREFIX}_watch_stalled_sessions", "Sessions changed in the API but not delivered by the watch in time."
)


def serve(port: int) -> None:
    """Serve /metrics on all interfaces in a daemon thread; port 0 disables it."""
    if port:
        start_http_server(port)


#: Since when a session is in some state, read from its status: None when it is not in it, "" when it
#: is but the time is unknown, else an RFC 3339 time.
Since = Callable[[Mapping[str, Any]], str | None]


def pending_approval_since(status: Mapping[str, Any]) -> str | None:
    pending = status.get("pendingApproval")
    return (pending.get("requestedTime") or "") if pending else None


def condition_true_since(condition_type: str) -> Since:
    """Since when the condition of this type has been True (its lastTransitionTime)."""

    def since(status: Mapping[str, Any]) -> str | None:
        for condition in status.get("conditions") or []:
            if condition.get("type") == condition_type:
                return (
                    (condition.get("lastTransitionTime") or "") if condition.get("status") == "True" else None
                )
        return None

    return since


class SessionTally:
    """Sessions in one state, by UID, kept from the watch of sessions: their count per namespace (0, not
    a vanished series, once none is in it) and, with `oldest`, since when the longest-standing one of
    each namespace has been (Unix time; no series while none is, or its time is unknown)."""

    def __init__(self, count: Gauge, since: Since, oldest: Gauge | None = None) -> None:
        self._count = count
        self._since = since
        self._oldest = oldest
        self._members: dict[str, tuple[str, str]] = {}  # uid -> (namespace, since)
        self._exported: set[str] = set()

    def on_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata", {})
        uid = meta.get("uid")
        if not uid:
            return
        since = None if event_type == "DELETED" else self._since(body.get("status") or {})
        entry = None if since is None else (meta.get("namespace", ""), since)
        if self._members.get(uid) == entry:
            return  # most events: nothing to export anew
        if entry is None:
            del self._members[uid]
        else:
            self._members[uid] = entry
        self._export()

    def _export(self) -> None:
        counts = Tally(namespace for namespace, _ in self._members.values())
        for namespace in self._exported - counts.keys():
            self._count.labels(namespace).set(0)
        for namespace, count in counts.items():
            self._count.labels(namespace).set(count)
        if self._oldest is not None:
            oldest: dict[str, float] = {}
            for namespace, since in self._members.values():
                moment = _unix_time(since)
                if moment is not None:
                    oldest[namespace] = min(moment, oldest.get(namespace, moment))
            for namespace in self._exported | counts.keys():
                if namespace in oldest:
                    self._oldest.labels(namespace).set(oldest[namespace])
                else:
                    with suppress(KeyError):  # never exported
                        self._oldest.remove(namespace)
        self._exported |= counts.keys()


def _unix_time(rfc3339: str) -> float | None:
    try:
        return parse_rfc3339(rfc3339).timestamp() if rfc3339 else None
    except ValueError:
        return None


#: The operator's tallies, fed by every event of the watch of sessions (the gauges are process-wide too).
SESSION_TALLIES = (
    SessionTally(PENDING_APPROVALS, pending_approval_since, PENDING_APPROVAL_OLDEST),
    SessionTally(SESSIONS_BUDGET_EXHAUSTED, condition_true_since(BUDGET_EXHAUSTED)),
    SessionTally(SESSIONS_STALLED, condition_true_since(STALLED)),
)
