"""The I/O shell: kopf handlers that observe, call the decision core, apply, and write status.

Each session has one reconcile loop, a kopf daemon (an asyncio task, not a thread). A pass
loops observe -> decide -> apply until the core asks for nothing more now, writes status if
it changed, and sleeps for the core's requeue delay, or until the spec changes: a watch
event with a new metadata.generation wakes the loop at once, as controller-runtime's
GenerationChangedPredicate would. Status writes do not wake it, so a pass costs no extra
calls. kopf's change handlers are not used for this: a delayed kopf retry would hold back
a spec change until the delay ran out.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import random
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any

import aiohttp
import kopf
import uvloop

# The type of kopf.operator's `identity`, which kopf does not re-export (its own CLI builds it so).
from kopf._core.engines.peering import Identity as KopfIdentity

from sandbox_operator import api
from sandbox_operator.config.settings import OperatorConfig, RunSettings
from sandbox_operator.config.startup import lease_settings, own_identity, resolve_config
from sandbox_operator.core import creation, lifecycle, lifetime, model, money, reads
from sandbox_operator.core.conditions import READY, EventNote, Reason, condition_of
from sandbox_operator.core.model import (
    Action,
    CreateSpace,
    DeleteSession,
    DeleteSpace,
    DeletionObservation,
    HealthResult,
    HubFailure,
    MigrateMarker,
    Observation,
    PauseSpace,
    Plan,
    PublishConnection,
    PublishHubToken,
    PublishPause,
    RecordIntent,
    RecordReceipt,
    ReleaseSpace,
    RequestHardware,
    RestartSpace,
    RotateToken,
    Session,
    SetSleepTime,
    SpaceView,
)
from sandbox_operator.core.reads import CheckedHealth
from sandbox_operator.fairness import serve_session
from sandbox_operator.hub.client import HubClient
from sandbox_operator.hub.creates_in_flight import CreateSlots
from sandbox_operator.hub.edge_probe import BUILD_STAGES, EdgeProber, ProbeTarget
from sandbox_operator.hub.errors import HubError, SpaceExistsError
from sandbox_operator.hub.listing import FleetObserver
from sandbox_operator.hub.prices import PriceCatalog
from sandbox_operator.k8s.admission import HOW_TO_FIX, ApproverQuestion, approver_question, denier_question
from sandbox_operator.k8s.client import (
    KEY_HUB_TOKEN,
    KEY_PAUSED_SINCE,
    KEY_RESUME,
    KEY_SANDBOX_URL,
    KEY_SPACE_ID,
    KEY_TOKEN,
    ConnectionSecretConflict,
    KubeClient,
    SecretValueError,
    new_token,
    status_patch,
)
from sandbox_operator.k8s.leadership import run_as_leader
from sandbox_operator.k8s.lease import LeaderElector
from sandbox_operator.k8s.secret_cache import SecretCache
from sandbox_operator.k8s.transport import COMPONENT, USER_AGENT, ApiError, credentials
from sandbox_operator.observability import metrics
from sandbox_operator.observability.health import (
    HealthMonitor,
    WatchSync,
    readiness,
    serving_readiness,
    stall_after,
    sync_checks,
    watch_checks,
)
from sandbox_operator.pools import reconcile as pools
from sandbox_operator.sweeper import Sweeper

#: Decide-apply steps in one reconcile pass before the loop sleeps.
MAX_STEPS = 8
#: The shortest sleep between passes (and kopf retry of a finalizer), so "again now" still yields.
MIN_REQUEUE = 0.05
#: kopf's retry delay for an error no code path expected (a bug); expected failures set their own.
UNEXPECTED_ERROR_BACKOFF = 10.0

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """What every handler shares: configuration and the two API clients."""

    config: OperatorConfig
    hub: HubClient
    kube: KubeClient
    prices: PriceCatalog
    #: The latest listing of each owner's Spaces, read by every session's loop.
    observer: FleetObserver
    #: Building Spaces' apps, asked at the edge whether they answer yet (hub/edge_probe.py).
    prober: EdgeProber
    #: The read token Secrets, read once per short while for every session's pass.
    secrets: SecretCache
    #: Namespaces watched; empty: the whole cluster.
    namespaces: list[str] = field(default_factory=list)
    monitor: HealthMonitor = field(default_factory=HealthMonitor)
    #: Whether the watches of sessions and pools delivered their initial listing (readiness).
    sync: WatchSync = field(default_factory=lambda: WatchSync((api.PLURAL, api.POOL_PLURAL)))
    #: Background tasks started with the operator (sweeper, heartbeat, watch checks).
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    #: Writers of warm pools' status in this process: one at a time per pool, claims batched.
    pools: pools.PoolBook = field(default_factory=pools.PoolBook)
    #: Turns for duplicates, so each can leave by its send deadline (hub/creates_in_flight.py).
    create_slots: CreateSlots = field(default_factory=CreateSlots)

    def platform_read_token_secret(self, namespace: str) -> tuple[str, str] | None:
        """Where the platform keeps the Hub read token for sessions of `namespace` (namespace, name): that
        namespace's own Secret when the platform gives each namespace one, else the operator's shared
        one; None: no read token is configured. A namespace without its own never gets the shared one."""
        if self.config.hub_read_token_namespace_secret:
            return namespace, self.config.hub_read_token_namespace_secret
        if self.config.hub_read_token_secret:
            return self.config.operator_namespace, self.config.hub_read_token_secret
        return None

    async def platform_read_token(self, namespace: str) -> str | None:
        """The Hub read token the platform configured for sessions (and pools) of `namespace`, if any."""
        where = self.platform_read_token_secret(namespace)
        if where is None:
            return None
        data = await self.secrets.get(*where)
        return (data or {}).get(self.config.hub_read_token_key) or None


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


def _now() -> datetime:
    return datetime.now(UTC)


def _post(body: kopf.Body, notes: list[EventNote]) -> None:
    for note in notes:
        kopf.event(body, type=note.type, reason=note.reason, message=note.message)


async def read_token(rt: Runtime, session: Session) -> tuple[str | None, str | None]:
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
    rt: Runtime, session: Session, *, verify_marker: bool = True, connection_seen: Observation | None = None
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
    if connection_seen is not None:
        conflict = connection_seen.connection_conflict
        seen = {
            KEY_TOKEN: connection_seen.token,
            KEY_SANDBOX_URL: connection_seen.connection_url,
            KEY_HUB_TOKEN: connection_seen.connection_hub_token,
            KEY_PAUSED_SINCE: connection_seen.connection_paused_since,
        }
        connection: dict[str, str] | None = {key: value for key, value in seen.items() if value}
    else:
        conflict = None
        try:
            connection = await rt.kube.read_connection(
                session.namespace, model.connection_secret_name(session), session.uid, session=session.name
            )
        except ConnectionSecretConflict as error:
            connection, conflict = None, str(error)
    token = (connection or {}).get(KEY_TOKEN) or None
    connection_url = (connection or {}).get(KEY_SANDBOX_URL) or None
    hub_token, hub_token_problem = await read_token(rt, session) if session.spec.private else (None, None)
    trust = await observe_approval(rt, session)
    base = Observation(
        token=token,
        connection_url=connection_url,
        prices=await rt.prices.prices(),
        connection_conflict=conflict,
        policy_problem=trust.policy_problem,
        policy_since=trust.policy_since,
        approver_authorized=trust.approver_authorized,
        denier_authorized=trust.denier_authorized,
        read_token=hub_token,
        read_token_problem=hub_token_problem,
        connection_hub_token=(connection or {}).get(KEY_HUB_TOKEN) or None,
        connection_paused_since=(connection or {}).get(KEY_PAUSED_SINCE) or None,
        create_record_inherited=session.status.duplicate_requested_time is not None
        and not rt.create_slots.sent_here(session.uid),
    )
    space_id = session.status.space_id
    if space_id is None:
        return base
    if creation.space_unrequested(session.status):  # nothing of ours to read: what blocks a create?
        return replace(base, secrets_problem=await _secrets_problem(rt, session))
    confirmed = session.status.space_confirmed_time is not None
    unread = creation.marker_unread(session.status, rt.config)
    # Created by this pass, or by this process's duplicate and not confirmed yet: it carries our marker.
    ours = not verify_marker or (not confirmed and rt.observer.made_here(space_id))
    if not unread:
        listed = await rt.observer.listed(space_id)
    else:  # just duplicated here: the next listing confirms it, shared by the whole burst
        listed = await rt.observer.after_action(space_id) if ours else None
    try:
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
    except HubError as error:
        return replace(base, hub_failure=error.failure)
    health = None
    if space is not None:
        space, health = _probed(rt, session, space, token, hub_token)
        if health is not None and token and space.sandbox_url:  # the edge's answer is a health check too
            checked = CheckedHealth(health, _now(), token, hub_token or "", space.sandbox_url, space)
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
    return replace(
        base,
        space=space,
        health=health,
        secrets_problem=secrets_problem,
    )


#: The Ready reasons of a session that has not been Ready since its Space was duplicated: its build
#: time is its template's.
COLD_START_REASONS = frozenset({Reason.PROVISIONING, Reason.CREATING, Reason.BUILDING, Reason.STARTING})


def _probed(
    rt: Runtime, session: Session, space: SpaceView, token: str | None, hub_token: str | None
) -> tuple[SpaceView, HealthResult | None]:
    """The Space as its app's edge shows it: building for a flavor, yet answering its health check
    with the session's own token, it runs on that flavor (F18) before any listing says so. A Space
    building with an app address is offered to the prober (which wakes the session when it answers);
    any other is withdrawn from it."""
    requested = space.requested_hardware
    if space.stage not in BUILD_STAGES or requested is None or not token or not space.sandbox_url:
        rt.prober.withdraw(session.uid)
        return space, None
    if session.spec.private and not hub_token:
        return space, None  # its edge is not passed without a read token: the core says so once it runs
    answer = rt.prober.answered(session.uid, space.space_id, requested)
    if answer is not None:
        return replace(space, stage="RUNNING", current_hardware=requested), answer
    ready = condition_of(session.status, READY)
    requested_at = session.status.duplicate_requested_time
    cold = requested_at is not None and (ready is None or ready.reason in COLD_START_REASONS)
    since = time.time()
    if cold and requested_at:
        since = rt.prober.build_began(session.uid) or api.parse_rfc3339(requested_at).timestamp()
    template = session.status.template if cold else None
    edge = ProbeTarget(space.space_id, requested, space.sandbox_url, token, hub_token or "", since, template)
    rt.prober.offer(session.uid, edge)
    return space, None


async def _health(
    rt: Runtime, session: Session, space: SpaceView, sandbox_url: str, token: str, hub_token: str
) -> HealthResult:
    """The sandbox's health: its last answer where that still holds (core/reads.py), else asked now."""
    now = _now()
    checked = rt.observer.health(space.space_id)
    if checked is not None and reads.health_still_holds(
        checked, space, token, hub_token, session.spec, rt.config, now
    ):
        return checked.result
    result = await rt.hub.health(sandbox_url, token, hub_token)
    rt.observer.checked(space.space_id, CheckedHealth(result, now, token, hub_token, sandbox_url, space))
    return result


