"""The watch checked against listings: a session whose change the API server holds but the watch has
not delivered in time fails liveness (observability/health.py's HealthMonitor judges), and a new
leader is ready once each watch delivered its initial listing (WatchSync)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from sandbox_operator.k8s.transport import ApiError
from sandbox_operator.observability.health import HealthMonitor, WatchSync

log = logging.getLogger(__name__)

#: How often the sessions are listed to check the watch.
WATCH_CHECK_INTERVAL = 60.0
#: How often a new leader lists what its watches have not yet delivered, until they have.
SYNC_CHECK_INTERVAL = 1.0


async def _listed_versions(list_sessions: Callable[[], Awaitable[list[dict[str, Any]]]]) -> dict[str, str]:
    """UID -> resourceVersion of every session listed now. The bodies go at once: a thousand of them
    held until the next check were megabytes the heap kept, and each check's RSS step stayed."""
    sessions = await list_sessions()
    return {s["metadata"]["uid"]: s["metadata"].get("resourceVersion", "") for s in sessions}


async def watch_checks(
    monitor: HealthMonitor,
    list_sessions: Callable[[], Awaitable[list[dict[str, Any]]]],
    stall_seconds: Callable[[], float],
) -> None:
    """Run forever: list the sessions now and then and compare with what the watch delivered."""
    while True:
        await asyncio.sleep(WATCH_CHECK_INTERVAL)
        try:
            listed = await _listed_versions(list_sessions)
        except ApiError as error:
            log.warning("cannot list sessions to check the watch: %s %s", error.status, error.reason)
            continue
        stalled = monitor.compare(listed, stall_seconds())
        if stalled:
            log.error("the watch has not delivered changes of %d session(s); liveness fails", len(stalled))


async def sync_checks(
    sync: WatchSync, listers: Mapping[str, Callable[[], Awaitable[list[dict[str, Any]]]]]
) -> None:
    """Until every watch is synced: list what each kind holds and compare with what its watch delivered.
    The first listing waits a moment, so that the watches have started (with nothing to list, a kind
    is synced at once)."""
    refused: dict[str, int] = {}  # the last status each kind's listing was refused with, said once
    while sync.pending():
        await asyncio.sleep(SYNC_CHECK_INTERVAL)
        for kind in sync.pending():
            try:
                listed = await listers[kind]()
            except ApiError as error:
                if refused.get(kind) != error.status:
                    log.warning("cannot list %s to check the watch: %s %s", kind, error.status, error.reason)
                refused[kind] = error.status
                continue
            if sync.check(kind, (obj["metadata"]["uid"] for obj in listed)):
                log.info("the watch of %s delivered its initial listing (%d objects)", kind, len(listed))
