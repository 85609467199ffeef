"""What a session's pass reads before the core decides: its connection Secret, the approval policy
and the approver's rights, its Space (from the owner's listing where it can) and its sandbox's health.
Each read is the fewest calls the session's state allows."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Protocol

from sandbox_operator import api
from sandbox_operator.core import creation, lifetime, model, money, reads
from sandbox_operator.core.conditions import READY, Reason, condition_of
from sandbox_operator.core.fixes import HOW_TO_FIX
from sandbox_operator.core.model import DeletionObservation, HealthResult, Observation, Session, SpaceView
from sandbox_operator.core.reads import CheckedHealth
from sandbox_operator.hub.creates_in_flight import CreateSlots
from sandbox_operator.hub.errors import HubError
from sandbox_operator.hub.prices import PriceCatalog
from sandbox_operator.k8s.admission import ApproverQuestion, approver_question, denier_question
from sandbox_operator.k8s.client import (
    KEY_HUB_TOKEN,
    KEY_PAUSED_SINCE,
    KEY_SANDBOX_URL,
    KEY_TOKEN,
    ConnectionSecretConflict,
)
from sandbox_operator.k8s.secret_cache import SecretCache
from sandbox_operator.k8s.transport import ApiError
from sandbox_operator.pools.book import PoolRuntime

log = logging.getLogger(__name__)


class SessionRuntime(PoolRuntime, Protocol):
    """What the session shell uses of the operator's runtime (built once in runtime.py)."""

    prices: PriceCatalog
    secrets: SecretCache
    create_slots: CreateSlots

    def platform_read_token_secret(self, namespace: str) -> tuple[str, str] | None: ...


def session_from_body(body: Mapping[str, Any]) -> Session:
    """The session as the operator reads it. A spec that does not parse is no error that would stop
    its loop or its finalizer: the session carries the problem (`Session.spec_problem`), for the core
    to report, and what of the spec parses, for the finalizer to delete the Space."""
    meta = body.get("metadata") or {}
    spec, problem = api.read_spec(body.get("spec") or {})
    created = api.parse_rfc3339(meta["creationTimestamp"]) if meta.get("creationTimestamp") else None
    return Session(
        name=meta["name"],
        namespace=meta["namespace"],
        uid=meta["uid"],
        generation=int(meta.get("generation", 1)),
        spec=spec,
        status=api.AgentSessionStatus.model_validate(body.get("status") or {}),
        created=created,
        spec_problem=problem or lifetime.lifetime_problem(spec, created),
    )


async def read_token(rt: SessionRuntime, session: Session) -> tuple[str | None, str | None]:
    """The Hub read token for agent pods: the session's `spec.hubTokenSecretRef`, else the one the platform
    configured for its namespace (`Runtime.platform_read_token_secret`); with a message when the one
    that applies cannot be read."""
    ref = session.spec.hub_token_secret_ref
    if ref is not None:
        problem = await rt.kube.approval_policy_problem(time.monotonic())
        if problem is not None and not rt.config.insecure_trust_approvals:
            return None, (
                f"spec.hubTokenSecretRef is not read: {problem}, so the API server does not check that the "
                f"session's author may read that Secret; {HOW_TO_FIX}"
            )
        data = await rt.secrets.get(session.namespace, ref.name)
        if data is None or not data.get(ref.key):
            return None, (
                f"spec.hubTokenSecretRef: Secret {session.namespace}/{ref.name} does not exist or has no "
                f"key {ref.key!r}; agent pods will not pass the Hub's edge of this private Space"
            )
        return data[ref.key], None
    token = await rt.platform_read_token(session.namespace)
    where = rt.platform_read_token_secret(session.namespace)
    if token is None and where is not None:
        whose = "this namespace's" if where[0] == session.namespace else "the operator's"
        return None, (
            f"{whose} read token Secret {'/'.join(where)} does not exist or has no key "
            f"{rt.config.hub_read_token_key!r}; agent pods will not pass the Hub's edge of this private Space"
        )
    return token, None