async def _secrets_problem(rt: Runtime, session: Session) -> str | None:
    """Why the Secrets the session names cannot be given to a new Space, if they cannot."""
    if not session.spec.secrets:
        return None
    _, problem = await rt.kube.resolve_secrets(session.namespace, session.spec.secrets)
    return problem


async def observe_approval(rt: Runtime, session: Session) -> Observation:
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


async def _may_approve(rt: Runtime, session: Session, question: ApproverQuestion, now: float) -> bool | None:
    """A SubjectAccessReview's answer; None when it could not be asked."""
    try:
        return await rt.kube.approver_may_approve(question, now)
    except ApiError as error:
        log.warning("session %s/%s: SubjectAccessReview failed: %s %s", session.namespace, session.name,
                    error.status, error.reason)  # fmt: skip
        return None


@dataclass(frozen=True)
class Applied:
    """What carrying out an action taught us, so the next step need not ask the Hub again."""

    #: A Hub failure, for the core to report and retry.
    failure: HubFailure | None = None
    #: The world after the action, when it is known without asking (a Kubernetes-only change).
    known: Observation | DeletionObservation | None = None
    #: This pass created the Space: it carries our marker, no need to read it back.
    created: bool = False
    #: The session is being deleted: this pass stops, the finalizer takes over.
    deleting: bool = False
    #: A duplicate request went out (whatever its answer).
    sent: bool = False
    #: The operator changed the session's spec: this pass stops, the new generation wakes the loop.
    respecified: bool = False
    #: The spec changed since the pass read it: the plan is void, the new spec decides again.
    outdated: bool = False


