"""A session's one reconcile loop, a kopf daemon (an asyncio task, not a thread), and its finalizer.

A pass loops observe -> decide -> apply until the core asks for nothing more now, writes status if
it changed, and sleeps for the core's requeue delay, or until the spec changes: a watch
event with a new metadata.generation wakes the loop at once, as controller-runtime's
GenerationChangedPredicate would. Status writes do not wake it, so a pass costs no extra
calls. kopf's change handlers are not used for this: a delayed kopf retry would hold back
a spec change until the delay ran out.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, cast

import kopf

from sandbox_operator import api
from sandbox_operator.core import creation, lifecycle
from sandbox_operator.core.conditions import Reason
from sandbox_operator.core.draft import backoff_delay
from sandbox_operator.core.model import CreateSpace, DeleteSession, Observation, Plan, Session
from sandbox_operator.fairness import serve_session
from sandbox_operator.k8s.client import status_patch
from sandbox_operator.k8s.transport import ApiError
from sandbox_operator.pools import claim as pools
from sandbox_operator.sessions.apply import Applied, apply, post_events
from sandbox_operator.sessions.failures import failure_reason, report_failure
from sandbox_operator.sessions.observe import SessionRuntime, observe_session, session_from_body

#: Decide-apply steps in one reconcile pass before the loop sleeps.
MAX_STEPS = 8
#: The shortest sleep between passes (a live one's or the finalizer's), so "again now" still yields.
MIN_REQUEUE = 0.05
#: How long a create waits for kopf's finalizer patch to show in a watch event before the session
#: says so (it takes a second or two even under a burst of a thousand sessions).
FINALIZER_WAIT = 60.0


log = logging.getLogger(__name__)


async def drive(
    rt: SessionRuntime, body: kopf.Body, session: Session, loop: SessionLoop | None = None
) -> Plan:
    """The one loop for a session's whole life: observe, decide, apply, until the core asks for
    nothing more now (or a failure); posts the core's Events and returns the last plan. No Space is
    asked for before kopf's finalizer is on the session (`loop.finalizer_seen` is set by its watch event):
    a session deleted before then would go without its Space's deletion."""
    session, claimed = await pools.claim_step(rt, body, session)  # a warm pool's Space, if it names one
    if claimed is not None:
        return claimed
    observed = await observe_session(rt, session)
    plan: Plan | None = None
    for _ in range(MAX_STEPS):
        plan = lifecycle.decide(session, observed, rt.config, datetime.now(UTC), random.random())
        if isinstance(plan.action, DeleteSession):  # the deletion ends this loop: its Events go first
            post_events(body, plan.events)
            plan = replace(plan, events=[])
        if isinstance(plan.action, CreateSpace) and loop is not None and not guarded(body):
            missing = await _await_finalizer(rt, body, session, loop)
            if missing is not None:
                return missing
            plan = lifecycle.decide(session, observed, rt.config, datetime.now(UTC), random.random())
        async with rt.create_slots.turn(isinstance(plan.action, CreateSpace)) as waited:
            if waited:  # decide again, with a fresh deadline
                plan = lifecycle.decide(session, observed, rt.config, datetime.now(UTC), random.random())
            applied = Applied() if plan.action is None else await apply(rt, session, plan, observed)
        if applied.outdated:  # decided on a spec changed meanwhile: nothing of it is said or kept
            plan = replace(plan, action=None, status=session.status, requeue_after=0.0, events=[])
            fresh = await rt.kube.read_session(session.namespace, session.name)
            if fresh is None:
                break
            session = session_from_body(fresh)
            continue
        acted_on = getattr(plan.action, "space_id", None)
        if acted_on is not None and not session.deleting:  # a deleting session reads no listing
            rt.observer.acted(acted_on)  # listings asked for before now do not show this action
            rt.prober.withdraw(session.uid)  # nor does an answer of its app (hub/edge_probe.py)
        if isinstance(plan.action, CreateSpace):
            session = _record_create(rt, session, plan, plan.action, applied)
        if applied.failure is not None:
            plan = lifecycle.decide(
                session,
                replace(observed, hub_failure=applied.failure),
                rt.config,
                datetime.now(UTC),
                random.random(),
            )
        post_events(body, plan.events)
        session = replace(session, status=plan.status)
        if plan.action is None or plan.status.failures or applied.deleting or applied.respecified:
            break
        # The connection Secret is not read again: every write of it returned `known` above.
        seen = observed if isinstance(observed, Observation) else None
        observed = applied.known or await observe_session(
            rt, session, verify_marker=not applied.created, connection_seen=seen
        )
    assert plan is not None
    return plan