async def observe(
    rt: SessionRuntime,
    session: Session,
    *,
    verify_marker: bool = True,
    connection_seen: Observation | None = None,
) -> Observation:
    """Gather what `decide` needs, with the fewest calls the session's state allows.

    The ownership marker is read only until the Space was first seen carrying it (its name holds
    the session UID), and not at all right after this pass created it (then it carries ours). Once
    it has, the Space is read from the owner's latest listing (the observer's, which carries its app's
    subdomain too) when that shows it; otherwise, or to confirm that it vanished, from the Hub. A Space
    seen before and now not found is gone only if the token can still see its owner (else
    HubAccessLost).
    `connection_seen`: an earlier observation of this pass, whose connection Secret is still current
    (only this pass writes it, and each write returns what it wrote): it is not read again.
    """
    connection, conflict = await _connection(rt, session, connection_seen)
    base = await _without_space(rt, session, connection, conflict)
    space_id = session.status.space_id
    if space_id is None:
        return base
    if creation.space_unrequested(session.status):  # nothing of ours to read: what blocks a create?
        return replace(base, secrets_problem=await _secrets_problem(rt, session))
    try:
        space = await _read_space(rt, session, space_id, verify_marker=verify_marker)
    except HubError as error:
        return replace(base, hub_failure=error.failure)
    return await _with_space(rt, session, base, space_id, space)


async def _connection(
    rt: SessionRuntime, session: Session, connection_seen: Observation | None
) -> tuple[dict[str, str], str | None]:
    """The connection Secret's values (none when it is missing), and why it is not the session's."""
    if connection_seen is not None:
        seen = {
            KEY_TOKEN: connection_seen.token,
            KEY_SANDBOX_URL: connection_seen.connection_url,
            KEY_HUB_TOKEN: connection_seen.connection_hub_token,
            KEY_PAUSED_SINCE: connection_seen.connection_paused_since,
        }
        return {key: value for key, value in seen.items() if value}, connection_seen.connection_conflict
    try:
        connection = await rt.kube.read_connection(
            session.namespace, model.connection_secret_name(session), session.uid, session=session.name
        )
    except ConnectionSecretConflict as error:
        return {}, str(error)
    return connection or {}, None


async def _without_space(
    rt: SessionRuntime, session: Session, connection: dict[str, str], conflict: str | None
) -> Observation:
    """All but the Space: the connection Secret, the read token, prices, and the approval policy."""
    hub_token, hub_token_problem = await read_token(rt, session) if session.spec.private else (None, None)
    trust = await observe_approval(rt, session)
    return Observation(
        token=connection.get(KEY_TOKEN) or None,
        connection_url=connection.get(KEY_SANDBOX_URL) or None,
        prices=await rt.prices.prices(),
        connection_conflict=conflict,
        policy_problem=trust.policy_problem,
        policy_since=trust.policy_since,
        approver_authorized=trust.approver_authorized,
        denier_authorized=trust.denier_authorized,
        read_token=hub_token,
        read_token_problem=hub_token_problem,
        connection_hub_token=connection.get(KEY_HUB_TOKEN) or None,
        connection_paused_since=connection.get(KEY_PAUSED_SINCE) or None,
        create_record_inherited=session.status.duplicate_requested_time is not None
        and not rt.create_slots.sent_here(session.uid),
    )