async def apply(
    rt: Runtime, session: Session, plan: Plan, observed: Observation | DeletionObservation
) -> Applied:
    """Carry out the plan's action; a Hub failure is returned for the core to report, not raised.
    Status is written only as the core decided it: an action that must be remembered before it
    is carried out (the intent, a create in flight) first writes the plan's status."""
    action = plan.action
    assert action is not None
    if isinstance(action, RecordReceipt):
        await rt.kube.patch_status(session.namespace, session.name, status_patch(plan.status))
        return Applied(known=observed)
    if isinstance(observed, DeletionObservation):
        return await apply_deletion(rt, action)
    owner = {"name": session.name, "uid": session.uid}
    secret_name = model.connection_secret_name(session)
    try:
        match action:
            case RecordIntent(space_id=space_id, connection_secret=name, hub_token=hub_token):
                token = observed.token or new_token()
                values = {
                    KEY_SPACE_ID: space_id,
                    KEY_TOKEN: token,
                    KEY_SANDBOX_URL: "",
                    KEY_HUB_TOKEN: hub_token,
                }
                await rt.kube.write_connection(
                    namespace=session.namespace,
                    name=name,
                    owner=owner,
                    values=values,
                    exists=bool(observed.token),
                    defer=True,  # written whole by PublishConnection, once the Hub reports the URL
                )
                # The status naming the Space is written with the create record, before the duplicate
                # (CreateSpace): until then a restart records the same intent again, the Space's name
                # comes from the UID. The token is kept in this process until the Secret is written;
                # a restart before then gives the Space a new one (RotateToken).
                # Intent precedes creation, so no Space of ours exists yet; should one exist anyway
                # (a status lost by hand), the duplicate answers 409 and it is adopted.
                return Applied(
                    known=replace(
                        observed, space=None, token=token, connection_url=None, connection_hub_token=hub_token
                    )
                )
            case CreateSpace(space_id=space_id, template=template, private=private):
                values, problem = await rt.kube.resolve_secrets(session.namespace, session.spec.secrets)
                if problem is not None:
                    return Applied()  # observed again next step, and reported as SecretNotFound
                assert observed.token is not None, "CreateSpace is decided only with a token"
                # The finalizer must know a create may be in flight before it can be: record it
                # first. A session already marked for deletion gets no Space at all.
                written = await rt.kube.patch_status(
                    session.namespace, session.name, status_patch(plan.status)
                )
                if written.get("metadata", {}).get("deletionTimestamp"):
                    log.info("session %s/%s is being deleted; not creating its Space",
                             session.namespace, session.name)  # fmt: skip
                    return Applied(deleting=True)
                try:
                    await rt.hub.duplicate(
                        template=template,
                        space_id=space_id,
                        private=private,
                        token=observed.token,
                        secrets=values,
                        session_uid=session.uid,
                        session_ref=f"{session.namespace}/{session.name}",
                        send_by=action.send_by,
                    )
                except SpaceExistsError:
                    log.info("Space %s already exists; adopting it after checking its marker", space_id)
                    return Applied(sent=True)
                except HubError as error:  # one the gate refused never left: it cannot land
                    return Applied(failure=error.failure, sent=error.sent)
                rt.observer.created(space_id)
                rt.prober.duplicated(session.uid)
                return Applied(created=True, sent=True)
            case RotateToken(space_id=space_id):
                token = new_token()
                await rt.hub.set_token(space_id, token)
                await rt.kube.write_connection(
                    namespace=session.namespace,
                    name=secret_name,
                    owner=owner,
                    values={KEY_TOKEN: token},
                    exists=observed.token is not None,
                )
                return Applied(known=replace(observed, token=token, health=None))
            case PublishConnection(sandbox_url=url):
                await rt.kube.write_connection(
                    namespace=session.namespace,
                    name=secret_name,
                    owner=owner,
                    values={KEY_SANDBOX_URL: url},
                    exists=observed.token is not None,
                )
                return Applied(known=replace(observed, connection_url=url))
            case PublishHubToken(hub_token=hub_token):
                await rt.kube.write_connection(
                    namespace=session.namespace,
                    name=secret_name,
                    owner=owner,
                    values={KEY_HUB_TOKEN: hub_token},
                    exists=observed.token is not None,
                )
                return Applied(known=replace(observed, connection_hub_token=hub_token))
            case RequestHardware(space_id=space_id, flavor=flavor, sleep_time=sleep_time):
                await rt.hub.request_hardware(space_id, flavor, sleep_time)
            case SetSleepTime(space_id=space_id, seconds=seconds):
                await rt.hub.set_sleep_time(space_id, seconds)
                if observed.space is not None:
                    return Applied(known=replace(observed, space=replace(observed.space, sleep_time=seconds)))
            case RestartSpace(space_id=space_id):
                await rt.hub.restart(space_id)
            case MigrateMarker(space_id=space_id, cluster_id=cluster_id):
                await rt.hub.mark_cluster(space_id, cluster_id)
                log.info("Space %s: its ownership marker now names this cluster (%s)", space_id, cluster_id)
                if observed.space is not None:
                    marked = replace(observed.space, marker_cluster=cluster_id)
                    return Applied(known=replace(observed, space=marked))
            case PauseSpace(space_id=space_id, for_idle=for_idle):
                if for_idle:  # the pause is recorded before spec.paused says so, and both before the Hub
                    await rt.kube.patch_status(session.namespace, session.name, status_patch(plan.status))
                    if not await rt.kube.pause_session(session.namespace, session.name, session.generation):
                        # Its record goes with it: the status is again what the pass read.
                        await rt.kube.patch_status(
                            session.namespace, session.name, status_patch(session.status)
                        )
                        return Applied(outdated=True)
                await rt.hub.pause(space_id)
                return Applied(respecified=for_idle)
            case PublishPause(paused_since=since, resume=how):
                await rt.kube.write_connection(
                    namespace=session.namespace,
                    name=secret_name,
                    owner=owner,
                    values={KEY_PAUSED_SINCE: since, KEY_RESUME: how},
                )
                return Applied(known=replace(observed, connection_paused_since=since))
            case DeleteSession():
                # Kopf stops this loop once the deletion is seen: the status says why before it goes.
                await rt.kube.patch_status(session.namespace, session.name, status_patch(plan.status))
                await rt.kube.delete_session(session.namespace, session.name, session.uid)
                return Applied(deleting=True)
            case _:
                raise AssertionError(f"unexpected action {action!r}")
    except HubError as error:
        return Applied(failure=error.failure)
    except ConnectionSecretConflict as error:
        return Applied(known=replace(observed, connection_conflict=str(error)))
    return Applied()


