"""A deleting session in the decision core: `decide` takes a deleting session's observation too,
every status field of a deletion is decided by it, and each reason knows its Event severity."""

from __future__ import annotations

from sandbox_operator.api import Phase
from sandbox_operator.core.conditions import Reason, Severity
from sandbox_operator.core.lifecycle import decide, decide_failure
from sandbox_operator.core.model import (
    DeleteSpace,
    DeletionObservation,
    FailureKind,
    HubFailure,
    Session,
)
from tests.support.core import CONFIG, NOW, SPACE_ID, UID, new_session


def deleting(**status: object) -> Session:
    """The session, its Space recorded, once it is being deleted."""
    recorded = {"spaceId": SPACE_ID, "connectionSecret": "demo-sandbox", "phase": "Ready", **status}
    return new_session({}, recorded, generation=2, deleting=True)


def test_deletion_is_decided_by_the_same_entry_and_sets_phase_and_ready() -> None:
    plan = decide(deleting(), DeletionObservation(marker=UID, marker_cluster="c1"), CONFIG, NOW)
    assert plan.action == DeleteSpace(SPACE_ID) and not plan.done
    assert plan.status.phase == Phase.DELETING
    ready = next(c for c in plan.status.conditions if c.type == "Ready")
    assert (ready.status, ready.reason, ready.observed_generation) == ("False", "DeletingSpace", 2)
    assert plan.status.failures is None and plan.events == []  # progress with an action: no Event yet


def test_a_deleted_space_lets_the_finalizer_go_with_a_normal_event() -> None:
    plan = decide(deleting(), DeletionObservation(deleted=True), CONFIG, NOW)
    assert plan.done and plan.action is None
    assert [(e.type, e.reason) for e in plan.events] == [("Normal", "SpaceDeleted")]


def test_a_failed_deletion_counts_failures_and_says_when_it_retries() -> None:
    failure = HubFailure(FailureKind.UNAVAILABLE, "503")
    first = decide(deleting(), DeletionObservation(hub_failure=failure), CONFIG, NOW)
    assert first.failed and first.status.failures == 1 and first.status.next_retry_time is not None
    assert first.status.phase == Phase.DELETING
    assert [(e.type, e.reason) for e in first.events] == [("Warning", "HubUnavailable")]
    again = decide(deleting(failures=1), DeletionObservation(hub_failure=failure), CONFIG, NOW)
    assert again.status.failures == 2
    # Back to progress: the failure count and retry time are cleared by the core, not the shell.
    landed = decide(deleting(failures=2, nextRetryTime="x"), DeletionObservation(deleted=True), CONFIG, NOW)
    assert landed.status.failures is None and landed.status.next_retry_time is None


def test_a_failure_met_outside_the_hub_while_deleting_stays_in_the_deleting_phase() -> None:
    plan = decide_failure(deleting(), Reason.INTERNAL_ERROR, "boom", CONFIG, NOW)
    assert plan.status.phase == Phase.DELETING and plan.failed and not plan.done
    assert [(e.type, e.reason) for e in plan.events] == [("Warning", "InternalError")]


def test_every_hub_failure_is_a_warning_reason() -> None:
    assert {kind.reason.severity for kind in FailureKind} == {Severity.WARNING}
    assert Reason("SandboxReady").severity is Severity.NORMAL
    assert Reason("NoReadToken").severity is Severity.WARNING
