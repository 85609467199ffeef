"""Carrying out a session's action: one function per family of actions (the connection Secret,
the create, the Space's settings, the session itself, a deleting session's Space). A Hub failure is
returned for the core to report, never raised; status is written only as the core decided it."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import kopf

from sandbox_operator.core import model
from sandbox_operator.core.conditions import EventNote
from sandbox_operator.core.model import (
    Action,
    CreateSpace,
    DeleteSession,
    DeleteSpace,
    DeletionObservation,
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
)
from sandbox_operator.hub.errors import HubError, SpaceExistsError
from sandbox_operator.k8s.client import (
    KEY_HUB_TOKEN,
    KEY_PAUSED_SINCE,
    KEY_RESUME,
    KEY_SANDBOX_URL,
    KEY_SPACE_ID,
    KEY_TOKEN,
    ConnectionSecretConflict,
    new_token,
    status_patch,
)
from sandbox_operator.sessions.observe import SessionRuntime

log = logging.getLogger(__name__)


#: How often kopf tries again to post a deleting session's Event: not at all. Its namespace may be
#: being deleted too, which refuses new Events (403); kopf would try 8 times more, for a minute.
DELETING_EVENT_BACKOFFS: tuple[float, ...] = ()


def post_events(body: kopf.Body, notes: list[EventNote]) -> None:
    """The core's Events, on the session (kopf reports them from the operator)."""
    backoffs = DELETING_EVENT_BACKOFFS if body.get("metadata", {}).get("deletionTimestamp") else None
    for note in notes:
        kopf.event(body, type=note.type, reason=note.reason, message=note.message, backoffs=backoffs)


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
    rt: SessionRuntime, session: Session, plan: Plan, observed: Observation | DeletionObservation
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
    try:
        match action:
            case RecordIntent():
                return await _record_intent(rt, session, action, observed)
            case CreateSpace():
                return await _create_space(rt, session, plan, action, observed)
            case RotateToken() | PublishConnection() | PublishHubToken() | PublishPause():
                return await _publish(rt, session, action, observed)
            case RequestHardware() | SetSleepTime() | RestartSpace() | MigrateMarker():
                return await _change_space(rt, action, observed)
            case PauseSpace() | DeleteSession():
                return await _change_session(rt, session, plan, action)
            case _:
                raise AssertionError(f"unexpected action {action!r}")
    except HubError as error:
        return Applied(failure=error.failure)
    except ConnectionSecretConflict as error:
        return Applied(known=replace(observed, connection_conflict=str(error)))


def _owner(session: Session) -> dict[str, str]:
    """The connection Secret's owner: the session."""
    return {"name": session.name, "uid": session.uid}


async def _record_intent(
    rt: SessionRuntime, session: Session, action: RecordIntent, observed: Observation
) -> Applied:
    """The Space's name and its token, kept for the connection Secret before the Space is asked for.

    The status naming the Space is written with the create record, before the duplicate
    (CreateSpace): until then a restart records the same intent again, the Space's name
    comes from the UID. The token is kept in this process until the Secret is written;
    a restart before then gives the Space a new one (RotateToken).
    Intent precedes creation, so no Space of ours exists yet; should one exist anyway
    (a status lost by hand), the duplicate answers 409 and it is adopted."""
    token = observed.token or new_token()
    values = {
        KEY_SPACE_ID: action.space_id,
        KEY_TOKEN: token,
        KEY_SANDBOX_URL: "",
        KEY_HUB_TOKEN: action.hub_token,
    }
    await rt.kube.write_connection(
        namespace=session.namespace,
        name=action.connection_secret,
        owner=_owner(session),
        values=values,
        exists=bool(observed.token),
        defer=True,  # written whole by PublishConnection, once the Hub reports the URL
    )
    return Applied(
        known=replace(
            observed, space=None, token=token, connection_url=None, connection_hub_token=action.hub_token
        )
    )