async def apply_deletion(rt: Runtime, action: Action) -> Applied:
    """Carry out one action of a deleting session (delete, free the hardware, or release)."""
    try:
        match action:
            case DeleteSpace(space_id=space_id):
                if await rt.hub.delete(space_id):
                    return Applied(known=DeletionObservation(deleted=True))
                # Not found: gone, or not visible yet (a fresh duplicate) or to this token any more.
                await rt.hub.check_owner_access(space_id)
                return Applied(known=DeletionObservation())
            case ReleaseSpace(space_id=space_id):
                await rt.hub.release(space_id)
            case RequestHardware(space_id=space_id, flavor=flavor, sleep_time=sleep_time):
                await rt.hub.request_hardware(space_id, flavor, sleep_time)
            case _:
                raise AssertionError(f"unexpected action for a deleting session {action!r}")
    except HubError as error:
        return Applied(failure=error.failure)
    return Applied()


async def observe_session(
    rt: Runtime, session: Session, *, verify_marker: bool = True, connection_seen: Observation | None = None
) -> Observation | DeletionObservation:
    if session.deleting:
        return await observe_deletion(rt, session)
    if session.spec_problem is not None:
        return Observation()  # nothing of a spec that cannot be read is acted on, so nothing is read
    return await observe(rt, session, verify_marker=verify_marker, connection_seen=connection_seen)