async def _await_finalizer(
    rt: SessionRuntime, body: kopf.Body, session: Session, loop: SessionLoop
) -> Plan | None:
    """Wait for the watch event that shows kopf's finalizer on the session (usually there by now);
    None once it came. Should it not come in time (kopf's patch refused: the operator's RBAC, an
    admission policy), the session says so, and the next pass, after a backoff, waits again. A loop
    kopf stops meanwhile ends the pass at once, without the create."""
    await _until_any(loop, (loop.finalizer_seen, loop.stopping), FINALIZER_WAIT)
    if loop.finalizer_seen.is_set():
        return None
    if loop.stopping.is_set():
        return Plan(None, session.status, None)
    message = (
        f"the operator's finalizer {api.FINALIZER} is not on the session after {FINALIZER_WAIT:.0f}s; "
        "no Space is asked for until it is, or deleting the session would leave the Space behind "
        "(the operator's log says why its PATCH of the session failed)"
    )
    plan = lifecycle.decide_failure(
        session, Reason.FINALIZER_MISSING, message, rt.config, datetime.now(UTC), random.random()
    )
    post_events(body, plan.events)
    return plan


def _record_create(
    rt: SessionRuntime, session: Session, plan: Plan, action: CreateSpace, applied: Applied
) -> Session:
    """Keep what a duplicate's sending says on the plan's status and the session (when it was asked
    for, the Hub's refusal), so the next step and the next pass decide on it."""
    if applied.sent:
        rt.create_slots.sent(session.uid)
    recorded = creation.create_record(session.status, action, applied.sent, applied.failure)
    answered = creation.create_failure(session.status, applied.sent, applied.failure)
    plan.status.duplicate_requested_time = recorded
    plan.status.duplicate_failure = answered
    record = {"duplicate_requested_time": recorded, "duplicate_failure": answered}
    return replace(session, status=session.status.model_copy(update=record))


async def reconcile(rt: SessionRuntime, body: kopf.Body, loop: SessionLoop) -> Plan:
    """One reconcile pass of a live session; returns its last plan (when to come back, what it holds).
    A pass that starts before the watch delivered the previous pass's status write decides on that
    status, not the older one (which would post its Events, e.g. an expiry notice, a second time)."""
    # A live pass even when deletion has begun: the finalizer runs the deletion branch; the
    # daemon is stopped by kopf, and a create it was about to send is dropped (Applied.deleting).
    plan = await drive(rt, body, loop.latest(body), loop)
    written = loop.latest(body)
    if body.get("metadata", {}).get("deletionTimestamp"):
        return plan  # the finalizer owns status now: its receipt must not be overwritten
    pools.record_launch(written.status, plan.status, body)
    if status_patch(plan.status) != status_patch(written.status):
        before = _resource_version(body)
        await rt.kube.patch_status(written.namespace, written.name, status_patch(plan.status))
        loop.unseen_write = (before, plan.status)
        loop.delivered(body)  # the watch may have delivered it already
    return plan


class Signal(asyncio.Event):
    """A wake-up of a session's loop: set, it also sets the loop's `any_signal`, so that a sleeping
    loop waits on that one event rather than on a task per signal (kilobytes per sleeping session,
    a thousand of them building). Only a change from clear to set counts: the watch says the
    finalizer is there on every event, and that must not wake a sleeping loop each time."""

    def __init__(self, any_signal: asyncio.Event) -> None:
        super().__init__()
        self._any_signal = any_signal

    def set(self) -> None:
        if not self.is_set():
            super().set()
            self._any_signal.set()