async def _read_space(
    rt: SessionRuntime, session: Session, space_id: str, *, verify_marker: bool
) -> SpaceView | None:
    """The session's Space, from the owner's listing where that shows it, else from the Hub (with its
    marker while it is unread); None: not found, with the owner still visible to the token."""
    confirmed = session.status.space_confirmed_time is not None
    unread = creation.marker_unread(session.status, rt.config)
    # Created by this pass, or by this process's duplicate and not confirmed yet: it carries our marker.
    ours = not verify_marker or (not confirmed and rt.observer.made_here(space_id))
    # A cold start whose app answered since the Hub last showed it building: that view stands until a
    # newer one, and the pass waits for no listing (one may queue at the gate while creates spend the
    # Hub's window). Once Ready, or after any change the operator asks of the Space, it does not.
    cold = _cold_start(session) and (ours or not unread)
    answered = rt.prober.answered_view(session.uid, space_id) if cold else None
    listed: SpaceView | None
    if answered is not None:
        listed = rt.observer.view(space_id) if rt.observer.has_news(space_id) else answered
    elif not unread:
        listed = await rt.observer.listed(space_id)
    else:  # just duplicated here: the next listing confirms it, shared by the whole burst
        listed = await rt.observer.after_action(space_id) if ours else None
    if listed is not None:
        space: SpaceView | None = listed
    else:
        asked_at = rt.observer.clock()
        space = await rt.hub.space(space_id, with_marker=unread and not ours)
        rt.observer.read(space_id, space, asked_at)
    if space is not None and ours:
        space = replace(space, marker_uid=session.uid, marker_cluster=rt.config.cluster_id)
    if space is None and confirmed:
        await rt.hub.check_owner_access(space_id)
    return space


async def _with_space(
    rt: SessionRuntime, session: Session, base: Observation, space_id: str, space: SpaceView | None
) -> Observation:
    """The observation with the Space as read, its sandbox's health (from its edge while it builds,
    else asked when it runs), and, when it is gone, what would block creating it again."""
    token, hub_token = base.token, base.read_token
    health = None
    if space is not None:
        space, health = _probed(rt, session, space, token, hub_token)
        if health is not None and token and space.sandbox_url:  # the edge's answer is a health check too
            checked = CheckedHealth(
                health, datetime.now(UTC), token, hub_token or "", space.sandbox_url, space
            )
            rt.observer.checked(space.space_id, checked)
    # What the session acts on (a Space its app shows running included): a listing that shows the
    # same is no news, and wakes no pass.
    rt.observer.saw(space_id, space)
    secrets_problem = await _secrets_problem(rt, session) if space is None else None
    if (
        health is None
        and space is not None
        and space.stage == "RUNNING"
        and token
        and space.sandbox_url
        and space.current_hardware == space.requested_hardware
        and (hub_token or not session.spec.private)  # the core says why a private one is not checked
    ):
        health = await _health(rt, session, space, space.sandbox_url, token, hub_token or "")
    return replace(base, space=space, health=health, secrets_problem=secrets_problem)


#: The Ready reasons of a session that has not been Ready since its Space was duplicated: its build
#: time is its template's.
COLD_START_REASONS = frozenset({Reason.PROVISIONING, Reason.CREATING, Reason.BUILDING, Reason.STARTING})


def _cold_start(session: Session) -> bool:
    """The session has not been Ready since its Space was duplicated: its build is a cold start."""
    ready = condition_of(session.status, READY)
    duplicated = session.status.duplicate_requested_time is not None
    return duplicated and (ready is None or ready.reason in COLD_START_REASONS)


def _probed(
    rt: SessionRuntime, session: Session, space: SpaceView, token: str | None, hub_token: str | None
) -> tuple[SpaceView, HealthResult | None]:
    """The Space as its app's edge shows it (`EdgeProber.building_view`), probed with the session's own
    token; the prober wakes the session when it answers. A cold start's build is counted from the
    duplicate, so that its template's build time is learned."""
    requested_at = session.status.duplicate_requested_time
    cold = _cold_start(session)
    since = time.time()
    if cold and requested_at:
        since = rt.prober.build_began(session.uid) or api.parse_rfc3339(requested_at).timestamp()
    template = session.status.template if cold else None
    return rt.prober.building_view(
        session.uid, space, token, hub_token, private=session.spec.private, since=since, template=template
    )


async def _health(
    rt: SessionRuntime, session: Session, space: SpaceView, sandbox_url: str, token: str, hub_token: str
) -> HealthResult:
    """The sandbox's health: its last answer where that still holds (core/reads.py), else asked now."""
    now = datetime.now(UTC)
    checked = rt.observer.health(space.space_id)
    if checked is not None and reads.health_still_holds(
        checked, space, token, hub_token, session.spec, rt.config, now
    ):
        return checked.result
    result = await rt.hub.health(sandbox_url, token, hub_token)
    rt.observer.checked(space.space_id, CheckedHealth(result, now, token, hub_token, sandbox_url, space))
    return result