async def drive(rt: Runtime, body: kopf.Body, session: Session) -> Plan:
    """The one loop for a session's whole life: observe, decide, apply, until the core asks for
    nothing more now (or a failure); posts the core's Events and returns the last plan."""
    session, claimed = await pools.claim_step(rt, body, session)  # a warm pool's Space, if it names one
    if claimed is not None:
        return claimed
    observed = await observe_session(rt, session)
    plan: Plan | None = None
    for _ in range(MAX_STEPS):
        plan = lifecycle.decide(session, observed, rt.config, _now(), random.random())
        if isinstance(plan.action, DeleteSession):  # the deletion ends this loop: its Events go first
            _post(body, plan.events)
            plan = replace(plan, events=[])
        async with rt.create_slots.turn(isinstance(plan.action, CreateSpace)) as waited:
            if waited:  # decide again, with a fresh deadline
                plan = lifecycle.decide(session, observed, rt.config, _now(), random.random())
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
        if isinstance(plan.action, CreateSpace):
            if applied.sent:
                rt.create_slots.sent(session.uid)
            recorded = creation.create_record(session.status, plan.action, applied.sent, applied.failure)
            answered = creation.create_failure(session.status, applied.sent, applied.failure)
            plan.status.duplicate_requested_time = recorded
            plan.status.duplicate_failure = answered
            record = {"duplicate_requested_time": recorded, "duplicate_failure": answered}
            session = replace(session, status=session.status.model_copy(update=record))
        if applied.failure is not None:
            plan = lifecycle.decide(
                session, replace(observed, hub_failure=applied.failure), rt.config, _now(), random.random()
            )
        _post(body, plan.events)
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


async def reconcile(rt: Runtime, body: kopf.Body, loop: SessionLoop) -> Plan:
    """One reconcile pass of a live session; returns its last plan (when to come back, what it holds).
    A pass that starts before the watch delivered the previous pass's status write decides on that
    status, not the older one (which would post its Events, e.g. an expiry notice, a second time)."""
    # A live pass even when deletion has begun: the finalizer runs the deletion branch; the
    # daemon is stopped by kopf, and a create it was about to send is dropped (Applied.deleting).
    plan = await drive(rt, body, loop.latest(body))
    written = loop.latest(body)
    if body.get("metadata", {}).get("deletionTimestamp"):
        return plan  # the finalizer owns status now: its receipt must not be overwritten
    pools.record_launch(written.status, plan.status, body)
    if status_patch(plan.status) != status_patch(written.status):
        before = str(body.get("metadata", {}).get("resourceVersion", ""))
        await rt.kube.patch_status(written.namespace, written.name, status_patch(plan.status))
        loop.unseen_write = (before, plan.status)
    return plan


