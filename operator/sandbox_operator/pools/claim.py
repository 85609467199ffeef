"""The claim a session makes on a warm pool, and the handover of the claimed Space.

Claims of sessions waiting for the same pool are batched: one status write for every session waiting
at that moment, so a burst of claims costs a few writes, not one conflict-retry each. A batch decides
on the pool as this process last wrote it, without reading it first: the resourceVersion still guards
the write (a 409 makes it read and decide again), and a batch that would leave a session without a
Space reads the pool before it says so.

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
import random
import time
from dataclasses import replace
from datetime import UTC, datetime

import kopf

from sandbox_operator import api
from sandbox_operator.config.settings import OperatorConfig
from sandbox_operator.core import lifecycle
from sandbox_operator.core import pool as core
from sandbox_operator.core.conditions import READY, Reason
from sandbox_operator.core.creation import creation_refusal, template_of
from sandbox_operator.core.model import (
    FailureKind,
    HealthResult,
    Observation,
    Plan,
    Session,
    connection_secret_name,
)
from sandbox_operator.hub.errors import HubError
from sandbox_operator.k8s.client import (
    KEY_HUB_TOKEN,
    KEY_SANDBOX_URL,
    KEY_SPACE_ID,
    KEY_TOKEN,
    ConnectionSecretConflict,
    status_patch,
)
from sandbox_operator.k8s.transport import ApiError
from sandbox_operator.observability import metrics
from sandbox_operator.pools.book import (
    CAS_ATTEMPTS,
    ClaimAnswer,
    PoolBook,
    PoolRuntime,
    Waiter,
    burst_passed,
    claiming,
    pool_from_body,
    pool_key,
    read_pool,
    write_pool_status,
)

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
        token_key = await pool_key(book, namespace, name, pool.uid)
        current = core.build_hash(pool.spec, config, token_key)
        status, answers = core.assign_claims(pool.status, eligible, datetime.now(UTC), current)
        if body["metadata"].get("deletionTimestamp"):
            # A pool being deleted hands out nothing new, but a claim made before it still stands
            # (a session killed between its claim and its record must find its Space again).
            answers = {uid: (a if uid in claimed else None) for uid, a in answers.items()}
            status = pool.status
        none_left = f"pool {name} has no ready Space"
        results |= {
            session: ClaimAnswer(a, message=none_left, pool_key=token_key) for session, a in answers.items()
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


async def claim_step(rt: PoolRuntime, body: kopf.Body, session: Session) -> tuple[Session, Plan | None]:
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
    claimed_now = False
    if session.status.space_id is None and session.status.launch_type is None:
        async with claiming(rt.pools, key):
            session = await _claim_or_fall_back(rt, body, session, ref.name)
        claimed_now = session.status.launch_type == api.LaunchType.WARM
    if core.handover_pending(session.status):
        await burst_passed(rt.pools, key)
        if claimed_now:  # its Event is a write the burst's other claims would queue behind: posted now
            message = f"claimed {session.status.space_id}"
            kopf.event(body, type="Normal", reason=Reason.WARM_SPACE_CLAIMED, message=message)
        return await _hand_over(rt, body, session)
    return session, None


async def _claim_or_fall_back(rt: PoolRuntime, body: kopf.Body, session: Session, pool_name: str) -> Session:
    now = datetime.now(UTC)
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
    rt: PoolRuntime, body: kopf.Body, session: Session, pool_name: str, answer: ClaimAnswer, now: datetime
) -> Session:
    """Hand the Space's own token over in the connection Secret, check that the sandbox answers it
    through the edge, then record the claim (Ready if it did)."""
    entry = answer.entry
    assert entry is not None
    token = core.pooled_token(answer.pool_key, entry.space_id)
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
    template = template_of(session.spec.template, rt.config)  # the pool's too: the claim checked
    status = core.claimed_status(
        session.status, entry, pool_name, secret, session.generation, now, template, health
    )
    await rt.pools.kube.patch_status(session.namespace, session.name, status_patch(status))
    created = body.get("metadata", {}).get("creationTimestamp")
    if created:
        waited = (now - datetime.fromisoformat(created.replace("Z", "+00:00"))).total_seconds()
        metrics.LAUNCH_SECONDS.labels(api.LaunchType.WARM.value).observe(max(0.0, waited))
    return replace(session, status=status)


async def _hand_over(rt: PoolRuntime, body: kopf.Body, session: Session) -> tuple[Session, Plan | None]:
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
            session, error.failure.kind.reason, message, rt.config, datetime.now(UTC), random.random()
        )
        for note in plan.events:
            kopf.event(body, type=note.type, reason=note.reason, message=note.message)
        return session, replace(
            plan, requeue_after=max(plan.requeue_after or 0.0, error.failure.retry_after or 0.0)
        )
    status = core.handed_over_status(session.status, rt.config.cluster_id, datetime.now(UTC))
    await rt.kube.patch_status(session.namespace, session.name, status_patch(status))
    return replace(session, status=status), None


def record_launch(before: api.AgentSessionStatus, after: api.AgentSessionStatus, body: kopf.Body) -> None:
    """A session that fell back to a cold create: its apply -> Ready time, for the metric by launch type."""
    if after.launch_type != api.LaunchType.COLD or not _ready(after) or _ready(before):
        return
    created = body.get("metadata", {}).get("creationTimestamp")
    if created:
        waited = (datetime.now(UTC) - datetime.fromisoformat(created.replace("Z", "+00:00"))).total_seconds()
        metrics.LAUNCH_SECONDS.labels(api.LaunchType.COLD.value).observe(max(0.0, waited))


def _ready(status: api.AgentSessionStatus) -> bool:
    return any(c.type == READY and c.status == "True" for c in status.conditions)
