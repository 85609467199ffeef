"""The I/O shell of warm pools: the pool's reconcile loop and finalizer, and the claim a session
makes. The decisions are `core.pool`'s; this module reads the objects and the Hub, writes status and
carries out the actions.

Every write of a pool's status carries the resourceVersion it was decided on (optimistic
concurrency): a claim and a pool pass that raced, in this process or a stale leader's, make the
second writer read again and decide again, never hand one Space twice. In this process the
writes to one pool are serialized and claims are batched (one status write for every session
waiting at that moment), so a burst of claims costs a few writes, not one conflict-retry each.
A batch decides on the pool as this process last wrote it, without reading it first: the
resourceVersion still guards the write (a 409 makes it read and decide again), and a batch that
would leave a session without a Space reads the pool before it says so. While claims are under
way (and for REPLENISH_AFTER after the last), the claimed Spaces' handovers and the pool's
replenishing wait, at most BURST_LONGEST, so the sessions of a burst are Ready first; that only
delays step 3 and the pool's own pass, and changes none of the steps' order.

Each pooled Space is built with its own sandbox token (`core.pooled_token`, from the pool's key in
the Secret `<pool>-pool-token`): a running app sees a new secret only after the Hub restarts it
(fidelity row F42), so the claim hands that token over as it is and never writes the Space's secrets.

Crash safety of a claim (SIGKILL between any two steps):
1. `claimedBy` is written into the pool's status (CAS). Killed after it: the session's next pass
   asks again and `assign_claims` answers with the Space already claimed by its UID.
2. The connection Secret (the Space's own token) is written, the sandbox's health is checked
   through the edge with it, then `status.spaceId` + `launchType: warm` (Ready when it answered)
   are written. Killed before the status write: step 1 answers the same Space again, and the same
   token is derived again.
3. The marker moves to the session (`handover_pending` until `spaceConfirmedTime` is written).
   Killed before: the next pass does it again (idempotent).
If the session is deleted before step 3, its finalizer leaves a Space still marked as the pool's,
and the pool deletes it once it sees the claimant gone; after step 3 the Space is the session's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import kopf

from sandbox_operator import api
from sandbox_operator.config.settings import OperatorConfig
from sandbox_operator.core import lifecycle
from sandbox_operator.core import pool as core
from sandbox_operator.core.conditions import READY, Reason
from sandbox_operator.core.creation import creation_refusal
from sandbox_operator.core.model import (
    FailureKind,
    HealthResult,
    Observation,
    Plan,
    Session,
    connection_secret_name,
)
from sandbox_operator.hub.errors import HubError, SpaceExistsError
from sandbox_operator.k8s.client import (
    KEY_HUB_TOKEN,
    KEY_SANDBOX_URL,
    KEY_SPACE_ID,
    KEY_TOKEN,
    ConnectionSecretConflict,
    KubeClient,
    new_token,
    owned_secret,
    status_patch,
)
from sandbox_operator.k8s.transport import ApiError, KubeApi
from sandbox_operator.observability import metrics

if TYPE_CHECKING:
    from sandbox_operator.sessions.controller import Runtime

log = logging.getLogger(__name__)

#: The pool's key, from which each pooled Space's sandbox token is derived, is kept in this Secret.
POOL_TOKEN_SUFFIX = "-pool-token"
#: The watch-event handlers of pools (spec changes) and of sessions (a claimant gone): quiet at INFO.
TRACKING_HANDLERS = ("track-pool", "track-pool-claimant")
#: Seconds after the last claim of a burst before its pool's loop runs (a burst wakes it once).
REPLENISH_AFTER = 0.5
#: Longest a burst of claims holds the pool's replenishing (or the claimed Spaces' handovers) back.
BURST_LONGEST = 3.0
#: Kubernetes calls of claims in flight at once (a claim is a few writes; the pool's own are batched).
CLAIM_WORKERS = 16
#: Conflicting writes of a pool's status (another writer got there first) retried at once.
CAS_ATTEMPTS = 8


def _now() -> datetime:
    return datetime.now(UTC)


def pool_from_body(body: Any, *, deleting: bool = False) -> core.Pool:
    """The pool as the operator reads it; a spec that does not parse is carried as its problem (for
    the core to report), never an error that stops the pool's loop or its finalizer."""
    meta = body.get("metadata") or {}
    spec, problem = api.read_pool_spec(body.get("spec") or {})
    return core.Pool(
        name=meta["name"],
        namespace=meta["namespace"],
        uid=meta["uid"],
        generation=int(meta.get("generation", 1)),
        spec=spec,
        status=api.AgentSessionPoolStatus.model_validate(body.get("status") or {}),
        deleting=deleting or bool(meta.get("deletionTimestamp")),
        spec_problem=problem,
    )


