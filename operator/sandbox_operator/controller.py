"""The I/O shell: kopf handlers that observe, call the decision core, apply, and write status.

Handlers hold no logic of their own. A reconcile pass loops observe -> decide -> apply
until the core asks for nothing more now, then writes status and, if the session is not
converged, asks kopf to come back later (`TemporaryError` with the core's delay). kopf
runs each session as an asyncio task, so a waiting session costs no thread.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from . import api, reconciler
from .config import OperatorConfig
from .hub import HubClient, HubError, SpaceExistsError
from .kube import KEY_SANDBOX_URL, KEY_SPACE_ID, KEY_TOKEN, KubeClient, load_client_config
from .reconciler import (
    Action,
    CreateSpace,
    EventNote,
    FinalizeObservation,
    HubFailure,
    Observation,
    Plan,
    PublishConnection,
    RecordIntent,
    RequestHardware,
    RestartSpace,
    RotateToken,
    Session,
)

FINALIZER = f"{api.GROUP}/finalizer"
#: Observe-decide-apply rounds in one handler call before handing back to kopf.
MAX_STEPS = 8
#: kopf treats a zero delay as "no delay given"; the smallest requeue we ask for.
MIN_REQUEUE = 0.05
UNEXPECTED_ERROR_BACKOFF = 10.0

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """What every handler shares: configuration and the two API clients."""

    config: OperatorConfig
    hub: HubClient
    kube: KubeClient


def session_from_body(body: kopf.Body) -> Session:
    try:
        parsed = api.AgentSession.model_validate({key: body[key] for key in body})
    except ValueError as error:
        raise kopf.PermanentError(f"the session does not parse: {error}") from error
    meta = parsed.metadata
    return Session(
        name=meta["name"],
        namespace=meta["namespace"],
        uid=meta["uid"],
        generation=int(meta.get("generation", 1)),
        spec=parsed.spec,
        status=parsed.status,
    )


def status_patch(status: api.AgentSessionStatus) -> dict[str, Any]:
    """A merge patch for status: fields that are None are sent as null, so they are removed."""
    return status.model_dump(by_alias=True, mode="json")


def _now() -> datetime:
    return datetime.now(UTC)


def new_token() -> str:
    return "sbx_" + secrets.token_urlsafe(32)


def _post(body: kopf.Body, notes: list[EventNote]) -> None:
    for note in notes:
        kopf.event(body, type=note.type, reason=note.reason, message=note.message)


async def observe(rt: Runtime, session: Session) -> Observation:
    """Gather what `decide` needs, with the fewest calls the session's state allows."""
    connection = await rt.kube.read_connection(
        session.namespace, reconciler.connection_secret_name(session), session.uid
    )
    token = (connection or {}).get(KEY_TOKEN) or None
    connection_url = (connection or {}).get(KEY_SANDBOX_URL) or None
    space_id = session.status.space_id
    if space_id is None:
        return Observation(token=token, connection_url=connection_url)
    try:
        # The marker is read only until the Space was first seen: its name holds the session UID.
        space = await rt.hub.space(space_id, with_marker=session.status.url is None)
    except HubError as error:
        return Observation(hub_failure=error.failure, token=token, connection_url=connection_url)
    secrets_problem = None
    if space is None and session.spec.secrets:
        _, secrets_problem = await rt.kube.resolve_secrets(session.namespace, session.spec.secrets)
    health = None
    if (
        space is not None
        and space.stage == "RUNNING"
        and token
        and space.sandbox_url
        and space.current_hardware == reconciler.target_hardware(session.spec, space, rt.config)
    ):
        health = await rt.hub.health(space.sandbox_url, token)
    return Observation(
        space=space,
        token=token,
        connection_url=connection_url,
        health=health,
        secrets_problem=secrets_problem,
    )


async def apply(rt: Runtime, session: Session, action: Action, observed: Observation) -> HubFailure | None:
    """Carry out one action; a Hub failure is returned for the core to report, not raised."""
    owner = {"name": session.name, "uid": session.uid}
    secret_name = reconciler.connection_secret_name(session)
    try:
        match action:
            case RecordIntent(space_id=space_id, connection_secret=name):
                values = {
                    KEY_SPACE_ID: space_id,
                    KEY_TOKEN: observed.token or new_token(),
                    KEY_SANDBOX_URL: "",
                }
                await rt.kube.write_connection(
                    namespace=session.namespace, name=name, owner=owner, values=values
                )
                await rt.kube.patch_status(
                    session.namespace,
                    session.name,
                    {"spaceId": space_id, "connectionSecret": name, "phase": api.Phase.CREATING.value},
                )
            case CreateSpace(space_id=space_id, template=template, private=private):
                values, problem = await rt.kube.resolve_secrets(session.namespace, session.spec.secrets)
                if problem is not None:
                    return None  # observed again next round, and reported as SecretNotFound
                assert observed.token is not None, "CreateSpace is decided only with a token"
                try:
                    await rt.hub.duplicate(
                        template=template,
                        space_id=space_id,
                        private=private,
                        token=observed.token,
                        secrets=values,
                        session_uid=session.uid,
                        session_ref=f"{session.namespace}/{session.name}",
                    )
                except SpaceExistsError:
                    log.info("Space %s already exists; adopting it after checking its marker", space_id)
            case RotateToken(space_id=space_id):
                token = new_token()
                await rt.hub.set_token(space_id, token)
                await rt.kube.write_connection(
                    namespace=session.namespace, name=secret_name, owner=owner, values={KEY_TOKEN: token}
                )
            case PublishConnection(sandbox_url=url):
                await rt.kube.write_connection(
                    namespace=session.namespace, name=secret_name, owner=owner, values={KEY_SANDBOX_URL: url}
                )
            case RequestHardware(space_id=space_id, flavor=flavor):
                await rt.hub.request_hardware(space_id, flavor)
            case RestartSpace(space_id=space_id):
                await rt.hub.restart(space_id)
            case _:
                raise AssertionError(f"unexpected action {action!r}")
    except HubError as error:
        return error.failure
    return None