@dataclass
class SessionLoop:
    """Per-session state kept in kopf's per-object memo: the wake-up signal of its loop."""

    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    generation: int | None = None
    #: Set by the observer when a listing has news for this session (its own, so a stale one can be
    #: dropped without losing a spec change).
    listed: asyncio.Event = field(default_factory=asyncio.Event)
    #: The status the last pass wrote, and the object's resourceVersion before that write.
    unseen_write: tuple[str, api.AgentSessionStatus] | None = None

    def latest(self, body: kopf.Body) -> Session:
        """The session from kopf's live body, with the status this loop last wrote while the body is
        still the version that write replaced (the watch has not delivered it yet)."""
        session = session_from_body(body)
        unseen = self.unseen_write
        if unseen is not None and unseen[0] == str(body.get("metadata", {}).get("resourceVersion", "")):
            return replace(session, status=unseen[1].model_copy(deep=True))
        self.unseen_write = None
        return session


def spec_changed(loop: SessionLoop, generation: int | None) -> bool:
    """Record the generation a watch event shows; True when it differs from the last one seen. The
    first event only records it: the loop's first pass reads that same object, and a wake-up
    arriving during that pass would only repeat it (and its Hub reads)."""
    changed = loop.generation is not None and generation != loop.generation
    loop.generation = generation
    return changed


def session_loop(memo: kopf.Memo) -> SessionLoop:
    loop: SessionLoop = memo.setdefault("session_loop", SessionLoop())
    return loop


async def _sleep(loop: SessionLoop, stopped: kopf.DaemonStopped, delay: float | None) -> None:
    """Until `delay` passes (forever if None), the spec changes, a listing has news, or the loop stops."""
    waiters = {
        asyncio.ensure_future(loop.wakeup.wait()),
        asyncio.ensure_future(loop.listed.wait()),
        asyncio.ensure_future(stopped.wait()),
    }
    try:
        await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def run_session(rt: Runtime, body: kopf.Body, memo: kopf.Memo, stopped: kopf.DaemonStopped) -> None:
    """The session's reconcile loop: `body` is kopf's live view, always the latest object. Its calls
    wait their turn behind those of sessions created before it, namespaces in turn (fairness.py)."""
    loop = session_loop(memo)
    failures = 0
    meta = body.get("metadata", {})
    uid = str(meta.get("uid", ""))
    serve_session(str(meta.get("namespace", "")), str(meta.get("name", "")), meta.get("creationTimestamp"))
    rt.prober.bind(uid, loop.listed)
    try:
        while not stopped:
            delay = await _reconcile_once(rt, body, loop, uid, failures)
            failures = 0 if delay.succeeded else failures + 1
            await _sleep(loop, stopped, None if delay.seconds is None else max(MIN_REQUEUE, delay.seconds))
    finally:
        rt.observer.forget(uid)
        rt.prober.forget(uid)
        rt.kube.forget(uid)
        rt.create_slots.forget(uid)


@dataclass(frozen=True)
class _Delay:
    """When a session's loop looks again, and whether its pass got through."""

    seconds: float | None
    succeeded: bool


def _follow_listing(rt: Runtime, uid: str, loop: SessionLoop, plan: Plan) -> float | None:
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


async def _reconcile_once(rt: Runtime, body: kopf.Body, loop: SessionLoop, uid: str, failures: int) -> _Delay:
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
        delay = lifecycle.backoff_delay(failures + 1, rt.config, random.random())
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


def _failure_reason(error: Exception) -> tuple[Reason, str]:
    """The condition reason and message for a failure no decision foresaw."""
    if isinstance(error, SecretValueError):
        return Reason.SECRET_INVALID, str(error)
    if isinstance(error, ApiError):
        return Reason.INTERNAL_ERROR, f"Kubernetes API error {error.status} {error.reason}"
    return Reason.INTERNAL_ERROR, f"unexpected error: {type(error).__name__}: {error}"


#: Status fields a failed pass writes: what the failure changes (the body may be older than facts
#: this pass already recorded), and, once paid hardware was given up, its receipt and the request.
FAILURE_FIELDS = ("observedGeneration", "phase", "failures", "nextRetryTime", "conditions")
GIVE_UP_FIELDS = ("hardware", "paidPeriod", "receipts", "spend")


