"""Every kopf handler of the operator, sessions' and pools', bound to one Runtime on a registry of
their own (no import-time globals): the loops are daemons, deletion runs a finalizer, and watch events
feed metrics, liveness and readiness and wake the loops."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from functools import partial
from typing import Any

import aiohttp
import kopf

from sandbox_operator import api
from sandbox_operator.k8s.transport import COMPONENT, USER_AGENT, credentials
from sandbox_operator.k8s.watch_checks import sync_checks, watch_checks
from sandbox_operator.observability import metrics
from sandbox_operator.observability.health import stall_after
from sandbox_operator.pools.loop import finalize_pool, run_pool
from sandbox_operator.runtime import Runtime
from sandbox_operator.sessions.loop import finalize, guarded, run_session, session_loop, spec_changed
from sandbox_operator.sweeper import Sweeper

#: kopf's retry delay for an error no code path expected (a bug); expected failures set their own.
UNEXPECTED_ERROR_BACKOFF = 10.0


#: Connections kopf may open to the API server besides its watch streams (each holds one).
KUBE_CONNECTIONS = 32


def bounded_session(
    info: kopf.ConnectionInfo | None, watch_streams: int
) -> kopf.ConnectionInfo | kopf.AiohttpSession | None:
    """kopf's own session, but with a bounded connection pool: kopf's has no limit, so a burst of a
    thousand sessions (their finalizers, their Events) opened hundreds of TLS connections at once, each
    with its buffers: the biggest part of the operator's peak memory. Must run in the event loop.
    It carries the operator's User-Agent, so kopf's writes (finalizers, annotations, status, Events)
    have the operator's field manager, as its own calls do (k8s/transport.py)."""
    if info is None:
        return None
    limit = KUBE_CONNECTIONS + max(1, watch_streams)
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit, ssl=info.as_ssl_context()),
        headers={**info.as_http_headers(), "User-Agent": USER_AGENT},
        proxy=info.proxy_url,
        trust_env=info.trust_env,
    )
    return kopf.AiohttpSession(
        server=info.server,
        default_namespace=info.default_namespace,
        expiration=info.expiration,
        priority=info.priority,
        aiohttp_session=session,
    )