@dataclass
class SessionLoop:
    """Per-session state kept in kopf's per-object memo: the wake-up signals of its loop."""

    generation: int | None = None
    #: The status the last pass wrote, and the object's resourceVersion before that write.
    unseen_write: tuple[str, api.AgentSessionStatus] | None = None
    #: Set when any of the signals below is (`Signal`).
    any_signal: asyncio.Event = field(default_factory=asyncio.Event)
    #: Set by a watch event with a new metadata.generation (a spec change).
    wakeup: Signal = field(init=False)
    #: Set by the observer when a listing has news for this session (its own, so a stale one can be
    #: dropped without losing a spec change), and by the edge prober when its app answers.
    listed: Signal = field(init=False)
    #: Set once a watch event shows the operator's finalizer on the session (`guarded`).
    finalizer_seen: Signal = field(init=False)
    #: Set once kopf stops the loop's daemon: a pass waiting for the finalizer ends at once.
    stopping: Signal = field(init=False)

    def __post_init__(self) -> None:
        self.wakeup = Signal(self.any_signal)
        self.listed = Signal(self.any_signal)
        self.finalizer_seen = Signal(self.any_signal)
        self.stopping = Signal(self.any_signal)

    def latest(self, body: kopf.Body) -> Session:
        """The session from kopf's live body, with the status this loop last wrote while the body is
        still the version that write replaced (the watch has not delivered it yet)."""
        session = session_from_body(body)
        self.delivered(body)
        unseen = self.unseen_write
        if unseen is not None:
            return replace(session, status=unseen[1].model_copy(deep=True))
        return session

    def delivered(self, obj: Mapping[str, Any]) -> None:
        """The watch delivered `obj`: unless it is the version the last write replaced, kopf's body
        holds that write (or newer), and its copy here is let go at once, not kept while the loop
        sleeps."""
        if self.unseen_write is not None and self.unseen_write[0] != _resource_version(obj):
            self.unseen_write = None


def _resource_version(body: Mapping[str, Any]) -> str:
    return str(body.get("metadata", {}).get("resourceVersion", ""))


def spec_changed(loop: SessionLoop, generation: int | None) -> bool:
    """Record the generation a watch event shows; True when it differs from the last one seen. The
    first event only records it: the loop's first pass reads that same object, and a wake-up
    arriving during that pass would only repeat it (and its Hub reads)."""
    changed = loop.generation is not None and generation != loop.generation
    loop.generation = generation
    return changed


def guarded(body: Mapping[str, Any]) -> bool:
    """The operator's finalizer is on the object: its deletion waits for the Space's."""
    return api.FINALIZER in (body.get("metadata", {}).get("finalizers") or [])


def session_loop(memo: kopf.Memo) -> SessionLoop:
    """The session's loop state, made at its first watch event (not a throwaway one at every event)."""
    loop: SessionLoop | None = memo.get("session_loop")
    if loop is None:
        loop = memo["session_loop"] = SessionLoop()
    return loop


async def _until_any(loop: SessionLoop, signals: tuple[Signal, ...], seconds: float | None) -> None:
    """Until one of the loop's `signals` is set, or `seconds` pass (forever if None)."""
    deadline = None if seconds is None else asyncio.get_running_loop().time() + seconds
    while not any(signal.is_set() for signal in signals):
        loop.any_signal.clear()  # no await since the check: a signal set from now on sets it again
        try:
            async with asyncio.timeout_at(deadline):
                await loop.any_signal.wait()
        except TimeoutError:
            return


async def _sleep(loop: SessionLoop, delay: float | None) -> None:
    """Until `delay` passes (forever if None), the spec changes, a listing has news, or the loop stops."""
    await _until_any(loop, (loop.wakeup, loop.listed, loop.stopping), delay)


async def run_session(
    rt: SessionRuntime, body: kopf.Body, memo: kopf.Memo, stopped: kopf.DaemonStopped
) -> None:
    """The session's reconcile loop: `body` is kopf's live view, always the latest object. Its calls
    wait their turn behind those of sessions created before it, namespaces in turn (fairness.py)."""
    loop = session_loop(memo)
    failures = 0
    meta = body.get("metadata", {})
    uid = str(meta.get("uid", ""))
    serve_session(str(meta.get("namespace", "")), str(meta.get("name", "")), meta.get("creationTimestamp"))
    rt.prober.bind(uid, loop.listed)
    # The memo outlives this daemon: one kopf restarts (after a crash) starts with no stop said.
    loop.stopping.clear()
    stopping = asyncio.ensure_future(_said_once_stopped(stopped, loop.stopping))
    try:
        while not stopped:
            delay = await _reconcile_once(rt, body, loop, uid, failures)
            failures = 0 if delay.succeeded else failures + 1
            await _sleep(loop, None if delay.seconds is None else max(MIN_REQUEUE, delay.seconds))
    finally:
        stopping.cancel()
        rt.observer.forget(uid)
        rt.prober.forget(uid)
        rt.kube.forget(uid)
        rt.create_slots.forget(uid)