async def report_failure(rt: Runtime, body: kopf.Body, error: Exception, *, transient: bool = False) -> float:
    """Show a failed pass as a condition and an Event (not for a `transient` one: a Kubernetes API
    error is retried quietly), and give up paid hardware the core finds no longer allowed, writing
    its receipt; returns the backoff delay."""
    session = session_from_body(body)
    reason, message = _failure_reason(error)
    if not transient:
        log.error("session %s/%s: %s", session.namespace, session.name, message,
                  exc_info=reason == Reason.INTERNAL_ERROR)  # fmt: skip
    plan = lifecycle.decide_failure(session, reason, message, rt.config, _now(), random.random())
    written = status_patch(plan.status)
    fields = {} if transient else {key: written[key] for key in FAILURE_FIELDS}
    receipts = [note for note in plan.events if note.reason == Reason.HARDWARE_RECEIPT]
    events = [] if transient else [note for note in plan.events if note not in receipts]
    if isinstance(plan.action, RequestHardware):
        try:
            await rt.hub.request_hardware(plan.action.space_id, plan.action.flavor, plan.action.sleep_time)
        except HubError as hub_error:  # retried with the pass; the stretch stays open until it succeeds
            log.warning("session %s/%s: cannot move Space %s to %s: %s", session.namespace, session.name,
                        plan.action.space_id, plan.action.flavor, hub_error.failure.message)  # fmt: skip
        else:
            log.warning("session %s/%s: gave up paid hardware after a failed pass: requested %s",
                        session.namespace, session.name, plan.action.flavor)  # fmt: skip
            fields |= {key: written[key] for key in GIVE_UP_FIELDS}
            events += receipts
    _post(body, events)
    if fields:
        await _write_failure(rt, session, body, fields)
    return plan.requeue_after or rt.config.backoff_base


async def _write_failure(rt: Runtime, session: Session, body: kopf.Body, fields: dict[str, Any]) -> None:
    """Write a failed pass's status fields; a receipt only onto the object it was computed from (its
    resourceVersion), so one this pass already wrote is never written twice."""
    version = body.get("metadata", {}).get("resourceVersion")
    receipt = "receipts" in fields
    try:
        await rt.kube.patch_status(
            session.namespace, session.name, fields, resource_version=version if receipt else None
        )
    except ApiError as write_error:
        rest = {key: value for key, value in fields.items() if key in FAILURE_FIELDS}
        if receipt and write_error.status == 409 and rest:  # the next pass sees the Space freed, closes it
            await _write_failure(rt, session, body, rest)
            return
        log.warning("session %s/%s: cannot write status: %s", session.namespace, session.name, write_error)


async def observe_deletion(rt: Runtime, session: Session) -> DeletionObservation:
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


async def finalize(rt: Runtime, body: kopf.Body, patch: kopf.Patch) -> None:
    """The finalizer: the same loop as a live session's, on the deletion branch of the core. It
    stays (a kopf retry after the core's delay) until the core says the session is done."""
    session = replace(session_from_body(body), deleting=True)
    try:
        plan = await drive(rt, body, session)
    except Exception as error:  # every failure ends in a condition, never a silent kopf retry
        reason, message = _failure_reason(error)
        log.error("session %s/%s: %s", session.namespace, session.name, message, exc_info=True)
        plan = lifecycle.decide_failure(session, reason, message, rt.config, _now(), random.random())
        _post(body, plan.events)
    if plan.done:
        return
    patch.status.update(status_patch(plan.status))
    raise kopf.TemporaryError(plan.message, delay=max(MIN_REQUEUE, plan.requeue_after or 0.0))


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


