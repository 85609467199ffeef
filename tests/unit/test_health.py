"""The liveness checks: a stalled watch and a blocked event loop, on a fake clock."""

from __future__ import annotations

import asyncio
from typing import Any

from sandbox_operator import metrics
from sandbox_operator.health import HealthMonitor
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