async def _said_once_stopped(stopped: kopf.DaemonStopped, stopping: asyncio.Event) -> None:
    """Set `stopping` when kopf stops the daemon (not when this task is cancelled with the loop)."""
    await stopped.wait()
    stopping.set()


@dataclass(frozen=True)
class _Delay:
    """When a session's loop looks again, and whether its pass got through."""

    seconds: float | None
    succeeded: bool


def _follow_listing(rt: SessionRuntime, uid: str, loop: SessionLoop, plan: Plan) -> float | None:
    """Hand the session to the observer once its Space can be read from a listing: a waiting session
    (building, starting) is woken by each listing instead of polling the Hub; a converged one by a
    listing that shows its Space changed or gone (drift), besides the resync."""
    status = plan.status
    delay = plan.requeue_after
    if not rt.observer.enabled or status.space_id is None:
        return delay
    listed = status.space_confirmed_time is not None
    # A failing session keeps its backoff: only a change the listing shows wakes it early.
    waiting = delay is not None and listed and not plan.failed
    rt.observer.watch(uid, status.space_id, loop.listed, waiting=waiting)
    if delay is not None and waiting:
        # The next listing wakes it; this is only the fallback should listings fail. Not past a
        # deadline, though: a budget or an expiry is read on time, not at the listing's cadence.
        delay = max(delay, 2 * rt.observer.interval)
        if plan.deadline is not None:
            delay = min(delay, plan.deadline)
    return delay


async def _reconcile_once(
    rt: SessionRuntime, body: kopf.Body, loop: SessionLoop, uid: str, failures: int
) -> _Delay:
    """One pass, its failures caught: Kubernetes API errors back off, the rest become conditions."""
    loop.wakeup.clear()
    loop.listed.clear()
    delay: float | None
    try:
        plan = await reconcile(rt, body, loop)
        delay = _follow_listing(rt, uid, loop, plan)
        succeeded = True
    except ApiError as error:
        # Kubernetes API errors (conflicts, throttling, a restarting apiserver) are transient: no
        # condition, but money first all the same.
        succeeded = False
        delay = backoff_delay(failures + 1, rt.config, random.random())
        log.warning("session %s/%s: Kubernetes API error %s %s; retrying in %.1fs",
                    body.get("metadata", {}).get("namespace"), body.get("metadata", {}).get("name"),
                    error.status, error.reason, delay)  # fmt: skip
        await report_failure(rt, body, error, transient=True)
    except Exception as error:  # every other failure ends in a condition, never a crash loop
        succeeded = True
        delay = await report_failure(rt, body, error)
    if delay is None and rt.config.resync_interval > 0:
        delay = rt.config.resync_interval
    return _Delay(delay, succeeded)


async def finalize(rt: SessionRuntime, body: kopf.Body) -> None:
    """The finalizer: the same loop as a live session's, on the deletion branch of the core, until
    the core says the session is done. It waits between its passes itself (the core's delay), each
    pass's status written, rather than through kopf retries: kopf logs each at ERROR level, and a
    deletion that waits (for a Space just created, or a Hub answering 503) is its normal course,
    which the status and Events say."""
    current: kopf.Body | None = body
    while current is not None:
        session = replace(session_from_body(current), deleting=True)
        plan = await _finalize_pass(rt, current, session)
        if plan.done:
            return
        if status_patch(plan.status) != status_patch(session.status):
            await rt.kube.patch_status(session.namespace, session.name, status_patch(plan.status))
        await asyncio.sleep(max(MIN_REQUEUE, plan.requeue_after or 0.0))
        fresh = await rt.kube.read_session(session.namespace, session.name)
        current = kopf.Body(cast(kopf.RawBody, fresh)) if fresh is not None else None


async def _finalize_pass(rt: SessionRuntime, body: kopf.Body, session: Session) -> Plan:
    try:
        return await drive(rt, body, session)
    except Exception as error:  # every failure ends in a condition, then another pass after a backoff
        reason, message = failure_reason(error)
        log.error("session %s/%s: %s", session.namespace, session.name, message, exc_info=True)
        plan = lifecycle.decide_failure(
            session, reason, message, rt.config, datetime.now(UTC), random.random()
        )
        post_events(body, plan.events)
        return plan
