"""A pass that failed in a way no decision foresaw: a condition and an Event (never a crash loop),
and paid hardware the core no longer allows given up, with its receipt."""

from __future__ import annotations

import logging
import random
from datetime import UTC, datetime
from typing import Any

import kopf

from sandbox_operator.core import lifecycle
from sandbox_operator.core.conditions import Reason
from sandbox_operator.core.model import RequestHardware, Session
from sandbox_operator.hub.errors import HubError
from sandbox_operator.k8s.client import SecretValueError, status_patch
from sandbox_operator.k8s.transport import ApiError
from sandbox_operator.sessions.apply import post_events
from sandbox_operator.sessions.observe import SessionRuntime, session_from_body

log = logging.getLogger(__name__)


def failure_reason(error: Exception) -> tuple[Reason, str]:
    """The condition reason and message for a failure no decision foresaw."""
    if isinstance(error, SecretValueError):
        return Reason.SECRET_INVALID, str(error)
    if isinstance(error, ApiError):
        return Reason.INTERNAL_ERROR, f"Kubernetes API error {error.status} {error.reason}"
    return Reason.INTERNAL_ERROR, f"unexpected error: {type(error).__name__}: {error}"


#: Status fields a failed pass writes: what the failure changes (the body may be older than facts
#: this pass already recorded), and, once paid hardware was given up, its receipt and the request.
FAILURE_FIELDS = (
    "observedGeneration",
    "phase",
    "failures",
    "nextRetryTime",
    "conditions",
    "lifetimeStartTime",
)
GIVE_UP_FIELDS = ("hardware", "paidPeriod", "receipts", "spend")


async def report_failure(
    rt: SessionRuntime, body: kopf.Body, error: Exception, *, transient: bool = False
) -> float:
    """Show a failed pass as a condition and an Event (not for a `transient` one: a Kubernetes API
    error is retried quietly), and give up paid hardware the core finds no longer allowed, writing
    its receipt; returns the backoff delay."""
    session = session_from_body(body)
    reason, message = failure_reason(error)
    if not transient:
        log.error("session %s/%s: %s", session.namespace, session.name, message,
                  exc_info=reason == Reason.INTERNAL_ERROR)  # fmt: skip
    plan = lifecycle.decide_failure(session, reason, message, rt.config, datetime.now(UTC), random.random())
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
    post_events(body, events)
    if fields:
        await _write_failure(rt, session, body, fields)
    return plan.requeue_after or rt.config.backoff_base


async def _write_failure(
    rt: SessionRuntime, session: Session, body: kopf.Body, fields: dict[str, Any]
) -> None:
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