class NoDiffBase(kopf.DiffBaseStorage):
    """No last-handled configuration: no handler here reacts to a diff (the loop reads the live body
    and wakes on a new generation), so storing one is an annotation patch per session for nothing.

    Every object has one and the same empty essence, so kopf sees no change in any event: it does not
    deep-copy each body to build one, nor take each event for a creation (whose handling formats the
    whole body for a debug line). Deletion is seen on the object itself, not in a diff."""

    def build(self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return kopf.BodyEssence()

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


#: The watch-event handlers of sessions (metrics, liveness, wake-ups), of pools (spec changes) and of
#: pools' claimants (a claimant gone): kopf logs each of their runs at INFO.
TRACKING_HANDLER = "track-session"
POOL_TRACKING_HANDLERS = ("track-pool", "track-pool-claimant")
#: The loops (kopf daemons) and finalizers (deletion handlers) of sessions and pools, as kopf's log
#: lines name them; a finalizer's progress is kept under status by its name.
SESSION_LOOP, SESSION_FINALIZER = "reconcile-session", "finalize-session"
POOL_LOOP, POOL_FINALIZER = "reconcile-pool", "finalize-pool"

#: kopf's lines that say nothing to act on: a tracking handler's success (one per watch event), and a
#: loop kopf cancelled while it waited on a call because its object is being deleted or the operator
#: stops (the finalizer, or the next process, carries on; a WARNING each time looked like a fault).
QUIET_KOPF_LINES = frozenset(
    {f"Handler '{handler}' succeeded." for handler in (TRACKING_HANDLER, *POOL_TRACKING_HANDLERS)}
    | {f"Daemon '{loop}' is cancelled. Will escalate." for loop in (SESSION_LOOP, POOL_LOOP)}
)


def quiet_kopf_lines(record: logging.LogRecord) -> bool:
    """kopf's lines that say nothing to act on go to DEBUG (QUIET_KOPF_LINES)."""
    if logging.DEBUG < record.levelno <= logging.WARNING and record.getMessage() in QUIET_KOPF_LINES:
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger("kopf.objects").isEnabledFor(logging.DEBUG)
    return True


#: kopf's poster of the handlers' Events, which logs every failed attempt at ERROR level.
EVENT_POSTER_LOGGER = "kopf._core.engines.posting"


def events_are_auxiliary(record: logging.LogRecord) -> bool:
    """An Event the API server refuses is no error of the operator's (kopf itself ignores one it cannot
    post, with a WARNING), so neither are the attempts before: a namespace being deleted refuses every
    Event of its sessions' finalizers, with a minute of retries."""
    if record.levelno > logging.WARNING:
        record.levelno, record.levelname = logging.WARNING, "WARNING"
    return True


def build_registry(rt: Runtime) -> kopf.OperatorRegistry:
    """Handlers bound to one Runtime, on a registry of their own (no import-time globals)."""
    registry = kopf.OperatorRegistry()
    _register_operator(registry, rt)
    _register_sessions(registry, rt)
    _register_pools(registry, rt)
    return registry


def _configure(settings: kopf.OperatorSettings, rt: Runtime) -> None:
    """kopf's settings for this operator, and its log lines of watch events at DEBUG."""
    settings.persistence.finalizer = api.FINALIZER
    # Handler progress under status, which session editors cannot write: in annotations, a forged
    # success of the finalizer would let a session go without its Space being deleted.
    settings.persistence.progress_storage = kopf.StatusProgressStorage(name=api.HANDLER_PROGRESS)
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.scanning.disabled = True
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    # The handlers' Events come from the operator, as the sweeper's do (KubeClient.post_event).
    settings.posting.reporting_component = COMPONENT
    settings.posting.reporting_instance = rt.kube.instance
    # Before any watch starts (kopf runs startup handlers first); a filter is added once however often.
    logging.getLogger("kopf.objects").addFilter(quiet_kopf_lines)
    logging.getLogger(EVENT_POSTER_LOGGER).addFilter(events_are_auxiliary)


def _background(settings: kopf.OperatorSettings, rt: Runtime) -> list[asyncio.Task[None]]:
    """What runs beside the handlers: heartbeat, watch and sync checks, listings, edge probes, sweeps."""
    listers = {plural: partial(rt.kube.list_sessions, rt.namespaces, plural) for plural in rt.sync.pending()}
    tasks = [
        asyncio.create_task(rt.monitor.heartbeat()),
        asyncio.create_task(sync_checks(rt.sync, listers)),
        asyncio.create_task(
            watch_checks(
                rt.monitor, lambda: rt.kube.list_sessions(rt.namespaces), lambda: stall_after(settings)
            )
        ),
    ]
    if rt.observer.enabled:
        tasks.append(asyncio.create_task(rt.observer.run()))
    if rt.prober.enabled:
        tasks.append(asyncio.create_task(rt.prober.run()))
    if rt.config.sweep_interval > 0:
        sweeper = Sweeper(rt.hub, rt.kube, rt.config, rt.namespaces)
        tasks.append(asyncio.create_task(sweeper.loop(lambda: datetime.now(UTC))))
    return tasks


def _register_operator(registry: kopf.OperatorRegistry, rt: Runtime) -> None:
    """The operator's own handlers: settings, background tasks, login, liveness, clean-up."""

    @kopf.on.startup(registry=registry)
    async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        _configure(settings, rt)

    @kopf.on.startup(registry=registry)
    async def start_background(settings: kopf.OperatorSettings, **_: Any) -> None:
        rt.tasks.extend(_background(settings, rt))

    @kopf.on.login(registry=registry)
    async def login(**_: Any) -> kopf.ConnectionInfo | kopf.AiohttpSession | None:
        return bounded_session(credentials(), len(rt.namespaces))

    @kopf.on.probe(registry=registry, id="progress")
    async def progress(**_: Any) -> dict[str, Any]:
        """Fails the liveness endpoint (HTTP 500) when the loop is blocked or the watch stalled."""
        problems = rt.monitor.problems()
        if problems:
            raise kopf.PermanentError("; ".join(problems))
        return rt.monitor.report()

    @kopf.on.cleanup(registry=registry)
    async def close_clients(**_: Any) -> None:
        for task in rt.tasks:
            task.cancel()
        await asyncio.gather(*rt.tasks, return_exceptions=True)
        await rt.observer.close()
        await rt.hub.close()
        await rt.kube.close()
        await rt.pools.close()


def _register_sessions(registry: kopf.OperatorRegistry, rt: Runtime) -> None:
    """A session's loop (a daemon), its finalizer, and the watch events that wake the loop."""
    resource = (api.GROUP, api.VERSION, api.PLURAL)

    @kopf.on.event(*resource, registry=registry, id=TRACKING_HANDLER)
    async def track(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        """Feeds metrics, liveness and readiness, and wakes the session's loop when its spec changed.
        First, it trims the object kopf keeps to what the operator reads (its live body is this event's)."""
        api.keep_only_what_is_read(event["object"])
        rt.monitor.on_event(event["type"], event["object"])
        rt.sync.on_event(api.PLURAL, event["object"])
        for tally in metrics.SESSION_TALLIES:
            tally.on_event(event["type"], event["object"])
        loop = session_loop(memo)
        loop.delivered(event["object"])
        if guarded(event["object"]):
            loop.finalizer_seen.set()
        if spec_changed(loop, body.get("metadata", {}).get("generation")):
            loop.wakeup.set()

    # backoff: the restart delay should the loop itself crash; it catches every expected failure.
    @kopf.daemon(
        *resource,
        registry=registry,
        id=SESSION_LOOP,
        backoff=UNEXPECTED_ERROR_BACKOFF,
        cancellation_timeout=30,
    )
    async def reconcile_session(
        body: kopf.Body, memo: kopf.Memo, stopped: kopf.DaemonStopped, **_: Any
    ) -> None:
        await run_session(rt, body, memo, stopped)

    @kopf.on.delete(*resource, registry=registry, id=SESSION_FINALIZER, backoff=UNEXPECTED_ERROR_BACKOFF)
    async def finalize_session(body: kopf.Body, **_: Any) -> None:
        with rt.monitor.working(body.meta.uid or ""):
            await finalize(rt, body)


def _register_pools(registry: kopf.OperatorRegistry, rt: Runtime) -> None:
    """The pool's handlers: its loop (a daemon), the finalizer, and wake-ups on spec changes."""
    resource = (api.GROUP, api.VERSION, api.POOL_PLURAL)

    @kopf.on.event(*resource, registry=registry, id=POOL_TRACKING_HANDLERS[0])
    async def track_pool(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        api.keep_only_what_is_read(event["object"])  # kopf keeps this event's object: only what is read
        rt.sync.on_event(api.POOL_PLURAL, body)
        generation = body.get("metadata", {}).get("generation")
        if memo.get("pool_generation") != generation:
            memo["pool_generation"] = generation
            meta = body.get("metadata", {})
            rt.pools.wakeups[(meta["namespace"], meta["name"])].set()

    @kopf.on.event(api.GROUP, api.VERSION, api.PLURAL, registry=registry, id=POOL_TRACKING_HANDLERS[1])
    async def track_claimant(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
        """A claimant is gone: its pool forgets the claim (or deletes a Space it never took over)."""
        ref = (body.get("spec") or {}).get("poolRef") or {}
        if event["type"] == "DELETED" and ref.get("name"):
            rt.pools.passed.discard(body.get("metadata", {}).get("uid", ""))
            rt.pools.wakeups[(body.get("metadata", {}).get("namespace", ""), ref["name"])].set()

    @kopf.daemon(
        *resource,
        registry=registry,
        id=POOL_LOOP,
        backoff=UNEXPECTED_ERROR_BACKOFF,
        cancellation_timeout=30,
    )
    async def reconcile_pool(body: kopf.Body, stopped: kopf.DaemonStopped, **_: Any) -> None:
        await run_pool(rt, body, stopped)

    @kopf.on.delete(*resource, registry=registry, id=POOL_FINALIZER, backoff=UNEXPECTED_ERROR_BACKOFF)
    async def delete_pool(body: kopf.Body, **_: Any) -> None:
        await finalize_pool(rt, body)