def _status_patch(status: api.AgentSessionPoolStatus) -> dict[str, Any]:
    return status.model_dump(by_alias=True, mode="json")


@dataclass(frozen=True)
class ClaimAnswer:
    """A pooled Space for the session, or why it gets none (it then creates one of its own)."""

    entry: api.PooledSpace | None
    reason: Reason = Reason.NO_WARM_SPACE
    message: str = ""
    #: The pool's UID (whose key derives the Space's token).
    pool_uid: str = ""


#: A claim waiting for its pool: the request, the session's spec, and where its answer goes.
Waiter = tuple[core.ClaimRequest, api.AgentSessionSpec, "asyncio.Future[ClaimAnswer]"]


@dataclass
class PoolBook:
    """Per-process coordination of pool status writers: one lock per pool, the claims waiting for
    it, and each pool loop's wake-up (a claim makes the pool replenish at once)."""

    locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=lambda: defaultdict(asyncio.Lock))
    waiting: dict[tuple[str, str], list[Waiter]] = field(default_factory=lambda: defaultdict(list))
    wakeups: dict[tuple[str, str], asyncio.Event] = field(default_factory=lambda: defaultdict(asyncio.Event))
    custom: KubeApi | None = None
    #: Each pool as this process last wrote it: a claim batch writes on its resourceVersion without
    #: reading first (a 409 says another writer came between, and the pool is read again).
    latest: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    #: Claims under way per pool (from the request to the session's Ready), and the event set when
    #: none are: handovers and replenishing wait for it, so a burst's claims go first.
    claiming: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    settled: dict[tuple[str, str], asyncio.Event] = field(default_factory=lambda: defaultdict(asyncio.Event))
    burst_began: dict[tuple[str, str], float] = field(default_factory=dict)
    burst_ended: dict[tuple[str, str], float] = field(default_factory=dict)
    #: The names under which each pool's unclaimed Spaces are handed to the observer.
    followed: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    #: Each pool's key (by namespace, name and UID), read once: a burst of claims reads no Secret.
    keys: dict[tuple[str, str, str], str] = field(default_factory=dict)
    #: Sessions with a poolRef this process has reconciled before (after that, kopf's view may lag
    #: what this process wrote).
    passed: set[str] = field(default_factory=set)
    _kube: KubeClient | None = None

    @property
    def kube(self) -> KubeClient:
        """A client of the claims' own: a burst of claims does not queue behind every session's reads."""
        if self._kube is None:
            self._kube = KubeClient(self.api())
        return self._kube

    def api(self) -> KubeApi:
        if self.custom is None:
            self.custom = KubeApi(connections=CLAIM_WORKERS)
        return self.custom

    async def close(self) -> None:
        if self.custom is not None:
            await self.custom.close()