def build_registry(rt: Runtime) -> kopf.OperatorRegistry:
    """Handlers bound to one Runtime, on a registry of their own (no import-time globals)."""
    registry = kopf.OperatorRegistry()
    resource = (api.GROUP, api.VERSION, api.PLURAL)

    @kopf.on.startup(registry=registry)
    async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
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

    @kopf.on.startup(registry=registry)
    async def start_background(settings: kopf.OperatorSettings, **_: Any) -> None:
        rt.tasks.append(asyncio.create_task(rt.monitor.heartbeat()))
        listers = {
            plural: partial(rt.kube.list_sessions, rt.namespaces, plural) for plural in rt.sync.pending()
        }
        rt.tasks.append(asyncio.create_task(sync_checks(rt.sync, listers)))
        rt.tasks.append(
            asyncio.create_task(
                watch_checks(
                    rt.monitor, lambda: rt.kube.list_sessions(rt.namespaces), lambda: stall_after(settings)
                )
            )
        )
        if rt.observer.enabled:
            rt.tasks.append(asyncio.create_task(rt.observer.run()))
        if rt.prober.enabled:
            rt.tasks.append(asyncio.create_task(rt.prober.run()))
        if rt.config.sweep_interval > 0:
            sweeper = Sweeper(rt.hub, rt.kube, rt.config, rt.namespaces)
            rt.tasks.append(asyncio.create_task(sweeper.loop(_now)))

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
        await rt.hub.close()
        await rt.kube.close()
        await rt.pools.close()

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
        if spec_changed(loop, body.get("metadata", {}).get("generation")):
            loop.wakeup.set()

    # backoff: the restart delay should the loop itself crash; it catches every expected failure.
    @kopf.daemon(*resource, registry=registry, backoff=UNEXPECTED_ERROR_BACKOFF, cancellation_timeout=30)
    async def reconcile_session(
        body: kopf.Body, memo: kopf.Memo, stopped: kopf.DaemonStopped, **_: Any
    ) -> None:
        await run_session(rt, body, memo, stopped)

    @kopf.on.delete(*resource, registry=registry, backoff=UNEXPECTED_ERROR_BACKOFF)
    async def finalize_session(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        with rt.monitor.working(body.meta.uid or ""):
            await finalize(rt, body, patch)

    pools.register(registry, rt, UNEXPECTED_ERROR_BACKOFF)
    return registry


#: The watch-event handler (metrics, liveness, wake-ups); kopf logs each of its runs at INFO.
TRACKING_HANDLER = "track-session"


def _quiet_tracking(record: logging.LogRecord) -> bool:
    """One line per watch event says nothing: the tracking handler's successes go to DEBUG."""
    quiet = {f"Handler '{handler}' succeeded." for handler in (TRACKING_HANDLER, *pools.TRACKING_HANDLERS)}
    if record.levelno == logging.INFO and record.getMessage() in quiet:
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger("kopf.objects").isEnabledFor(logging.DEBUG)
    return True


#: glibc's mallopt parameter M_MMAP_THRESHOLD, and the size from which each allocation is its own mmap.
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 128 * 1024


def fixed_mmap_threshold() -> bool:
    """Every allocation of 128 KiB or more gets its own mapping, returned to the system when freed.

    Each watch event and status write of a session whose tenant filled its metadata (up to the API
    server's 256 KB of annotations) parses such an object; glibc's threshold otherwise rises to the
    largest block freed, so those land in the heap, whose free holes the process keeps: 150 such
    sessions held 25 MiB more than 150 plain ones, none of it live objects. Fixing the threshold (as
    MALLOC_MMAP_THRESHOLD_ would) ends that. False where the C library has no mallopt (musl)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


def run_operator(config: OperatorConfig, run: RunSettings) -> None:
    """Run until SIGINT or SIGTERM; with a lease name, only while holding it."""
    fixed_mmap_threshold()
    kopf.configure(verbose=run.verbose, log_format=kopf.LogFormat[run.log_format.upper()])
    logging.getLogger("kopf.objects").addFilter(_quiet_tracking)
    # One line per Hub request is noise at INFO; failures are reported by the operator itself.
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    config = resolve_config(config)
    lease = lease_settings(run, config)
    namespaces = list(run.namespaces)
    liveness_endpoint = run.liveness or None
    elector = LeaderElector(lease) if lease is not None else None
    if config.insecure_trust_approvals:
        log.warning("INSECURE: %s", money.INSECURE_TRUST_WARNING)
    metrics.serve(run.metrics_port)
    hub = HubClient(config)
    kube = KubeClient(recheck_interval=config.approval_recheck_interval, instance=own_identity(run))
    rt = Runtime(
        config=config,
        hub=hub,
        kube=kube,
        prices=PriceCatalog(hub.hardware_prices, config.catalog_ttl),
        observer=FleetObserver(hub.list_owner_spaces, f"{config.space_prefix}-", config.observe_interval),
        prober=EdgeProber(hub.health, config.edge_probe_rate, config.edge_probe_cadence),
        secrets=SecretCache(kube.read_secret, config.secret_cache_ttl),
        namespaces=namespaces,
        create_slots=CreateSlots.for_config(config, hub.gate.spare),
    )
    registry = build_registry(rt)
    stop_flag = asyncio.Event()  # set on SIGINT/SIGTERM by kopf's handlers, or by the Lease wait's before
    operator = kopf.operator(
        registry=registry,
        clusterwide=not namespaces,
        namespaces=namespaces,
        standalone=True,
        identity=KopfIdentity(own_identity(run)),
        liveness_endpoint=liveness_endpoint,
        stop_flag=stop_flag,
    )
    main = (
        operator
        if elector is None
        else run_as_leader(elector, hub.gate, operator, stop_flag, liveness_endpoint)
    )

    def ready() -> tuple[bool, dict[str, Any]]:
        return readiness(elector.standby if elector is not None else None, rt.sync)

    # On uvloop, as kopf's own CLI runs when it is installed: at a thousand sessions it takes less
    # memory and CPU than the default loop (docs/performance.md).
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serving_readiness(run.readiness or None, ready, main))