async def _create_space(
    rt: SessionRuntime, session: Session, plan: Plan, action: CreateSpace, observed: Observation
) -> Applied:
    """Duplicate the template, once the status records that a create may be in flight."""
    values, problem = await rt.kube.resolve_secrets(session.namespace, session.spec.secrets)
    if problem is not None:
        return Applied()  # observed again next step, and reported as SecretNotFound
    assert observed.token is not None, "CreateSpace is decided only with a token"
    # The finalizer must know a create may be in flight before it can be: record it
    # first. A session already marked for deletion gets no Space at all.
    written = await rt.kube.patch_status(session.namespace, session.name, status_patch(plan.status))
    if written.get("metadata", {}).get("deletionTimestamp"):
        log.info("session %s/%s is being deleted; not creating its Space",
                 session.namespace, session.name)  # fmt: skip
        return Applied(deleting=True)
    try:
        await rt.hub.duplicate(
            template=action.template,
            space_id=action.space_id,
            private=action.private,
            token=observed.token,
            secrets=values,
            session_uid=session.uid,
            session_ref=f"{session.namespace}/{session.name}",
            send_by=action.send_by,
        )
    except SpaceExistsError:
        log.info("Space %s already exists; adopting it after checking its marker", action.space_id)
        return Applied(sent=True)
    except HubError as error:  # one the gate refused never left: it cannot land
        return Applied(failure=error.failure, sent=error.sent)
    rt.observer.created(action.space_id)
    rt.prober.duplicated(session.uid)
    return Applied(created=True, sent=True)


async def _publish(
    rt: SessionRuntime,
    session: Session,
    action: RotateToken | PublishConnection | PublishHubToken | PublishPause,
    observed: Observation,
) -> Applied:
    """Write what the agent pods read into the connection Secret (a new token goes to the Space first)."""
    exists = observed.token is not None
    match action:
        case RotateToken(space_id=space_id):
            token = new_token()
            await rt.hub.set_token(space_id, token)
            values, known = {KEY_TOKEN: token}, replace(observed, token=token, health=None)
        case PublishConnection(sandbox_url=url):
            values, known = {KEY_SANDBOX_URL: url}, replace(observed, connection_url=url)
        case PublishHubToken(hub_token=hub_token):
            values, known = {KEY_HUB_TOKEN: hub_token}, replace(observed, connection_hub_token=hub_token)
        case PublishPause(paused_since=since, resume=how):
            values, known = (
                {KEY_PAUSED_SINCE: since, KEY_RESUME: how},
                replace(observed, connection_paused_since=since),
            )
            exists = False  # not taken as read: a create is tried first
    await rt.kube.write_connection(
        namespace=session.namespace,
        name=model.connection_secret_name(session),
        owner=_owner(session),
        values=values,
        exists=exists,
    )
    return Applied(known=known)


async def _change_space(
    rt: SessionRuntime,
    action: RequestHardware | SetSleepTime | RestartSpace | MigrateMarker,
    observed: Observation,
) -> Applied:
    """Change the Space's hardware, sleep time, marker, or restart it; what the Hub now holds is known
    without asking where the change is the operator's own."""
    match action:
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
                return Applied(
                    known=replace(observed, space=replace(observed.space, marker_cluster=cluster_id))
                )
    return Applied()


async def _change_session(
    rt: SessionRuntime, session: Session, plan: Plan, action: PauseSpace | DeleteSession
) -> Applied:
    """Pause the session's Space (for idleness: recorded, and the spec says so, before the Hub is
    asked), or delete the session itself."""
    if isinstance(action, DeleteSession):
        # Kopf stops this loop once the deletion is seen: the status says why before it goes.
        await rt.kube.patch_status(session.namespace, session.name, status_patch(plan.status))
        await rt.kube.delete_session(session.namespace, session.name, session.uid)
        return Applied(deleting=True)
    if action.for_idle:  # the pause is recorded before spec.paused says so, and both before the Hub
        await rt.kube.patch_status(session.namespace, session.name, status_patch(plan.status))
        if not await rt.kube.pause_session(session.namespace, session.name, session.generation):
            # Its record goes with it: the status is again what the pass read.
            await rt.kube.patch_status(session.namespace, session.name, status_patch(session.status))
            return Applied(outdated=True)
    await rt.hub.pause(action.space_id)
    return Applied(respecified=action.for_idle)


async def apply_deletion(rt: SessionRuntime, action: Action) -> Applied:
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
