"""The liveness checks (a stalled watch and a blocked event loop, on a fake clock), readiness, and the
per-session tallies fed from the watch."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Any
from unittest.mock import patch

import pytest

from sandbox_operator.core.conditions import BUDGET_EXHAUSTED, STALLED
from sandbox_operator.k8s.transport import ApiError
from sandbox_operator.k8s.watch_checks import sync_checks
from sandbox_operator.observability import metrics
from sandbox_operator.observability.health import (
    HealthMonitor,
    Standby,
    WatchSync,
    readiness,
    serving_readiness,
)
from sandbox_operator.observability.metrics import SessionTally, condition_true_since, pending_approval_since
from sandbox_testbench.controlplane.processes import free_ports
from tests.support.clock import ManualClock


def event(uid: str, version: str, **status: Any) -> dict[str, Any]:
    meta = {"uid": uid, "resourceVersion": version, "namespace": "team", "name": f"s-{uid}"}
    return {"metadata": meta, "status": status}


def test_a_change_the_watch_does_not_deliver_fails_liveness_after_the_stall_time() -> None:
    clock = ManualClock(100.0)
    monitor = HealthMonitor(clock=clock)
    monitor.on_event(None, event("a", "1"))
    assert monitor.compare({"a": "2"}, stall_after=400) == []  # maybe in flight
    clock.now += 401
    assert monitor.compare({"a": "2"}, stall_after=400) == ["a"]
    assert "team/s-a" in " ".join(monitor.problems())


def test_a_busy_watch_with_late_events_is_healthy() -> None:
    clock = ManualClock(100.0)
    monitor = HealthMonitor(clock=clock)
    for version in range(1, 10):
        monitor.compare({"a": str(version)}, stall_after=400)  # listed just before its event arrives
        monitor.on_event("MODIFIED", event("a", str(version)))
        clock.now += 300
    assert monitor.compare({"a": "10"}, stall_after=400) == []
    assert monitor.problems() == []


def test_sessions_held_back_by_a_running_handler_are_not_stalled() -> None:
    clock = ManualClock(100.0)
    monitor = HealthMonitor(clock=clock)
    with monitor.working("a"):
        monitor.compare({"a": "2"}, stall_after=400)
        clock.now += 500
        assert monitor.compare({"a": "2"}, stall_after=400) == []


def test_deleted_sessions_are_forgotten() -> None:
    clock = ManualClock(100.0)
    monitor = HealthMonitor(clock=clock)
    monitor.on_event(None, event("a", "1"))
    monitor.compare({"a": "2"}, stall_after=400)
    clock.now += 500
    assert monitor.compare({}, stall_after=400) == []


def test_a_blocked_event_loop_fails_liveness() -> None:
    clock = ManualClock(100.0)
    monitor = HealthMonitor(max_loop_lag=10, clock=clock)

    async def check() -> tuple[list[str], list[str]]:
        beat = asyncio.create_task(monitor.heartbeat())
        await asyncio.sleep(0)  # the heartbeat starts and waits for its next wake-up
        clock.now += 5
        on_time = monitor.problems()
        clock.now += 10  # no wake-up for 15s: something blocks the loop
        late = monitor.problems()
        beat.cancel()
        return on_time, late

    on_time, late = asyncio.run(check())
    assert on_time == []
    assert late and "event loop" in late[0]


def test_the_phase_gauge_follows_each_sessions_moves_and_deletions() -> None:
    def exported() -> dict[str, float]:
        return {
            sample.labels["phase"]: sample.value
            for sample in metrics.SESSIONS.collect()[0].samples
            if sample.labels["phase"] in ("Pending", "Creating", "Ready")
        }

    monitor = HealthMonitor(clock=ManualClock(100.0))
    monitor.on_event(None, event("a", "1"))
    monitor.on_event(None, event("b", "1", phase="Creating"))
    monitor.on_event("MODIFIED", event("a", "2", phase="Creating"))
    monitor.on_event("MODIFIED", event("a", "3", phase="Creating"))  # the same phase again
    monitor.on_event("MODIFIED", event("b", "2", phase="Ready"))
    assert exported() == {"Pending": 0, "Creating": 1, "Ready": 1}  # Pending emptied: 0, not gone
    monitor.on_event("DELETED", event("a", "4", phase="Creating"))
    assert exported() == {"Pending": 0, "Creating": 0, "Ready": 1}


# -- readiness -------------------------------------------------------------------------------------


def test_a_watch_is_synced_once_it_delivered_everything_a_later_listing_holds() -> None:
    sync = WatchSync(["agentsessions", "agentsessionpools"])
    assert not sync.check("agentsessions", ["a", "b"])  # listed before the watch delivered them
    sync.on_event("agentsessions", event("a", "1"))
    assert not sync.check("agentsessions", ["a", "b"])
    sync.on_event("agentsessions", event("b", "1"))
    sync.on_event("agentsessionpools", event("a", "1"))  # another kind's objects count for it only
    assert sync.check("agentsessions", ["a", "b"])
    assert sync.pending() == ["agentsessionpools"]
    assert sync.check("agentsessionpools", [])  # nothing to deliver
    assert sync.pending() == []
    assert sync.check("agentsessions", ["c"])  # synced for good: later objects are the watch's business


def test_the_sync_check_lists_until_the_watches_delivered_and_then_stops() -> None:
    sync = WatchSync(["agentsessions", "agentsessionpools"])
    lists: list[str] = []

    async def listing(kind: str, uids: list[str]) -> list[dict[str, Any]]:
        lists.append(kind)
        if kind == "agentsessions" and len(lists) == 3:
            sync.on_event(kind, event("a", "1"))  # the watch catches up after the first comparison
        return [event(uid, "1") for uid in uids]

    async def check() -> None:
        listers = {
            "agentsessions": lambda: listing("agentsessions", ["a"]),
            "agentsessionpools": lambda: listing("agentsessionpools", []),
        }
        await asyncio.wait_for(sync_checks(sync, listers), 5)

    with patch("sandbox_operator.k8s.watch_checks.SYNC_CHECK_INTERVAL", 0.001):
        asyncio.run(check())
    assert sync.pending() == []
    assert lists == ["agentsessionpools", "agentsessions", "agentsessions"]


def test_the_sync_check_retries_a_listing_the_api_refuses() -> None:
    sync = WatchSync(["agentsessions"])
    answers: list[Exception | None] = [ApiError(503, "Service Unavailable"), None]

    async def listing() -> list[dict[str, Any]]:
        error = answers.pop(0)
        if error is not None:
            raise error
        return []

    with patch("sandbox_operator.k8s.watch_checks.SYNC_CHECK_INTERVAL", 0.001):
        asyncio.run(asyncio.wait_for(sync_checks(sync, {"agentsessions": listing}), 5))
    assert answers == [] and sync.pending() == []


def test_the_leader_is_ready_once_its_watches_are_synced() -> None:
    sync = WatchSync(["agentsessions"])
    ready, body = readiness(None, sync)
    assert not ready and body["role"] == "leader" and "agentsessions" in body["reason"]
    sync.check("agentsessions", [])
    assert readiness(None, sync) == (True, {"role": "leader"})


def test_a_standby_is_ready_while_it_waits_soundly_whatever_the_watches() -> None:
    sync = WatchSync(["agentsessions"])  # a standby runs no watch
    held = Standby("waiting for the leader Lease ops/so (held by so-0)", sound=True)
    assert readiness(held, sync) == (True, {"role": "standby", "reason": held.reason})
    failing = Standby("waiting for the leader Lease ops/so (cannot read the Lease: 403 Forbidden)", False)
    assert readiness(failing, sync) == (False, {"role": "standby", "reason": failing.reason})


def test_the_readiness_endpoint_answers_for_the_whole_run_200_or_503() -> None:
    sync = WatchSync(["agentsessions"])
    (port,) = free_ports(1)
    url = f"http://127.0.0.1:{port}/readyz"
    answers: list[tuple[int, dict[str, Any]]] = []

    def get() -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    async def main() -> None:
        answers.append(await asyncio.to_thread(get))
        sync.check("agentsessions", [])
        answers.append(await asyncio.to_thread(get))

    asyncio.run(serving_readiness(url, lambda: readiness(None, sync), main()))
    assert [status for status, _ in answers] == [503, 200]
    assert answers[1][1] == {"role": "leader"}
    with pytest.raises(urllib.error.URLError):  # gone with the run
        urllib.request.urlopen(url, timeout=5)


# -- session tallies -------------------------------------------------------------------------------


def condition(type_: str, status: str, since: str = "2026-11-29T04:00:00Z") -> dict[str, str]:
    return {"type": type_, "status": status, "lastTransitionTime": since, "reason": "R", "message": ""}


def samples(gauge: Any, namespace: str) -> float | None:
    found = [s.value for s in gauge.collect()[0].samples if s.labels.get("namespace") == namespace]
    return found[0] if found else None


def test_sessions_with_a_true_condition_are_counted_per_namespace() -> None:
    tally = SessionTally(metrics.SESSIONS_STALLED, condition_true_since(STALLED))
    tally.on_event(None, event("a", "1", conditions=[condition(STALLED, "True")]))
    tally.on_event(None, event("b", "1", conditions=[condition(STALLED, "True")]))
    tally.on_event(None, event("c", "1", conditions=[condition(STALLED, "False")]))
    tally.on_event(None, event("d", "1", conditions=[condition(BUDGET_EXHAUSTED, "True")]))
    assert samples(metrics.SESSIONS_STALLED, "team") == 2
    tally.on_event("MODIFIED", event("a", "2", conditions=[condition(STALLED, "False")]))
    tally.on_event("DELETED", event("b", "2", conditions=[condition(STALLED, "True")]))
    assert samples(metrics.SESSIONS_STALLED, "team") == 0  # emptied: 0, not gone


def test_the_operators_tallies_follow_budgets_and_stalls_from_the_watch() -> None:
    exhausted = {"conditions": [condition(BUDGET_EXHAUSTED, "True")]}
    body = {"metadata": {"uid": "tally-1", "namespace": "tallied"}, "status": exhausted}
    for tally in metrics.SESSION_TALLIES:
        tally.on_event(None, body)
    assert samples(metrics.SESSIONS_BUDGET_EXHAUSTED, "tallied") == 1
    assert samples(metrics.SESSIONS_STALLED, "tallied") is None
    assert samples(metrics.PENDING_APPROVALS, "tallied") is None
    for tally in metrics.SESSION_TALLIES:
        tally.on_event("DELETED", body)
    assert samples(metrics.SESSIONS_BUDGET_EXHAUSTED, "tallied") == 0


def test_the_oldest_pending_approval_is_exported_as_a_timestamp_per_namespace() -> None:
    oldest = metrics.PENDING_APPROVAL_OLDEST
    tally = SessionTally(metrics.PENDING_APPROVALS, pending_approval_since, oldest)

    def waiting(uid: str, since: str | None) -> dict[str, Any]:
        pending = {"hardware": "t4-small", **({"requestedTime": since} if since else {})}
        return {"metadata": {"uid": uid, "namespace": "waits"}, "status": {"pendingApproval": pending}}

    tally.on_event(None, waiting("new", "2026-11-29T05:00:00Z"))
    tally.on_event(None, waiting("old", "2026-11-29T04:00:00Z"))
    tally.on_event(None, waiting("unknown", None))  # counted, but no time to compare
    assert samples(metrics.PENDING_APPROVALS, "waits") == 3
    assert samples(oldest, "waits") == datetime(2026, 11, 29, 4, tzinfo=UTC).timestamp()
    tally.on_event("MODIFIED", {"metadata": {"uid": "old", "namespace": "waits"}, "status": {}})
    assert samples(oldest, "waits") == datetime(2026, 11, 29, 5, tzinfo=UTC).timestamp()
    tally.on_event("DELETED", waiting("new", "2026-11-29T05:00:00Z"))
    assert samples(oldest, "waits") is None  # only a session of unknown time waits
    assert samples(metrics.PENDING_APPROVALS, "waits") == 1
