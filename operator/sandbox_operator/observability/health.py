"""Liveness that means progress: the event loop runs on time and the watch delivers changes.

kopf's liveness endpoint alone proves only that its HTTP task answers. Two checks are added:

* a heartbeat task that wakes every second; if it ran late by more than `max_loop_lag`, some
  code blocked the event loop (a blocked loop cannot answer the probe at all, which fails it too);
* the watch: every session change the API server holds must reach the handlers. A periodic
  list is compared with the resourceVersions the watch delivered; a session whose newer version
  has not arrived within kopf's own watch timeouts, while no handler was busy with it, means
  the watch stalled (kopf reconnects silent streams after `inactivity_timeout` and ends every
  request after `server_timeout`, so a healthy watch is never that late).

The same events feed the per-session metrics: sessions by phase, estimated spend, and reconcile
errors (each rise of status.failures is a failed pass, counted by the Ready condition's reason).

Readiness is another question, served on an endpoint of its own for the whole life of the process:
is this process doing its part? The leader is ready once its watches delivered their initial
listing (as controller-runtime waits for its caches to sync); a standby is ready while it waits for
the Lease as it should, seeing who acts instead, so that a rolling update proceeds while the old pod
still holds the Lease. A standby does no work: no Service may send it what only the leader serves
(the metrics Service is fine, every process answers it; `sandbox_operator_leader` tells them apart).
"""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from sandbox_operator.core.conditions import READY
from sandbox_operator.observability import metrics

log = logging.getLogger(__name__)

#: How often the heartbeat wakes up.
HEARTBEAT_PERIOD = 1.0