async def read_pool(book: PoolBook, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        found: Any = await book.api().get_namespaced_custom_object(
            api.GROUP, api.VERSION, namespace, api.POOL_PLURAL, name
        )
    except ApiError as error:
        if error.status == 404:
            return None
        raise
    return dict(found)


async def write_pool_status(
    book: PoolBook, namespace: str, name: str, resource_version: str, status: api.AgentSessionPoolStatus
) -> None:
    """A status write that fails with 409 unless the pool is still at `resource_version`; the pool
    as written is kept for the next claim batch."""
    body = {"metadata": {"resourceVersion": resource_version}, "status": _status_patch(status)}
    written: Any = await book.api().patch_namespaced_custom_object_status(
        api.GROUP, api.VERSION, namespace, api.POOL_PLURAL, name, body
    )
    book.latest[(namespace, name)] = dict(written)


# Claims ---------------------------------------------------------------------------------------


async def claim(
    book: PoolBook,
    config: OperatorConfig,
    namespace: str,
    pool: str,
    request: core.ClaimRequest,
    spec: api.AgentSessionSpec,
) -> ClaimAnswer:
    """The Space this session claims from the pool (the same one again after a crash), or why none.
    Sessions waiting for the pool meanwhile are answered together: one write for all of them."""
    key = (namespace, pool)
    answer: asyncio.Future[ClaimAnswer] = asyncio.get_running_loop().create_future()
    book.waiting[key].append((request, spec, answer))
    async with book.locks[key]:
        if not answer.done():
            batch = book.waiting.pop(key, [])
            try:
                results = await _assign(book, config, namespace, pool, batch)
            except Exception as error:
                for _, _, waiter in batch:
                    if not waiter.done():
                        waiter.set_exception(error)
                raise
            for request_, _, waiter in batch:
                waiter.set_result(results[request_.uid])
    return await answer


@asynccontextmanager
async def claiming(book: PoolBook, key: tuple[str, str]) -> AsyncIterator[None]:
    """A claim under way, from its request to its session's Ready: while any is, the pool's handovers
    and its replenishing wait (for at most BURST_LONGEST), so a burst of claims is not held back by
    the work that follows each one. The pool's loop runs once the burst has passed."""
    now = time.monotonic()
    if not book.claiming.get(key):
        book.burst_began[key] = now
    elif now - book.burst_began.get(key, now) > BURST_LONGEST:
        book.burst_began[key] = now  # a burst that does not end: the pool replenishes meanwhile
        book.wakeups[key].set()
    book.claiming[key] += 1
    book.settled[key].clear()
    try:
        yield
    finally:
        book.claiming[key] -= 1
        if book.claiming[key] <= 0:
            del book.claiming[key]
            book.burst_ended[key] = time.monotonic()
            book.settled[key].set()
            asyncio.get_running_loop().call_later(REPLENISH_AFTER, _replenish_if_settled, book, key)


def _replenish_if_settled(book: PoolBook, key: tuple[str, str]) -> None:
    if not book.claiming.get(key):
        book.wakeups[key].set()


async def burst_passed(book: PoolBook, key: tuple[str, str]) -> None:
    """Until no claim on the pool is under way in this process and none ended for REPLENISH_AFTER
    (claims of a burst arrive spread out), at most BURST_LONGEST."""
    deadline = time.monotonic() + BURST_LONGEST
    while (left := deadline - time.monotonic()) > 0:
        if book.claiming.get(key):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(book.settled[key].wait(), left)
            continue
        quiet = book.burst_ended.get(key, 0.0) + REPLENISH_AFTER - time.monotonic()
        if quiet <= 0:
            return
        await asyncio.sleep(min(quiet, left))


async def _assign(
    book: PoolBook, config: OperatorConfig, namespace: str, name: str, batch: list[Waiter]
) -> dict[str, ClaimAnswer]:
    key = (namespace, name)
    body = book.latest.get(key)
    for _ in range(CAS_ATTEMPTS):
        if body is None:
            body = await read_pool(book, namespace, name)
        if body is None:
            gone = ClaimAnswer(None, Reason.POOL_NOT_FOUND, f"pool {name} does not exist in {namespace}")
            return {request.uid: gone for request, _, _ in batch}
        pool = pool_from_body(body)
        claimed = {e.claimed_by.uid for e in pool.status.spaces if e.claimed_by is not None}
        results: dict[str, ClaimAnswer] = {}
        eligible = []
        for request, spec, _ in batch:
            mismatch = (
                f"its spec cannot be read ({pool.spec_problem})"
                if pool.spec_problem is not None
                else core.claim_mismatch(spec, pool.spec, config)
            )
            if mismatch is None or request.uid in claimed:  # a claim recorded before still stands
                eligible.append(request)
            else:
                why = f"pool {name} cannot serve this session: {mismatch}"
                results[request.uid] = ClaimAnswer(None, Reason.POOL_MISMATCH, why)
        current = core.build_hash(pool.spec, config)
        status, answers = core.assign_claims(pool.status, eligible, _now(), current)
        if body["metadata"].get("deletionTimestamp"):
            # A pool being deleted hands out nothing new, but a claim made before it still stands
            # (a session killed between its claim and its record must find its Space again).
            answers = {uid: (a if uid in claimed else None) for uid, a in answers.items()}
            status = pool.status
        none_left = f"pool {name} has no ready Space"
        results |= {
            session: ClaimAnswer(a, message=none_left, pool_uid=pool.uid) for session, a in answers.items()
        }
        if status == pool.status:
            if key in book.latest and any(a is None for a in answers.values()):
                # No Space left, or only claims already recorded, as this process last saw the pool:
                # read it again before a session falls back to cold (the pool may have filled since).
                book.latest.pop(key, None)
                body = None
                continue
            return results
        try:
            await write_pool_status(book, namespace, name, body["metadata"]["resourceVersion"], status)
        except ApiError as error:
            book.latest.pop(key, None)
            if error.status in (404, 409):  # changed or gone since: read it again
                body = None
                continue
            raise
        return results
    raise ApiError(409, f"pool {namespace}/{name} kept changing while claimed from")


async def claim_step(rt: Runtime, body: kopf.Body, session: Session) -> tuple[Session, Plan | None]:
    """Before the session's decisions: claim a warm Space (or fall back to cold), and finish a
    claim's handover. Returns the session as it now is, and a plan when the pass must stop here."""
    ref = session.spec.pool_ref
    if ref is None or session.deleting or session.spec_problem is not None:
        return session, None
    if (
        session.status.space_id is None
        and session.status.launch_type is None
        and session.uid in rt.pools.passed
    ):
        # kopf's view may lag a status this process wrote (a cold intent, a claim): read it now, so a
        # session never claims after it chose a cold create, nor records its claim twice. The first
        # pass in a process may trust kopf's view: it was listed after every earlier write.
        fresh = await rt.pools.kube.read_session(session.namespace, session.name)
        if fresh is not None:
            status = api.AgentSessionStatus.model_validate(fresh.get("status") or {})
            session = replace(session, status=status)
    rt.pools.passed.add(session.uid)
    key = (session.namespace, ref.name)
    if session.status.space_id is None and session.status.launch_type is None:
        async with claiming(rt.pools, key):
            session = await _claim_or_fall_back(rt, body, session, ref.name)
    if core.handover_pending(session.status):
        await burst_passed(rt.pools, key)
        return await _hand_over(rt, body, session)
    return session, None


async def _claim_or_fall_back(rt: Runtime, body: kopf.Body, session: Session, pool_name: str) -> Session:
    now = _now()
    # A session naming Secrets claims only while the policy checks its author may read them.
    policy_problem = await rt.kube.approval_policy_problem(time.monotonic()) if session.spec.secrets else None
    if creation_refusal(session.spec, Observation(policy_problem=policy_problem), rt.config) is not None:
        return session  # the session's decisions say why
    request = core.ClaimRequest(session.name, session.uid)
    answer = await claim(rt.pools, rt.config, session.namespace, pool_name, request, session.spec)
    if answer.entry is not None:
        try:
            return await _record_claim(rt, body, session, pool_name, answer, now)
        except ConnectionSecretConflict:
            return session  # the core reports the conflict; the claim stands for the next pass
    status = core.cold_status(session.status, answer.reason, answer.message, session.generation, now)
    kopf.event(body, type=answer.reason.severity, reason=answer.reason, message=answer.message)
    return replace(session, status=status)


async def _record_claim(
    rt: Runtime, body: kopf.Body, session: Session, pool_name: str, answer: ClaimAnswer, now: datetime
) -> Session:
    """Hand the Space's own token over in the connection Secret, check that the sandbox answers it
    through the edge, then record the claim (Ready if it did)."""
    entry = answer.entry
    assert entry is not None
    key = await pool_key(rt, session.namespace, pool_name, answer.pool_uid)
    token = core.pooled_token(key, entry.space_id)
    read_token = await rt.platform_read_token(session.namespace)
    secret = connection_secret_name(session)
    values = {
        KEY_SPACE_ID: entry.space_id,
        KEY_TOKEN: token,
        KEY_SANDBOX_URL: entry.sandbox_url or "",
        KEY_HUB_TOKEN: read_token or "",  # a pooled Space is private: its edge wants a read token
    }

    async def checked() -> HealthResult:
        if not entry.sandbox_url:
            return HealthResult(False, "the pool recorded no sandbox URL")
        return await rt.hub.health(entry.sandbox_url, token, read_token or "")

    # The sandbox already holds the token: it is asked while the Secret is written, not after.
    _, health = await asyncio.gather(
        rt.pools.kube.write_connection(
            namespace=session.namespace,
            name=secret,
            owner={"name": session.name, "uid": session.uid},
            values=values,
        ),
        checked(),
    )
    template = session.spec.template or rt.config.default_template  # the pool's too: the claim checked
    status = core.claimed_status(
        session.status, entry, pool_name, secret, session.generation, now, template, health
    )
    await rt.pools.kube.patch_status(session.namespace, session.name, status_patch(status))
    created = body.get("metadata", {}).get("creationTimestamp")
    if created:
        waited = (now - datetime.fromisoformat(created.replace("Z", "+00:00"))).total_seconds()
        metrics.LAUNCH_SECONDS.labels(api.LaunchType.WARM.value).observe(max(0.0, waited))
    kopf.event(body, type="Normal", reason=Reason.WARM_SPACE_CLAIMED, message=f"claimed {entry.space_id}")
    return replace(session, status=status)


async def _hand_over(rt: Runtime, body: kopf.Body, session: Session) -> tuple[Session, Plan | None]:
    """Move the claimed Space's marker to the session. Its token is already the session's (the
    Space was built with it): a secret written now would restart the sandbox (fidelity row F42)."""
    space_id = session.status.space_id
    assert space_id is not None
    try:
        await rt.hub.claim_marker(space_id, session.uid, f"{session.namespace}/{session.name}")
    except HubError as error:
        if error.failure.kind is FailureKind.NOT_FOUND:
            return session, None  # the core sees the Space gone and creates it again, marked as the session's
        message = f"cannot move the claimed Space {space_id}'s marker: {error.failure.message}"
        plan = lifecycle.decide_failure(
            session, error.failure.kind.reason, message, rt.config, _now(), random.random()
        )
        for note in plan.events:
            kopf.event(body, type=note.type, reason=note.reason, message=note.message)
        return session, replace(
            plan, requeue_after=max(plan.requeue_after or 0.0, error.failure.retry_after or 0.0)
        )
    status = core.handed_over_status(session.status, rt.config.cluster_id, _now())
    await rt.kube.patch_status(session.namespace, session.name, status_patch(status))
    return replace(session, status=status), None


def record_launch(before: api.AgentSessionStatus, after: api.AgentSessionStatus, body: kopf.Body) -> None:
    """A session that fell back to a cold create: its apply -> Ready time, for the metric by launch type."""
    if after.launch_type != api.LaunchType.COLD or not _ready(after) or _ready(before):
        return
    created = body.get("metadata", {}).get("creationTimestamp")
    if created:
        waited = (_now() - datetime.fromisoformat(created.replace("Z", "+00:00"))).total_seconds()
        metrics.LAUNCH_SECONDS.labels(api.LaunchType.COLD.value).observe(max(0.0, waited))


def _ready(status: api.AgentSessionStatus) -> bool:
    return any(c.type == READY and c.status == "True" for c in status.conditions)


# The pool's loop ------------------------------------------------------------------------------


async def pool_key(rt: Runtime, namespace: str, name: str, uid: str) -> str:
    """The key each of the pool's Spaces' tokens is derived from (`core.pooled_token`), kept in a
    Secret the pool owns in its namespace (created once, read after a restart). Session editors
    cannot read Secrets; whoever can read this one can read every connection Secret beside it."""
    cached = rt.pools.keys.get((namespace, name, uid))
    if cached is not None:
        return cached
    secret_name = f"{name}{POOL_TOKEN_SUFFIX}"
    data = await rt.kube.read_secret(namespace, secret_name)
    if data is not None:
        owned = await _owned_by(rt.pools.api(), namespace, secret_name, uid)
        if not owned or not data.get(KEY_TOKEN):
            raise PoolTokenConflict(
                f"Secret {namespace}/{secret_name} exists and is not this pool's; delete or rename it"
            )
        key = data[KEY_TOKEN]
    else:
        key = new_token()
        owner = (api.POOL_KIND, name, uid)
        body = owned_secret(secret_name, namespace, owner, (api.POOL_LABEL, name), {KEY_TOKEN: key})
        await rt.pools.api().create_namespaced_secret(namespace, body)
    rt.pools.keys[(namespace, name, uid)] = key
    return key


async def _owned_by(kube: KubeApi, namespace: str, name: str, uid: str) -> bool:
    secret: Any = await kube.read_namespaced_secret(name, namespace)
    return any(ref.get("uid") == uid for ref in secret["metadata"].get("ownerReferences") or [])


class PoolTokenConflict(Exception):
    """A Secret named like the pool's token Secret belongs to someone else."""


async def _observe_space(
    rt: Runtime, entry: api.PooledSpace, key: str, read_token: str | None
) -> core.PooledObservation:
    """A pooled Space's state; its health only through the edge with the platform's read token, as a
    session's (without one no pooled Space becomes ready, and claims fall back to cold creates)."""
    try:
        if entry.claimed_by is not None:
            space = await rt.hub.space(entry.space_id)
            ownership = await rt.hub.ownership(entry.space_id) if space is not None else None
            if ownership is None:
                return core.PooledObservation(space=None)
            return core.PooledObservation(
                space=space, marker_uid=ownership.session_uid, marker_cluster=ownership.cluster_id
            )
        # Read from the owner's listing once the Space's URL is known (a listing has none), as a
        # session's Space is; else, or when the listing does not show it, from the Hub.
        listed = await rt.observer.listed(entry.space_id) if entry.sandbox_url else None
        if listed is not None:
            space = replace(listed, sandbox_url=entry.sandbox_url)
        else:
            space = await rt.hub.space(entry.space_id)
            rt.observer.acted(entry.space_id)
    except HubError as error:
        return core.PooledObservation(failure=error.failure)
    health = None
    if space is not None and space.stage == "RUNNING" and space.sandbox_url and read_token:
        health = await rt.hub.health(space.sandbox_url, core.pooled_token(key, entry.space_id), read_token)
    return core.PooledObservation(space=space, health=health)


async def pool_pass(
    rt: Runtime, body: kopf.Body, *, deleting: bool = False, full: bool = False
) -> core.PoolPlan:
    """One pass of a pool: observe, decide on the freshest status, write it (CAS), then act."""
    book: PoolBook = rt.pools
    meta = body.get("metadata", {})
    namespace, name = meta["namespace"], meta["name"]
    key = (namespace, name)
    pool = pool_from_body(body, deleting=deleting)
    live = frozenset(s["metadata"]["uid"] for s in await rt.kube.list_sessions([namespace]))
    token_key = await pool_key(rt, namespace, name, pool.uid)
    read_token = await rt.platform_read_token(namespace)
    entries = {e.space_id: e for e in pool.status.spaces}
    wanted = core.to_observe(pool, live, full)
    seen = await asyncio.gather(*(_observe_space(rt, entries[i], token_key, read_token) for i in wanted))
    policy_problem = None
    secret_values: dict[str, str] = {}
    secrets_problem = None
    if pool.spec.secrets:
        policy_problem = await rt.kube.approval_policy_problem(time.monotonic())
        secret_values, secrets_problem = await rt.kube.resolve_secrets(namespace, pool.spec.secrets)
    observed = core.PoolObservation(
        spaces=dict(zip(wanted, seen, strict=True)),
        live_sessions=live,
        policy_problem=policy_problem,
        secrets_problem=secrets_problem,
    )
    ids = (str(uuid.uuid4()) for _ in iter(int, 1))
    async with book.locks[key]:
        for _ in range(CAS_ATTEMPTS):
            fresh = await read_pool(book, namespace, name)
            if fresh is None:
                return core.PoolPlan(pool.status, [], None, done=True)
            current = pool_from_body(fresh, deleting=deleting)
            plan = core.decide_pool(current, observed, rt.config, _now(), ids)
            if plan.status == current.status:
                break
            try:
                await write_pool_status(
                    book, namespace, name, fresh["metadata"]["resourceVersion"], plan.status
                )
                break
            except ApiError as error:
                if error.status != 409:
                    raise
        else:
            raise ApiError(409, f"pool {namespace}/{name} kept changing")
    follow_spaces(rt, key, pool.uid, plan.status)
    for note in plan.events:
        kopf.event(body, type=note.type, reason=note.reason, message=note.message)
    await asyncio.gather(*(_act(rt, pool, action, token_key, secret_values) for action in plan.actions))
    return plan


def follow_spaces(
    rt: Runtime, key: tuple[str, str], pool_uid: str, status: api.AgentSessionPoolStatus
) -> None:
    """Hand the pool's own Spaces to the observer: the owner's shared listing shows them, and wakes the
    pool's loop when one it waits for (building, starting, being deleted) may have moved, or a ready
    one changed or vanished, instead of a read per Space per pass. Claimed Spaces are the sessions'."""
    followed: set[str] = set()
    if rt.observer.enabled:
        wakeup = rt.pools.wakeups[key]
        for entry in status.spaces:
            if entry.claimed_by is None:
                name = f"pool:{pool_uid}:{entry.space_id}"
                waiting = entry.state != api.PooledSpaceState.READY
                rt.observer.watch(name, entry.space_id, wakeup, waiting=waiting)
                followed.add(name)
    for name in rt.pools.followed.pop(key, set()) - followed:
        rt.observer.forget(name)
    if followed:
        rt.pools.followed[key] = followed


async def _act(
    rt: Runtime, pool: core.Pool, action: core.PoolAction, key: str, secret_values: dict[str, str]
) -> None:
    """One action; a Hub failure is logged and left to the next pass (the status already says why)."""
    rt.observer.acted(action.space_id)  # listings asked for before now do not show this action
    try:
        match action:
            case core.CreatePooledSpace(space_id=space_id, template=template, send_by=send_by):
                await rt.hub.duplicate(
                    template=template,
                    space_id=space_id,
                    private=True,
                    token=core.pooled_token(key, space_id),
                    secrets=secret_values,
                    session_uid=pool.uid,
                    session_ref=f"{pool.namespace}/{pool.name}",
                    send_by=send_by,
                    sleep_time=pool.spec.sleep_time_seconds,
                )
            case core.DeletePooledSpace(space_id=space_id):
                await rt.hub.delete(space_id)
            case core.RestartPooledSpace(space_id=space_id):
                await rt.hub.restart(space_id)
    except SpaceExistsError:
        log.info("pool %s/%s: Space %s already exists", pool.namespace, pool.name, action.space_id)
    except HubError as error:
        log.warning("pool %s/%s: %s failed: %s", pool.namespace, pool.name, type(action).__name__,
                    error.failure.message)  # fmt: skip


async def run_pool(rt: Runtime, body: kopf.Body, stopped: kopf.DaemonStopped) -> None:
    """The pool's loop: a pass, then sleep until the core's delay, a spec change or a claim."""
    meta = body.get("metadata", {})
    key = (meta["namespace"], meta["name"])
    wakeup = rt.pools.wakeups[key]
    failures = 0
    last_full = 0.0
    try:
        while not stopped:
            wakeup.clear()
            full = time.monotonic() - last_full >= max(rt.config.resync_interval, rt.config.poll_interval)
            try:
                plan = await pool_pass(rt, body, full=full)
                delay = plan.requeue_after
                failures = 0
                if full:
                    last_full = time.monotonic()
                if delay is not None and rt.pools.followed.get(key) and _building(plan.status):
                    # The owner's listings wake the loop while its Spaces build (follow_spaces);
                    # this is only the fallback should listings fail.
                    delay = max(delay, 2 * rt.observer.interval)
            except (ApiError, PoolTokenConflict, HubError) as error:
                failures += 1
                delay = lifecycle.backoff_delay(failures, rt.config, random.random())
                log.warning(
                    "pool %s/%s: %s; retrying in %.1fs", meta.get("namespace"), meta.get("name"), error, delay
                )
            if delay is None and rt.config.resync_interval > 0:
                delay = rt.config.resync_interval
            waiters = {asyncio.ensure_future(wakeup.wait()), asyncio.ensure_future(stopped.wait())}
            try:
                await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
    finally:
        follow_spaces(rt, key, "", api.AgentSessionPoolStatus())  # the observer follows none of them


def _building(status: api.AgentSessionPoolStatus) -> bool:
    """Some unclaimed Space is still being built, started or deleted (a listing wakes the pool for it)."""
    return any(e.claimed_by is None and e.state != api.PooledSpaceState.READY for e in status.spaces)


async def finalize_pool(rt: Runtime, body: kopf.Body) -> None:
    """Deleting a pool deletes its unclaimed Spaces; the finalizer stays until they are gone."""
    plan = await pool_pass(rt, body, deleting=True, full=True)
    if plan.done:
        meta = body.get("metadata", {})
        follow_spaces(rt, (meta["namespace"], meta["name"]), "", api.AgentSessionPoolStatus())
    if not plan.done:
        raise kopf.TemporaryError(
            "deleting the pool's unclaimed Spaces", delay=max(0.05, rt.config.poll_interval)
        )


def register(registry: kopf.OperatorRegistry, rt: Runtime, backoff: float) -> None:
    """The pool's handlers: its loop (a daemon), the finalizer, and wake-ups on spec changes."""
    resource = (api.GROUP, api.VERSION, api.POOL_PLURAL)

    @kopf.on.event(*resource, registry=registry, id=TRACKING_HANDLERS[0])
    async def track_pool(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        api.keep_only_what_is_read(event["object"])  # kopf keeps this event's object: only what is read
        rt.sync.on_event(api.POOL_PLURAL, body)
        generation = body.get("metadata", {}).get("generation")
        if memo.get("pool_generation") != generation:
            memo["pool_generation"] = generation
            meta = body.get("metadata", {})
            rt.pools.wakeups[(meta["namespace"], meta["name"])].set()

    @kopf.on.event(api.GROUP, api.VERSION, api.PLURAL, registry=registry, id=TRACKING_HANDLERS[1])
    async def track_claimant(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
        """A claimant is gone: its pool forgets the claim (or deletes a Space it never took over)."""
        ref = (body.get("spec") or {}).get("poolRef") or {}
        if event["type"] == "DELETED" and ref.get("name"):
            rt.pools.passed.discard(body.get("metadata", {}).get("uid", ""))
            rt.pools.wakeups[(body.get("metadata", {}).get("namespace", ""), ref["name"])].set()

    @kopf.daemon(*resource, registry=registry, backoff=backoff, cancellation_timeout=30)
    async def reconcile_pool(body: kopf.Body, stopped: kopf.DaemonStopped, **_: Any) -> None:
        await run_pool(rt, body, stopped)

    @kopf.on.delete(*resource, registry=registry, backoff=backoff)
    async def delete_pool(body: kopf.Body, **_: Any) -> None:
        await finalize_pool(rt, body)
