"""The finalizer's decision for a session being deleted, as a chain of named steps like a live
session's (`core/steps`): it may go only once the Space is gone, released by policy, or not ours.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from sandbox_operator.api import DeletionPolicy, Phase
from sandbox_operator.config.settings import OperatorConfig
from sandbox_operator.core import receipts
from sandbox_operator.core.conditions import READY, EventNote, Reason, condition_of, rfc3339
from sandbox_operator.core.creation import duplicate_window_end, space_may_be_hidden, space_may_exist
from sandbox_operator.core.draft import Draft, hub_failure_delay, record_failure
from sandbox_operator.core.model import (
    NOT_VISIBLE_KINDS,
    DeleteSpace,
    DeletionObservation,
    FailureKind,
    Plan,
    RecordReceipt,
    ReleaseSpace,
    RequestHardware,
    Session,
    deletion_space_id,
    own_cluster,
)
from sandbox_operator.core.money import HardwareVerdict, free_flavor, is_free
from sandbox_operator.core.progress import conclude


def deletion_plan(
    draft: Draft,
    action: ReleaseSpace | RequestHardware | DeleteSpace | RecordReceipt | None,
    reason: Reason,
    message: str,
    requeue_after: float | None = None,
    *,
    done: bool = False,
) -> Plan:
    """A deleting session's plan: its Ready condition says why the finalizer stays or goes, and
    every decision without an action is also an Event (each try of a stuck deletion is visible)."""
    if not draft.failed:
        draft.ready("False", reason, message)
        draft.clear_failures()
    condition = condition_of(draft.status, READY)
    assert condition is not None
    events = []
    if action is None:
        kind = "Normal" if done else "Warning"
        events.append(EventNote(kind, condition.reason, condition.message))
    conclude(draft.status, draft.session.generation, draft.now)
    return Plan(action, draft.status, requeue_after, events, done=done)


@dataclass
class Deleting:
    """What every deletion step reads."""

    draft: Draft
    observed: DeletionObservation
    config: OperatorConfig
    jitter: float
    space_id: str

    @property
    def orphan(self) -> bool:
        """deletionPolicy Orphan: the Space is kept, not deleted."""
        return self.draft.session.spec.deletion_policy == DeletionPolicy.ORPHAN

    @property
    def session(self) -> Session:
        return self.draft.session


DeletionStep = Callable[[Deleting], Plan | None]


def record_receipt(gone: Deleting) -> Plan | None:
    """What paid hardware cost goes into status before the Space (and the session) go."""
    receipt = receipts.close_for_deletion(gone.draft.status, gone.draft.now)
    if receipt is None:
        return None
    message = f"recording what {gone.space_id} cost"
    plan = deletion_plan(gone.draft, RecordReceipt(), Reason.HARDWARE_RECEIPT, message, 0.0)
    return replace(plan, events=[receipt])


def space_deleted(gone: Deleting) -> Plan | None:
    """The previous step deleted the Space: the finalizer may go."""
    if not gone.observed.deleted:
        return None
    return deletion_plan(
        gone.draft, None, Reason.SPACE_DELETED, f"Space {gone.space_id} is deleted", done=True
    )


def never_created(gone: Deleting) -> Plan | None:
    """The Hub says the Space is not ours to see and none was ever asked for: nothing to delete."""
    failure = gone.observed.hub_failure
    if failure is None or failure.kind is not FailureKind.ACCESS_LOST or space_may_exist(gone.session.status):
        return None
    message = f"no Space {gone.space_id} was ever created"
    return deletion_plan(gone.draft, None, Reason.SPACE_DELETED, message, done=True)


def await_hidden_space(gone: Deleting) -> Plan | None:
    """While a duplicate the operator asked for may still land or be hidden, "not found" is not
    "gone": the finalizer waits."""
    failure, status, now = gone.observed.hub_failure, gone.session.status, gone.draft.now
    if not space_may_be_hidden(status, gone.config, now):
        return None
    unseen = gone.observed.marker is None if failure is None else failure.kind in NOT_VISIBLE_KINDS
    if not unseen:
        return None
    end = duplicate_window_end(status, gone.config)
    message = (
        f"Space {gone.space_id} was just created and the Hub does not show it yet; checking again "
        f"until {rfc3339(end or now)}"
    )
    return deletion_plan(gone.draft, None, Reason.WAITING_FOR_HUB, message, gone.config.poll_interval)


def hub_failure(gone: Deleting) -> Plan | None:
    """The Hub could not be asked: the finalizer stays, and tries again with backoff."""
    failure = gone.observed.hub_failure
    if failure is None:
        return None
    verb = "release" if gone.orphan else "delete"
    delay = record_failure(
        gone.draft,
        failure.kind.reason,
        f"cannot {verb} Space {gone.space_id} yet: {failure.message}",
        gone.config,
        gone.jitter,
        hub_failure_delay(failure, gone.config),
    )
    return deletion_plan(gone.draft, None, failure.kind.reason, "", delay)


def keep_foreign_orphan(gone: Deleting) -> Plan | None:
    """deletionPolicy Orphan and the Space is not ours (or not this cluster's): kept as it is."""
    observed = gone.observed
    if not gone.orphan or (
        observed.marker == gone.session.uid and own_cluster(observed.marker_cluster, gone.config)
    ):
        return None
    message = f"deletionPolicy is Orphan; Space {gone.space_id} is kept"
    return deletion_plan(gone.draft, None, Reason.SPACE_ORPHANED, message, done=True)


def free_orphan_hardware(gone: Deleting) -> Plan | None:
    """A kept Space is first brought back to free hardware: no one is accountable for it afterwards."""
    observed = gone.observed
    held = observed.requested_hardware or observed.current_hardware
    if not gone.orphan or held is None or is_free(held, gone.config):
        return None
    free = free_flavor(observed.current_hardware, gone.config)
    plan = deletion_plan(
        gone.draft,
        RequestHardware(gone.space_id, free),
        Reason.FREEING_HARDWARE,
        f"requesting {free} for Space {gone.space_id} (now {held}) before it is kept "
        "(deletionPolicy Orphan): a kept Space must not hold paid hardware",
        0.0,
    )
    # The kept Space changes under its user's eyes: say so, not only that it is kept.
    return replace(plan, events=[EventNote("Normal", plan.reason, plan.message)])


def release_orphan(gone: Deleting) -> Plan | None:
    """A kept Space loses its marker, so the orphan sweeper does not delete it later."""
    if not gone.orphan:
        return None
    message = f"keeping Space {gone.space_id} (deletionPolicy Orphan)"
    return deletion_plan(gone.draft, ReleaseSpace(gone.space_id), Reason.RELEASING_SPACE, message)


def space_gone(gone: Deleting) -> Plan | None:
    """The Hub shows no Space: the finalizer may go."""
    if gone.observed.marker is not None:
        return None
    created = space_may_exist(gone.session.status)
    message = f"Space {gone.space_id} is deleted" if created else "no Space was ever created"
    return deletion_plan(gone.draft, None, Reason.SPACE_DELETED, message, done=True)


def leave_foreign_space(gone: Deleting) -> Plan | None:
    """A Space without this session's marker is someone else's: left untouched."""
    if gone.observed.marker == gone.session.uid:
        return None
    message = f"Space {gone.space_id} does not carry this session's ownership marker; it is left untouched"
    return deletion_plan(gone.draft, None, Reason.SPACE_NOT_OWNED, message, done=True)


def delete_space(gone: Deleting) -> Plan:
    """Our own Space: delete it."""
    message = f"deleting Space {gone.space_id}"
    return deletion_plan(gone.draft, DeleteSpace(gone.space_id), Reason.DELETING_SPACE, message, 0.0)


#: The finalizer's chain, in order: the first step that decides wins; the last always does.
DELETION_STEPS: list[DeletionStep] = [
    record_receipt,
    space_deleted,
    never_created,
    await_hidden_space,
    hub_failure,
    keep_foreign_orphan,
    free_orphan_hardware,
    release_orphan,
    space_gone,
    leave_foreign_space,
    delete_space,
]


def decide_deletion(
    session: Session,
    observed: DeletionObservation,
    config: OperatorConfig,
    jitter: float = 0.5,
    *,
    now: datetime,
) -> Plan:
    """Whether the finalizer may go: only once the Space is gone, released by policy, or not ours.

    A session whose status lost its spaceId is still checked under the derived name, so a
    status wiped by hand or restored from an old backup cannot leak a Space. A Space kept by
    `deletionPolicy: Orphan` is first brought back to free hardware, then released.
    """
    unjudged = HardwareVerdict(False, Reason.NOT_JUDGED, "no hardware decision is made while deleting")
    draft = Draft(session, now, session.status.model_copy(deep=True), unjudged)
    draft.status.phase = Phase.DELETING
    if draft.status.paid_period is None:  # the Space is not read: its hardware as last recorded
        held = session.status.hardware.current if session.status.hardware else None
        draft.status.paid_period = receipts.inherited_period(session.status, held, config)
    gone = Deleting(draft, observed, config, jitter, deletion_space_id(session, config))
    for step in DELETION_STEPS:
        plan = step(gone)
        if plan is not None:
            return plan
    raise AssertionError("the chain ends in a step that always decides")