class HealthMonitor:
    def __init__(self, *, max_loop_lag: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_loop_lag = max_loop_lag
        self._clock = clock
        #: When the heartbeat last woke up; None until it runs.
        self._last_beat: float | None = None
        self._lag = 0.0
        self._phases: dict[str, str] = {}
        #: Sessions per phase, kept with `_phases`: counting them anew on every event costs O(N) each.
        self._phase_counts: Counter[str] = Counter()
        self._failures: dict[str, int] = {}
        self._exported: set[str] = set()
        self._names: dict[str, tuple[str, str]] = {}
        self._seen: dict[str, str] = {}
        self._busy: Counter[str] = Counter()
        #: Sessions whose listed resourceVersion the watch had not delivered, since when.
        self._suspect: dict[str, float] = {}
        self._stalled: list[str] = []
        metrics.LOOP_LAG.set_function(self.loop_lag)

    # -- events ------------------------------------------------------------------------------

    def on_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """Every watch event of a session (type None: kopf's initial listing)."""
        meta = body.get("metadata", {})
        uid = meta.get("uid")
        if not uid:
            return
        self._suspect.pop(uid, None)
        if event_type == "DELETED":
            self._forget(uid)
        else:
            status = body.get("status") or {}
            self._count_failures(uid, status)
            self._set_phase(uid, status.get("phase") or "Pending")
            self._seen[uid] = meta.get("resourceVersion", "")
            self._names[uid] = (meta.get("namespace", ""), meta.get("name", ""))
            spend = (status.get("spend") or {}).get("estimatedUsd")
            if spend is not None:
                metrics.SPEND_USD.labels(*self._names[uid]).set(float(spend))
        self._export_phases()

    def _count_failures(self, uid: str, status: Mapping[str, Any]) -> None:
        """Failures before this process first saw the session were counted by the one before it."""
        failures = int(status.get("failures") or 0)
        previous = self._failures.get(uid)
        self._failures[uid] = failures
        if previous is not None and failures > previous:
            ready: Mapping[str, Any] = next(
                (c for c in status.get("conditions") or [] if c.get("type") == READY), {}
            )
            metrics.RECONCILE_ERRORS.labels(ready.get("reason") or "Unknown").inc(failures - previous)

    def _forget(self, uid: str) -> None:
        self._failures.pop(uid, None)
        self._set_phase(uid, None)
        self._seen.pop(uid, None)
        names = self._names.pop(uid, None)
        if names is not None:
            with suppress(KeyError):  # no spend was ever reported for it
                metrics.SPEND_USD.remove(*names)

    def _set_phase(self, uid: str, phase: str | None) -> None:
        """Record a session's phase (None: forgotten), keeping the count per phase."""
        previous = self._phases.pop(uid, None) if phase is None else self._phases.get(uid)
        if previous == phase:
            return
        if previous is not None:
            self._phase_counts[previous] -= 1
        if phase is not None:
            self._phases[uid] = phase
            self._phase_counts[phase] += 1
            self._exported.add(phase)  # a phase nobody is in any more is exported as 0, not dropped

    def _export_phases(self) -> None:
        for phase in self._exported:
            metrics.SESSIONS.labels(phase).set(self._phase_counts[phase])

    @contextmanager
    def working(self, uid: str) -> Iterator[None]:
        """Around a change handler (finalize): while it runs, kopf holds that session's newer events
        back on purpose, which is no stalled watch."""
        self._busy[uid] += 1
        try:
            yield
        finally:
            self._busy[uid] -= 1
            if self._busy[uid] <= 0:
                del self._busy[uid]

    # -- watch -------------------------------------------------------------------------------

    def compare(self, listed: Mapping[str, str], stall_after: float) -> list[str]:
        """Compare a fresh list (uid -> resourceVersion) with what the watch delivered.

        Returns the sessions stalled for longer than `stall_after` seconds, and remembers them
        for `problems`.
        """
        now = self._clock()
        for uid in list(self._suspect):
            if uid not in listed:
                del self._suspect[uid]
        for uid, version in listed.items():
            if self._seen.get(uid) == version:
                self._suspect.pop(uid, None)
            else:
                self._suspect.setdefault(uid, now)
        self._stalled = sorted(
            uid for uid, since in self._suspect.items() if now - since > stall_after and uid not in self._busy
        )
        metrics.WATCH_STALLED.set(len(self._stalled))
        return self._stalled

    # -- event loop --------------------------------------------------------------------------

    async def heartbeat(self) -> None:
        """Run forever: record how late each wake-up is."""
        self._last_beat = self._clock()
        while True:
            before = self._clock()
            await asyncio.sleep(HEARTBEAT_PERIOD)
            self._last_beat = self._clock()
            self._lag = max(0.0, self._last_beat - before - HEARTBEAT_PERIOD)

    def loop_lag(self) -> float:
        """The last wake-up's delay, or how overdue the next one is if the loop is blocked now."""
        if self._last_beat is None:
            return 0.0
        overdue = self._clock() - self._last_beat - HEARTBEAT_PERIOD
        return max(self._lag, overdue, 0.0)

    # -- verdict -----------------------------------------------------------------------------

    def problems(self) -> list[str]:
        """Why the operator is not alive in a useful way; empty when healthy."""
        found = []
        lag = self.loop_lag()
        if lag > self.max_loop_lag:
            found.append(f"the event loop was blocked for {lag:.1f}s (limit {self.max_loop_lag:.0f}s)")
        if self._stalled:
            names = ", ".join("/".join(self._names.get(uid, ("?", uid))) for uid in self._stalled[:5])
            found.append(f"the watch has not delivered changes of {len(self._stalled)} session(s): {names}")
        return found

    def report(self) -> dict[str, Any]:
        """What the liveness endpoint shows when healthy."""
        return {
            "loopLagSeconds": round(self.loop_lag(), 3),
            "sessions": len(self._phases),
            "watchSuspects": len(self._suspect),
        }


def stall_after(settings: Any) -> float:
    """How late a healthy kopf watch can be: one whole watch request, plus the silence after which
    kopf itself gives up on a stream and reconnects."""
    watching = settings.watching
    request = float(watching.client_timeout or watching.server_timeout or 300)
    return request + float(watching.inactivity_timeout)


# -- readiness -------------------------------------------------------------------------------------


class WatchSync:
    """Whether each watch delivered its initial listing: every object that a listing made after the
    watch started holds has reached the handlers (objects deleted since are no longer listed, so a
    later listing settles them). Once a kind is synced it stays so, and its UIDs are dropped."""

    def __init__(self, kinds: Iterable[str]) -> None:
        #: The UIDs each kind still syncing has delivered.
        self._delivered: dict[str, set[str]] = {kind: set() for kind in kinds}

    def on_event(self, kind: str, body: Mapping[str, Any]) -> None:
        delivered = self._delivered.get(kind)
        uid = body.get("metadata", {}).get("uid")
        if delivered is not None and uid:
            delivered.add(uid)

    def check(self, kind: str, listed: Iterable[str]) -> bool:
        """Whether the watch of `kind` has delivered every UID of a listing made after it started."""
        delivered = self._delivered.get(kind)
        if delivered is not None and set(listed) <= delivered:
            del self._delivered[kind]
            delivered = None
        return delivered is None

    def pending(self) -> list[str]:
        """The kinds whose watch has not yet been seen to deliver its initial listing."""
        return sorted(self._delivered)


@dataclass(frozen=True)
class Standby:
    """Why a process waiting for the leader Lease does not act, and whether it waits as it should: it
    saw who acts instead (another holder, an overlapping shard that wins), rather than failing to read
    or write the Lease."""

    reason: str
    sound: bool


def readiness(standby: Standby | None, sync: WatchSync) -> tuple[bool, dict[str, Any]]:
    """Whether the process is ready, and what its endpoint says: a standby while it waits soundly; the
    leader (standby None) once its watches delivered their initial listing."""
    if standby is not None:
        return standby.sound, {"role": "standby", "reason": standby.reason}
    pending = sync.pending()
    if pending:
        waiting = f"waiting for the watches of {', '.join(pending)} to deliver their initial listing"
        return False, {"role": "leader", "reason": waiting}
    return True, {"role": "leader"}


async def serve_json(endpoint: str, answer: Callable[[], tuple[int, dict[str, Any]]]) -> web.AppRunner:
    """Answer GETs of the endpoint URL's path with `answer()` (HTTP status, JSON body) until the runner
    returned is cleaned up."""
    parts = urllib.parse.urlsplit(endpoint)

    async def get(request: web.Request) -> web.Response:
        status, body = answer()
        return web.json_response(body, status=status)

    app = web.Application()
    app.router.add_get(parts.path or "/", get)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, parts.hostname or "localhost", parts.port or 80).start()
    return runner


async def serving_readiness(
    endpoint: str | None, verdict: Callable[[], tuple[bool, dict[str, Any]]], main: Coroutine[Any, Any, None]
) -> None:
    """Run `main` with the readiness endpoint (None: none) served from start to exit: 200 when ready,
    503 when not, with why in the body."""
    try:
        runner = await serve_json(endpoint, lambda: _http(verdict())) if endpoint else None
    except BaseException:
        main.close()
        raise
    try:
        await main
    finally:
        if runner is not None:
            await runner.cleanup()


def _http(verdict: tuple[bool, dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    ready, body = verdict
    return (200 if ready else 503), body