async def _secrets_problem(rt: SessionRuntime, session: Session) -> str | None:
    """Why the Secrets the session names cannot be given to a new Space, if they cannot."""
    if not session.spec.secrets:
        return None
    _, problem = await rt.kube.resolve_secrets(session.namespace, session.spec.secrets)
    return problem


async def observe_approval(rt: SessionRuntime, session: Session) -> Observation:
    """Whether the API server enforces the approval policy (cached), and, when a paid flavor's
    approval would be acted on, whether its approver still holds `approve` here (a SubjectAccessReview)."""
    now = time.monotonic()
    question = approver_question(session.spec, session.namespace)
    wanted = str(session.spec.hardware)
    paid = not money.is_free(wanted, rt.config)
    held = session.status.hardware
    # Before a paid flavor is first requested, the policy is read now, not from the cache: a spoofed
    # approval admitted right after the policy was removed must not ride on an older answer.
    upgrading = (
        paid and question is not None and (held is None or wanted not in (held.requested, held.current))
    )
    problem = await rt.kube.approval_policy_problem(now, fresh=upgrading)
    denier = denier_question(session.spec, session.namespace)
    trusting = problem is None and not rt.config.insecure_trust_approvals
    denied = await _may_approve(rt, session, denier, now) if denier is not None and trusting else None
    since = rt.kube.approval_policy_since()
    if question is None or not paid or not trusting:
        return Observation(policy_problem=problem, policy_since=since, denier_authorized=denied)
    authorized = await _may_approve(rt, session, question, now)
    return Observation(
        policy_problem=problem, policy_since=since, approver_authorized=authorized, denier_authorized=denied
    )


async def _may_approve(
    rt: SessionRuntime, session: Session, question: ApproverQuestion, now: float
) -> bool | None:
    """A SubjectAccessReview's answer; None when it could not be asked."""
    try:
        return await rt.kube.approver_may_approve(question, now)
    except ApiError as error:
        log.warning("session %s/%s: SubjectAccessReview failed: %s %s", session.namespace, session.name,
                    error.status, error.reason)  # fmt: skip
        return None


async def observe_session(
    rt: SessionRuntime,
    session: Session,
    *,
    verify_marker: bool = True,
    connection_seen: Observation | None = None,
) -> Observation | DeletionObservation:
    if session.deleting:
        return await observe_deletion(rt, session)
    if session.spec_problem is not None:
        return Observation()  # nothing of a spec that cannot be read is acted on, so nothing is read
    return await observe(rt, session, verify_marker=verify_marker, connection_seen=connection_seen)


async def observe_deletion(rt: SessionRuntime, session: Session) -> DeletionObservation:
    """The Space's marker, and its hardware when it is to be kept; "not found" only with access. A
    marker the session already saw (core/reads.py) is not read again: the delete itself then says
    whether the Space was still there, one Hub call in all."""
    space_id = model.deletion_space_id(session, rt.config)
    if reads.marker_known(session, rt.config):
        return DeletionObservation(marker=session.uid, marker_cluster=session.status.marker_cluster_id or "")
    try:
        ownership = await rt.hub.ownership(space_id, deleting=True)
        space = None
        keep = session.spec.deletion_policy == api.DeletionPolicy.ORPHAN
        if ownership is not None and keep and ownership.session_uid == session.uid:
            space = await rt.hub.space(space_id)
            if space is None:
                ownership = None
        if ownership is None:
            await rt.hub.check_owner_access(space_id)
            return DeletionObservation()
    except HubError as error:
        return DeletionObservation(hub_failure=error.failure)
    return DeletionObservation(
        marker=ownership.session_uid,
        marker_cluster=ownership.cluster_id,
        current_hardware=space.current_hardware if space else None,
        requested_hardware=space.requested_hardware if space else None,
    )
