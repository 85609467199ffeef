"""Each named step of the finalizer's chain (core/deletion.py), on its own: a table of inputs and what
the step decides (an action, the Ready reason, whether the finalizer may go) or that it passes."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from sandbox_operator.core import deletion
from sandbox_operator.core.conditions import Reason, rfc3339
from sandbox_operator.core.deletion import DELETION_STEPS, Deleting, decide_deletion
from sandbox_operator.core.draft import Draft
from sandbox_operator.core.model import DeletionObservation, FailureKind, HubFailure, Plan
from sandbox_operator.core.money import HardwareVerdict
from tests.support.core import CONFIG, NOW, RECORDED, SPACE_ID, UID, new_session

PASSES = "passes"
ORPHAN = {"deletionPolicy": "Orphan"}
JUST = rfc3339(NOW - timedelta(seconds=1), precise=True)
LONG_AGO = rfc3339(NOW - timedelta(hours=1), precise=True)
#: Named, but never asked for nor seen (a status this version wrote, so no url either).
NAMED = {"spaceId": SPACE_ID, "connectionSecret": "demo-sandbox"}
SEEN = {**RECORDED, "duplicateRequestedTime": LONG_AGO, "spaceConfirmedTime": LONG_AGO}
UNAVAILABLE = HubFailure(FailureKind.UNAVAILABLE, "503 Service Unavailable")
ACCESS_LOST = HubFailure(FailureKind.ACCESS_LOST, "the token cannot see agents")
NOT_FOUND = HubFailure(FailureKind.NOT_FOUND, "404 Not Found")
OURS = {"marker": UID, "marker_cluster": "c1"}


def deleting(
    spec: dict[str, Any] | None = None, status: dict[str, Any] | None = None, **seen: Any
) -> Deleting:
    """A session being deleted (seen on the Hub by default), and what the Hub reports of its Space."""
    session = new_session(spec, SEEN if status is None else status)
    unjudged = HardwareVerdict(False, Reason.NOT_JUDGED, "no hardware decision is made while deleting")
    draft = Draft(session, NOW, session.status.model_copy(deep=True), unjudged)
    return Deleting(draft, DeletionObservation(**seen), CONFIG, 0.5, SPACE_ID)


def outcome(plan: Plan | None) -> object:
    if plan is None:
        return PASSES
    return (type(plan.action).__name__ if plan.action is not None else None, plan.reason, plan.done)


def test_the_chain_ends_in_deleting_our_own_space() -> None:
    names = [step.__name__ for step in DELETION_STEPS]
    assert names[0] == "record_receipt" and names[-1] == "delete_space"
    plan = decide_deletion(new_session(status=SEEN), DeletionObservation(**OURS), CONFIG, now=NOW)
    assert outcome(plan) == ("DeleteSpace", Reason.DELETING_SPACE, False)


PAID_PERIOD = {"hardware": "a10g-small", "approvedBy": "alice", "startTime": LONG_AGO, "startUsd": 0.0}


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ({**SEEN, "paidPeriod": PAID_PERIOD}, ("RecordReceipt", Reason.HARDWARE_RECEIPT, False)),
        (SEEN, PASSES),
    ],
)
def test_record_receipt(status: dict[str, Any], expected: object) -> None:
    gone = deleting(status=status, **OURS)
    plan = deletion.record_receipt(gone)
    assert outcome(plan) == expected
    if plan is not None:
        assert [event.reason for event in plan.events] == [Reason.HARDWARE_RECEIPT]


@pytest.mark.parametrize(
    ("deleted", "expected"), [(True, (None, Reason.SPACE_DELETED, True)), (False, PASSES)]
)
def test_space_deleted(deleted: bool, expected: object) -> None:
    assert outcome(deletion.space_deleted(deleting(deleted=deleted))) == expected


@pytest.mark.parametrize(
    ("status", "failure", "expected"),
    [
        (NAMED, ACCESS_LOST, (None, Reason.SPACE_DELETED, True)),
        (SEEN, ACCESS_LOST, PASSES),  # not proof that it is gone
        (NAMED, UNAVAILABLE, PASSES),
        (NAMED, None, PASSES),
    ],
)
def test_never_created(status: dict[str, Any], failure: HubFailure | None, expected: object) -> None:
    assert outcome(deletion.never_created(deleting(status=status, hub_failure=failure))) == expected


@pytest.mark.parametrize(
    ("requested", "seen", "expected"),
    [
        (JUST, {}, (None, Reason.WAITING_FOR_HUB, False)),
        (JUST, {"hub_failure": NOT_FOUND}, (None, Reason.WAITING_FOR_HUB, False)),
        (JUST, {"hub_failure": UNAVAILABLE}, PASSES),
        (JUST, OURS, PASSES),
        (LONG_AGO, {}, PASSES),
    ],
)
def test_await_hidden_space(requested: str, seen: dict[str, Any], expected: object) -> None:
    gone = deleting(status={**NAMED, "duplicateRequestedTime": requested}, **seen)
    assert outcome(deletion.await_hidden_space(gone)) == expected


@pytest.mark.parametrize(
    ("failure", "expected"),
    [(UNAVAILABLE, (None, Reason.HUB_UNAVAILABLE, False)), (None, PASSES)],
)
def test_hub_failure(failure: HubFailure | None, expected: object) -> None:
    gone = deleting(hub_failure=failure)
    assert outcome(deletion.hub_failure(gone)) == expected
    assert gone.draft.failed == (failure is not None)


@pytest.mark.parametrize(
    ("spec", "seen", "expected"),
    [
        (ORPHAN, {"marker": "someone-else", "marker_cluster": "c1"}, (None, Reason.SPACE_ORPHANED, True)),
        (ORPHAN, {"marker": UID, "marker_cluster": "another"}, (None, Reason.SPACE_ORPHANED, True)),
        (ORPHAN, OURS, PASSES),
        ({}, {"marker": "someone-else"}, PASSES),
    ],
)
def test_keep_foreign_orphan(spec: dict[str, Any], seen: dict[str, Any], expected: object) -> None:
    assert outcome(deletion.keep_foreign_orphan(deleting(spec, **seen))) == expected


@pytest.mark.parametrize(
    ("spec", "hardware", "expected"),
    [
        (ORPHAN, "a10g-small", ("RequestHardware", Reason.FREEING_HARDWARE, False)),
        (ORPHAN, "cpu-basic", PASSES),
        ({}, "a10g-small", PASSES),  # deleted, not kept: no need to free it first
    ],
)
def test_free_orphan_hardware(spec: dict[str, Any], hardware: str, expected: object) -> None:
    gone = deleting(spec, **OURS, current_hardware=hardware, requested_hardware=hardware)
    plan = deletion.free_orphan_hardware(gone)
    assert outcome(plan) == expected
    if plan is not None:
        assert [event.reason for event in plan.events] == [Reason.FREEING_HARDWARE]


@pytest.mark.parametrize(
    ("spec", "expected"), [(ORPHAN, ("ReleaseSpace", Reason.RELEASING_SPACE, False)), ({}, PASSES)]
)
def test_release_orphan(spec: dict[str, Any], expected: object) -> None:
    assert outcome(deletion.release_orphan(deleting(spec, **OURS))) == expected


@pytest.mark.parametrize(
    ("status", "marker", "expected", "says"),
    [
        (SEEN, None, (None, Reason.SPACE_DELETED, True), f"Space {SPACE_ID} is deleted"),
        (NAMED, None, (None, Reason.SPACE_DELETED, True), "no Space was ever created"),
        (SEEN, UID, PASSES, ""),
    ],
)
def test_space_gone(status: dict[str, Any], marker: str | None, expected: object, says: str) -> None:
    plan = deletion.space_gone(deleting(status=status, marker=marker))
    assert outcome(plan) == expected
    assert plan is None or plan.message == says


@pytest.mark.parametrize(
    ("marker", "expected"),
    [
        ("someone-else", (None, Reason.SPACE_NOT_OWNED, True)),
        ("", (None, Reason.SPACE_NOT_OWNED, True)),
        (UID, PASSES),
    ],
)
def test_leave_foreign_space(marker: str, expected: object) -> None:
    assert outcome(deletion.leave_foreign_space(deleting(marker=marker))) == expected


def test_delete_space_always_decides() -> None:
    assert outcome(deletion.delete_space(deleting(**OURS))) == ("DeleteSpace", Reason.DELETING_SPACE, False)
