"""Prometheus metrics of the operator, served on `--metrics-port` from a thread of its own.

The server thread answers even while the event loop is blocked, so a scrape still shows what
the loop was doing last (`sandbox_operator_event_loop_lag_seconds` keeps growing).
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Mapping
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server

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


class PendingApprovals:
    """Which sessions wait for an approver, by UID; exports the count per namespace."""

    def __init__(self) -> None:
        self._waiting: dict[str, str] = {}  # uid -> namespace
        self._exported: set[str] = set()

    def on_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata", {})
        uid = meta.get("uid")
        if not uid:
            return
        waiting = event_type != "DELETED" and bool((body.get("status") or {}).get("pendingApproval"))
        if waiting:
            self._waiting[uid] = meta.get("namespace", "")
        else:
            self._waiting.pop(uid, None)
        self._export()

    def _export(self) -> None:
        counts = Tally(self._waiting.values())
        for namespace in self._exported - counts.keys():
            PENDING_APPROVALS.labels(namespace).set(0)
        for namespace, count in counts.items():
            PENDING_APPROVALS.labels(namespace).set(count)
        self._exported |= counts.keys()


#: The operator's one tracker (the gauge is process-wide too).
pending_approvals = PendingApprovals()
