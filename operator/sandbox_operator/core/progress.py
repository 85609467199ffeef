"""Reconciling and Stalled, the conditions kstatus (Flux, kapply, Config Sync), Argo CD's health script
and `kubectl wait` read: derived in one place from a decided status, at the end of every decision
(a live session, a failure, a deletion, a warm claim, a pool), with `status.observedGeneration`.

- Stalled=True: the spec cannot be reached until someone acts: edits the spec (a template, owner or
  visibility outside the allow-lists; a denied or over-limit approval; a spent budget), or fixes
  what the message names (the approval policy, an approver's role, a Secret, a Space or template on
  the Hub).
- Reconciling=True otherwise, while the operator works toward the spec: creating, building,
  starting, changing hardware, pausing, resuming, deleting, retrying a failure that heals (every
  Hub failure but a missing template: the Hub answers again, the operator's token is fixed for all
  sessions at once), and while a requested paid flavor waits for an approver (at first, or again
  after an approval expired).
- Both False once the object is where its spec puts it: Ready (running and healthy, asleep, or
  paused). Both are always present, so `kubectl wait --for=condition=Stalled=false` works.

Each carries the reason and message of the condition it is derived from; when False, those of the
condition that governs the object instead (Stalled's or Ready's).
"""

from __future__ import annotations

from datetime import datetime

from sandbox_operator.api import AgentSessionPoolStatus, AgentSessionStatus, Condition, Phase
from sandbox_operator.core.conditions import (
    BUDGET_EXHAUSTED,
    HARDWARE_APPROVED,
    READY,
    RECONCILING,
    STALLED,
    Reason,
    set_condition,
)

#: Ready reasons that do not heal by retrying: the spec or something a person owns must change.
STALLED_READY_REASONS = frozenset(
    {
        Reason.TEMPLATE_NOT_ALLOWED,
        Reason.OWNER_NOT_ALLOWED,
        Reason.PUBLIC_SPACE_NOT_ALLOWED,
        Reason.SECRETS_NOT_ENFORCED,
        Reason.SPACE_NOT_OWNED,
        Reason.CONNECTION_SECRET_CONFLICT,
        Reason.SECRET_INVALID,
        Reason.TEMPLATE_NOT_FOUND,
        Reason.SPEC_INVALID,
        Reason.FINALIZER_MISSING,
    }
)
#: HardwareApproved reasons that say something went wrong with the paid flavor's approval: it is not
#: requested until an approver (or the cluster's admin, for the policy and the approver's role) acts.
STALLED_APPROVAL_REASONS = frozenset(
    {
        Reason.DENIED,
        Reason.APPROVAL_EXCEEDS_LIMIT,
        Reason.APPROVAL_NOT_ENFORCED,
        Reason.APPROVER_NOT_AUTHORIZED,
        Reason.SPEC_INVALID,
    }
)
#: HardwareApproved reasons of the usual course: the requested paid flavor waits for an approver, the
#: first time or again once an approval expired (`approvals` lists it, an ApprovalRequested Event).
WAITING_APPROVAL_REASONS = frozenset({Reason.AWAITING_APPROVAL, Reason.APPROVAL_EXPIRED})


def _condition(conditions: list[Condition], type_: str, status: str | None = None) -> Condition | None:
    return next((c for c in conditions if c.type == type_ and status in (None, c.status)), None)


def conclude(status: AgentSessionStatus, generation: int, now: datetime) -> None:
    """Bring a session's observedGeneration, Ready (if no step set it yet), Reconciling and Stalled
    up to date with the rest of its decided status."""
    ready = _ready(status, generation, now)
    deleting = status.phase == Phase.DELETING
    refused = _condition(status.conditions, HARDWARE_APPROVED, "False")
    # The finalizer keeps trying: nothing stalls a deletion.
    stalled = None if deleting else _stalled(status, ready)
    working = None
    if stalled is None and (ready.status != "True" or deleting):
        working = ready
    elif stalled is None and refused is not None and refused.reason in WAITING_APPROVAL_REASONS:
        # The Space runs, on free hardware: the spec's flavor is not there until an approver acts.
        # A paused one is where its spec puts it: the flavor is requested once it is resumed.
        working = None if status.phase == Phase.PAUSED else refused
    _derive(status, ready, working, stalled, generation, now)


def _stalled(status: AgentSessionStatus, ready: Condition) -> Condition | None:
    if ready.status != "True" and ready.reason in STALLED_READY_REASONS:
        return ready
    approval = _condition(status.conditions, HARDWARE_APPROVED)
    if approval is None or approval.reason == Reason.FREE_HARDWARE:
        return None  # no paid flavor asked for: neither an approver nor the budget holds the spec back
    if approval.status == "False" and approval.reason in STALLED_APPROVAL_REASONS:
        return approval
    return _condition(status.conditions, BUDGET_EXHAUSTED, "True")


def conclude_pool(status: AgentSessionPoolStatus, generation: int, now: datetime, *, deleting: bool) -> None:
    """The same for a pool: stalled by a refusal that needs someone, else working until Ready."""
    ready = _ready(status, generation, now)
    stalled = ready if ready.reason in STALLED_READY_REASONS and not deleting else None
    working = ready if ready.status != "True" and stalled is None else None
    _derive(status, ready, working, stalled, generation, now)


def _ready(status: AgentSessionStatus | AgentSessionPoolStatus, generation: int, now: datetime) -> Condition:
    """The Ready condition, set to Unknown if no step of the decision reported on it yet."""
    ready = _condition(status.conditions, READY)
    if ready is not None:
        return ready
    message = "the operator has not reported on it yet"
    status.conditions = set_condition(
        status.conditions, READY, "Unknown", Reason.PENDING, message, generation, now
    )
    found = _condition(status.conditions, READY)
    assert found is not None
    return found


def _derive(
    status: AgentSessionStatus | AgentSessionPoolStatus,
    ready: Condition,
    working: Condition | None,
    stalled: Condition | None,
    generation: int,
    now: datetime,
) -> None:
    status.observed_generation = generation
    governing = stalled or ready
    for type_, cause, otherwise in ((RECONCILING, working, governing), (STALLED, stalled, working or ready)):
        source = cause or otherwise
        state = "True" if cause is not None else "False"
        status.conditions = set_condition(
            status.conditions, type_, state, source.reason, source.message, generation, now
        )