async def reconcile(rt: Runtime, body: kopf.Body, patch: kopf.Patch) -> None:
    try:
        await _reconcile(rt, body, patch)
    except ApiException as error:
        # Kubernetes API errors (conflicts, throttling, a restarting apiserver) are transient.
        raise kopf.TemporaryError(
            f"Kubernetes API error: {error.status} {error.reason}", delay=2.0
        ) from error


async def _reconcile(rt: Runtime, body: kopf.Body, patch: kopf.Patch) -> None:
    session = session_from_body(body)
    plan: Plan | None = None
    for _ in range(MAX_STEPS):
        observed = await observe(rt, session)
        plan = reconciler.decide(session, observed, rt.config, _now(), random.random())
        if plan.action is not None:
            failure = await apply(rt, session, plan.action, observed)
            if failure is not None:
                plan = reconciler.decide(
                    session, replace(observed, hub_failure=failure), rt.config, _now(), random.random()
                )
        _post(body, plan.events)
        session = replace(session, status=plan.status)
        if plan.action is None or plan.status.failures:
            break
    assert plan is not None
    patch.status.update(status_patch(plan.status))
    if plan.requeue_after is not None:
        ready = next((c for c in plan.status.conditions if c.type == reconciler.READY), None)
        message = f"{ready.reason}: {ready.message}" if ready else "waiting"
        raise kopf.TemporaryError(message, delay=max(MIN_REQUEUE, plan.requeue_after))


async def finalize(rt: Runtime, body: kopf.Body, patch: kopf.Patch) -> None:
    session = session_from_body(body)
    plan: reconciler.FinalizePlan | None = None
    for _ in range(3):
        observed = FinalizeObservation()
        if session.spec.deletion_policy == api.DeletionPolicy.DELETE:
            space_id = reconciler.finalize_space_id(session, rt.config)
            try:
                observed = FinalizeObservation(marker=await rt.hub.marker(space_id))
            except HubError as error:
                observed = FinalizeObservation(hub_failure=error.failure)
        plan = reconciler.decide_finalize(session, observed, rt.config, random.random())
        if plan.action is None:
            break
        try:
            await rt.hub.delete(plan.action.space_id)
        except HubError as error:
            plan = reconciler.decide_finalize(
                session, FinalizeObservation(hub_failure=error.failure), rt.config, random.random()
            )
            break
    assert plan is not None
    kopf.event(body, type="Warning" if not plan.done else "Normal", reason=plan.reason, message=plan.message)
    if plan.done:
        return
    status = session.status.model_copy(deep=True)
    status.phase = api.Phase.DELETING
    status.failures = (status.failures or 0) + 1
    status.conditions = reconciler.set_condition(
        status.conditions, reconciler.READY, "False", plan.reason, plan.message, session.generation, _now()
    )
    patch.status.update(status_patch(status))
    raise kopf.TemporaryError(plan.message, delay=max(MIN_REQUEUE, plan.requeue_after or 0.0))


def build_registry(rt: Runtime) -> kopf.OperatorRegistry:
    """Handlers bound to one Runtime, on a registry of their own (no import-time globals)."""
    registry = kopf.OperatorRegistry()
    resource = (api.GROUP, api.VERSION, api.PLURAL)

    @kopf.on.startup(registry=registry)
    async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.persistence.finalizer = FINALIZER
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=api.GROUP)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=api.GROUP, key="last-handled-configuration"
        )
        settings.scanning.disabled = True
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        settings.networking.request_timeout = 60
        if not rt.config.default_owner:
            owner = await rt.hub.whoami()
            rt.config = rt.config.model_copy(update={"default_owner": owner})
            log.info("default owner is the token's user: %s", owner)

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_via_client(**kwargs)

    @kopf.on.cleanup(registry=registry)
    async def close_clients(**_: Any) -> None:
        await rt.hub.close()
        rt.kube.close()

    # backoff: the retry delay after an unexpected error; expected failures set their own delay.
    @kopf.on.resume(*resource, registry=registry, backoff=UNEXPECTED_ERROR_BACKOFF)
    @kopf.on.create(*resource, registry=registry, backoff=UNEXPECTED_ERROR_BACKOFF)
    @kopf.on.update(*resource, field="spec", registry=registry, backoff=UNEXPECTED_ERROR_BACKOFF)
    async def reconcile_session(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        await reconcile(rt, body, patch)

    @kopf.on.delete(*resource, registry=registry, backoff=UNEXPECTED_ERROR_BACKOFF)
    async def finalize_session(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        await finalize(rt, body, patch)

    return registry


def run_operator(
    config: OperatorConfig,
    *,
    namespaces: list[str],
    liveness_endpoint: str | None = None,
    stop_flag: asyncio.Event | None = None,
    verbose: bool = False,
    log_format: kopf.LogFormat = kopf.LogFormat.FULL,
) -> None:
    """Run until stopped (SIGINT/SIGTERM or the stop flag)."""
    kopf.configure(verbose=verbose, log_format=log_format)
    # One line per Hub request is noise at INFO; failures are reported by the operator itself.
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    load_client_config()
    rt = Runtime(config=config, hub=HubClient(config), kube=KubeClient())
    registry = build_registry(rt)
    asyncio.run(
        kopf.operator(
            registry=registry,
            clusterwide=not namespaces,
            namespaces=namespaces,
            standalone=True,
            liveness_endpoint=liveness_endpoint,
            stop_flag=stop_flag,
        )
    )
