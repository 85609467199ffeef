"""The approver's side in the decision core: denials, what waits (and since when, asked by whom),
approvals that expire (their own expiresAt or the operator's maximum), warnAtUsd, and receipts."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from sandbox_operator.api import MAX_RECEIPTS, AgentSessionStatus
from sandbox_operator.core.approvals import approval_record, fingerprint
from sandbox_operator.core.conditions import EventNote, rfc3339
from sandbox_operator.core.lifecycle import decide
from sandbox_operator.core.model import (
    DeleteSpace,
    DeletionObservation,
    Plan,
    RecordReceipt,
    RequestHardware,
    Session,
)
from sandbox_operator.core.receipts import billed
from tests.support.core import CONFIG, NOW, RECORDED, UID, new_session, observed, paid, space

APPROVAL = {"hardware": "a10g-small", "approvedBy": "alice"}
DENIAL = {
    "hardware": "a10g-small",
    "deniedBy": "alice",
    "reason": "use a t4",
    "deniedAt": "2026-11-26T11:00:00Z",
}


def session(spec: dict[str, Any], **status: Any) -> Session:
    return new_session(spec, {**RECORDED, **status})


def condition(status: AgentSessionStatus, type_: str) -> tuple[str, str, str] | None:
    found = next((c for c in status.conditions if c.type == type_), None)
    return (found.status, found.reason, found.message) if found else None


def reasons(plan: Plan) -> list[str]:
    return [event.reason for event in plan.events]


def then(plan: Plan, previous: Session) -> Session:
    """The session as the next decision sees it: the status this plan wrote."""
    return replace(previous, status=plan.status)


# Denials ---------------------------------------------------------------------------------------


def test_a_denial_of_the_requested_flavor_keeps_free_hardware_and_does_not_wait() -> None:
    plan = decide(session({"hardware": "a10g-small", "denial": DENIAL}), observed(), CONFIG, NOW)
    approved = condition(plan.status, "HardwareApproved")
    assert approved is not None and approved[:2] == ("False", "Denied")
    assert "alice" in approved[2] and "use a t4" in approved[2] and "2026-11-26T11:00:00Z" in approved[2]
    assert plan.action is None and plan.status.pending_approval is None
    assert "ApprovalRequested" not in reasons(plan)
    assert any(e.reason == "Denied" and e.type == "Warning" for e in plan.events)


def test_a_denial_wins_over_an_approval_and_takes_a_running_gpu_back() -> None:
    spec = {"hardware": "a10g-small", "approval": APPROVAL, "denial": DENIAL}
    plan = decide(session(spec), observed(paid()), CONFIG, NOW)
    assert isinstance(plan.action, RequestHardware) and plan.action.flavor == "cpu-basic"
    assert condition(plan.status, "HardwareApproved")[:2] == ("False", "Denied")  # type: ignore[index]


def test_another_flavor_asks_again_with_who_asked_and_since_when() -> None:
    first = session({"hardware": "t4-small", "denial": DENIAL, "requestedBy": "bob"})
    plan = decide(first, observed(), CONFIG, NOW)
    pending = plan.status.pending_approval
    assert pending is not None and (pending.hardware, pending.usd_per_hour) == ("t4-small", 0.4)
    assert (pending.requested_by, pending.requested_time) == ("bob", rfc3339(NOW))
    assert [e for e in plan.events if e.reason == "ApprovalRequested"] == [
        EventNote("Normal", "ApprovalRequested", "t4-small ($0.40/h) requested by bob waits for an approver")
    ]
    # Still waiting a minute later: the same start, no second Event.
    later = decide(then(plan, first), observed(), CONFIG, NOW + timedelta(minutes=1))
    assert later.status.pending_approval == pending
    assert "ApprovalRequested" not in reasons(later)


def test_a_request_without_requested_by_waits_without_naming_anyone() -> None:
    plan = decide(session({"hardware": "t4-small"}), observed(), CONFIG, NOW)
    assert [e.message for e in plan.events if e.reason == "ApprovalRequested"] == [
        "t4-small ($0.40/h) waits for an approver"
    ]


@pytest.mark.parametrize(
    ("trust", "why"),
    [
        ({"policy_problem": "the policy is not installed", "approver_authorized": None}, "policy"),
        ({"denier_authorized": False}, "revoked"),
    ],
)
def test_a_denial_the_api_server_did_not_vouch_for_is_not_honoured(trust: dict[str, Any], why: str) -> None:
    plan = decide(session({"hardware": "a10g-small", "denial": DENIAL}), observed(**trust), CONFIG, NOW)
    assert condition(plan.status, "HardwareApproved")[1] != "Denied", why  # type: ignore[index]
    assert plan.status.pending_approval is not None


def test_a_denial_is_honoured_while_its_review_is_unanswered() -> None:
    """A denial never spends money: only a definite no from the API server sets it aside."""
    plan = decide(session({"hardware": "a10g-small", "denial": DENIAL}), observed(), CONFIG, NOW)
    assert condition(plan.status, "HardwareApproved")[1] == "Denied"  # type: ignore[index]


# Expiry ----------------------------------------------------------------------------------------


def expiring(minutes: float) -> dict[str, Any]:
    return {
        "hardware": "a10g-small",
        "approval": {**APPROVAL, "expiresAt": rfc3339(NOW + timedelta(minutes=minutes))},
    }


def test_an_approval_runs_until_its_expiry_and_wakes_the_session_for_the_notice() -> None:
    config = CONFIG.model_copy(update={"approval_expiry_notice": 60.0})
    plan = decide(session(expiring(10)), observed(paid()), config, NOW)
    assert condition(plan.status, "HardwareApproved")[:2] == ("True", "Approved")  # type: ignore[index]
    assert "until" in condition(plan.status, "HardwareApproved")[2]  # type: ignore[index]
    assert plan.requeue_after is not None and plan.requeue_after <= 9 * 60
    assert "ApprovalExpiring" not in reasons(plan)


def test_the_expiry_is_announced_once_then_the_space_goes_back_to_free_hardware() -> None:
    config = CONFIG.model_copy(update={"approval_expiry_notice": 60.0})
    start = session(expiring(2))
    first = decide(start, observed(paid()), config, NOW)
    notice = decide(then(first, start), observed(paid()), config, NOW + timedelta(seconds=61))
    assert [e.type for e in notice.events if e.reason == "ApprovalExpiring"] == ["Warning"]
    assert notice.status.approval is not None and notice.status.approval.notice_time is not None
    again = decide(then(notice, start), observed(paid()), config, NOW + timedelta(seconds=62))
    assert "ApprovalExpiring" not in reasons(again)
    assert again.requeue_after is not None and again.requeue_after <= 58

    expired = decide(then(again, start), observed(paid()), config, NOW + timedelta(minutes=2))
    assert isinstance(expired.action, RequestHardware) and expired.action.flavor == "cpu-basic"
    assert condition(expired.status, "HardwareApproved")[:2] == ("False", "ApprovalExpired")  # type: ignore[index]
    assert expired.status.pending_approval is not None  # waiting again: `approvals` lists it
    assert "ApprovalRequested" in reasons(expired)


def test_the_operators_maximum_duration_ends_an_approval_without_expiry() -> None:
    config = CONFIG.model_copy(update={"max_approval_duration": 3600.0})
    spec = {"hardware": "a10g-small", "approval": APPROVAL}
    plan = decide(session(spec), observed(paid()), config, NOW)
    assert plan.status.approval is not None
    assert plan.status.approval.expires_at == rfc3339(NOW + timedelta(hours=1))
    expired = decide(then(plan, session(spec)), observed(paid()), config, NOW + timedelta(hours=1))
    assert condition(expired.status, "HardwareApproved")[1] == "ApprovalExpired"  # type: ignore[index]


def test_the_expiry_clock_restarts_only_with_a_new_approval() -> None:
    config = CONFIG.model_copy(update={"max_approval_duration": 3600.0})
    spec = session({"hardware": "a10g-small", "approval": APPROVAL}).spec
    first = approval_record(spec, None, config, NOW)
    assert first is not None
    # Toggling spec.hardware (an editor may) keeps the approval, so the clock runs on.
    toggled = spec.model_copy(update={"hardware": "cpu-basic"})
    assert approval_record(toggled, first, config, NOW + timedelta(minutes=30)) == first
    renewed = session({"hardware": "a10g-small", "approval": {**APPROVAL, "reason": "again"}}).spec
    second = approval_record(renewed, first, config, NOW + timedelta(minutes=30))
    assert second is not None and second.seen_time == rfc3339(NOW + timedelta(minutes=30))
    assert fingerprint(renewed) != fingerprint(spec)


def test_a_sooner_expires_at_wins_over_the_maximum() -> None:
    config = CONFIG.model_copy(update={"max_approval_duration": 3600.0})
    record = approval_record(session(expiring(5)).spec, None, config, NOW)
    assert record is not None and record.expires_at == rfc3339(NOW + timedelta(minutes=5))


# warnAtUsd -------------------------------------------------------------------------------------


def test_warn_at_usd_raises_a_warning_before_the_budget_is_spent() -> None:
    spec = {"hardware": "a10g-small", "approval": {**APPROVAL, "budgetUsd": 10, "warnAtUsd": 8}}
    below = decide(session(spec, spend={"estimatedUsd": 5}), observed(paid()), CONFIG, NOW)
    assert condition(below.status, "BudgetWarning")[:2] == ("False", "BelowWarning")  # type: ignore[index]
    above = decide(session(spec, spend={"estimatedUsd": 8.5}), observed(paid()), CONFIG, NOW)
    assert condition(above.status, "BudgetWarning")[:2] == ("True", "BudgetNearlySpent")  # type: ignore[index]
    assert condition(above.status, "BudgetExhausted")[0] == "False"  # type: ignore[index]
    assert any(e.reason == "BudgetNearlySpent" and e.type == "Warning" for e in above.events)
    assert isinstance(above.action, type(None))  # still on the GPU: a warning, not a limit
    # Cents apart, small amounts read apart: not "$0.01 reached the warning at $0.01 of the $0.01 budget".
    small = {**spec, "approval": {**APPROVAL, "budgetUsd": 0.01, "warnAtUsd": 0.005}}
    near = decide(session(small, spend={"estimatedUsd": 0.0061}), observed(paid()), CONFIG, NOW)
    message = next(c.message for c in near.status.conditions if c.type == "BudgetWarning")
    assert "$0.0061 reached the warning at $0.005" in message and "$0.01" in message


def test_warn_at_usd_must_be_below_the_budget() -> None:
    from sandbox_operator.api.crd import build_crd

    rules = str(build_crd())
    assert "self.warnAtUsd < self.budgetUsd" in rules


# Receipts --------------------------------------------------------------------------------------


def test_a_paid_stretch_ends_in_a_receipt_with_its_approver_hours_and_cost() -> None:
    spec = {"hardware": "a10g-small", "approval": APPROVAL}
    start = session(spec)
    on_gpu = decide(start, observed(paid()), CONFIG, NOW)
    period = on_gpu.status.paid_period
    assert period is not None and (period.hardware, period.approved_by) == ("a10g-small", "alice")

    # Half an hour later the user asks for cpu-basic, and the Hub shows it.
    later = NOW + timedelta(minutes=30)
    back = replace(then(on_gpu, start), spec=start.spec.model_copy(update={"hardware": "cpu-basic"}))
    plan = decide(back, observed(space()), CONFIG, later)
    (receipt,) = plan.status.receipts or []
    assert (receipt.hardware, receipt.approved_by, receipt.ended_by) == ("a10g-small", "alice", "Downgraded")
    assert receipt.estimated_usd == pytest.approx(0.5) and receipt.hours == pytest.approx(0.5)
    assert (receipt.start_time, receipt.end_time) == (rfc3339(NOW), rfc3339(later))
    assert plan.status.paid_period is None
    (note,) = [e for e in plan.events if e.reason == "HardwareReceipt"]
    assert "alice" in note.message and "30.0 min billed" in note.message and "$0.50" in note.message


@pytest.mark.parametrize(("hours", "shown"), [(35 / 3600, "35 s"), (0.5, "30.0 min"), (2.25, "2.25 h")])
def test_a_receipt_says_how_long_was_billed_in_a_unit_that_shows_it(hours: float, shown: str) -> None:
    assert billed(hours) == shown


def test_an_expired_approval_says_so_in_its_receipt() -> None:
    start = session(expiring(1))
    on_gpu = decide(start, observed(paid()), CONFIG, NOW)
    plan = decide(then(on_gpu, start), observed(space()), CONFIG, NOW + timedelta(minutes=2))
    assert [r.ended_by for r in plan.status.receipts or []] == ["ApprovalExpired"]


def test_a_pause_says_so_in_its_receipt() -> None:
    spec = {"hardware": "a10g-small", "approval": APPROVAL}
    start = session(spec)
    on_gpu = decide(start, observed(paid()), CONFIG, NOW)
    paused = replace(then(on_gpu, start), spec=start.spec.model_copy(update={"paused": True}))
    plan = decide(paused, observed(space("PAUSED", None)), CONFIG, NOW + timedelta(minutes=2))
    assert [r.ended_by for r in plan.status.receipts or []] == ["Paused"]


def test_receipts_are_bounded() -> None:
    old = [
        {"hardware": "t4-small", "startTime": rfc3339(NOW), "endTime": rfc3339(NOW), "hours": 1,
         "estimatedUsd": 0.4, "endedBy": "Downgraded"}
        for _ in range(MAX_RECEIPTS)
    ]  # fmt: skip
    period = {"hardware": "a10g-small", "approvedBy": "alice", "startTime": rfc3339(NOW), "startUsd": 0}
    start = session({"hardware": "cpu-basic"}, receipts=old, paidPeriod=period, spend={"estimatedUsd": 1})
    plan = decide(start, observed(space()), CONFIG, NOW)
    receipts = plan.status.receipts or []
    assert len(receipts) == MAX_RECEIPTS and receipts[-1].hardware == "a10g-small"


def test_deletion_records_the_receipt_in_status_before_the_space_goes() -> None:
    period = {"hardware": "a10g-small", "approvedBy": "alice", "startTime": rfc3339(NOW), "startUsd": 0.0}
    spend = {"estimatedUsd": 0.25, "usdPerHour": 1.0, "lastObservedTime": rfc3339(NOW, precise=True)}
    deleting = replace(session({"hardware": "a10g-small"}, paidPeriod=period, spend=spend), deleting=True)
    gone_at = NOW + timedelta(minutes=15)
    plan = decide(deleting, DeletionObservation(marker=UID, marker_cluster="c1"), CONFIG, gone_at)
    assert isinstance(plan.action, RecordReceipt)
    (receipt,) = plan.status.receipts or []
    assert receipt.ended_by == "SessionDeleted" and receipt.estimated_usd == pytest.approx(0.5)
    assert [e.reason for e in plan.events] == ["HardwareReceipt"]
    following = decide(
        then(plan, deleting), DeletionObservation(marker=UID, marker_cluster="c1"), CONFIG, gone_at
    )
    assert isinstance(following.action, DeleteSpace)


def test_pending_approvals_gauge_counts_waiting_sessions_per_namespace() -> None:
    from sandbox_operator.observability import metrics
    from sandbox_operator.observability.metrics import SessionTally, pending_approval_since

    tracker = SessionTally(metrics.PENDING_APPROVALS, pending_approval_since)

    def body(uid: str, waiting: bool) -> dict[str, Any]:
        status = {"pendingApproval": {"hardware": "t4-small"}} if waiting else {}
        return {"metadata": {"uid": uid, "namespace": "gauge-ns"}, "status": status}

    tracker.on_event("ADDED", body("u1", True))
    tracker.on_event("ADDED", body("u2", True))
    assert metrics.PENDING_APPROVALS.labels("gauge-ns")._value.get() == 2
    tracker.on_event("MODIFIED", body("u1", False))
    tracker.on_event("DELETED", body("u2", True))
    assert metrics.PENDING_APPROVALS.labels("gauge-ns")._value.get() == 0


def test_an_operator_config_without_limits_keeps_approvals_open_ended() -> None:
    record = approval_record(
        session({"hardware": "a10g-small", "approval": APPROVAL}).spec, None, CONFIG, NOW
    )
    assert record is not None and record.expires_at is None


# Budgets on time -------------------------------------------------------------------------------


def budgeted(spent_usd: float) -> Session:
    spend = {"estimatedUsd": spent_usd, "usdPerHour": 1.0, "lastObservedTime": rfc3339(NOW, precise=True)}
    spec = {"hardware": "a10g-small", "approval": {**APPROVAL, "budgetUsd": 0.02}}
    return session(spec, spend=spend)


def test_the_budget_is_a_deadline_no_listing_cadence_may_stretch() -> None:
    """$0.005 left at $1/h is 18 s: the session looks again then, whatever listings of its Space show."""
    plan = decide(budgeted(0.015), observed(paid()), CONFIG, NOW)
    assert plan.action is None
    assert plan.deadline is not None and plan.deadline == pytest.approx(18.0, abs=0.01)
    assert plan.requeue_after == plan.deadline
    spent = decide(budgeted(0.015), observed(paid()), CONFIG, NOW + timedelta(seconds=18))
    assert isinstance(spent.action, RequestHardware) and spent.action.flavor == "cpu-basic"


@pytest.mark.parametrize(
    ("current", "requested"),
    [("cpu-basic", "a10g-small"), ("a10g-small", "cpu-basic"), ("t4-small", "a10g-small")],
)
def test_a_switch_onto_or_off_paid_hardware_is_looked_at_on_the_poll_cadence(
    current: str, requested: str
) -> None:
    """The Hub starts or stops billing when the switch completes: the session looks itself, not at the
    next listing, so spend starts (and a receipt ends) when the bill does."""
    spec = {"hardware": requested, "approval": {**APPROVAL, "hardware": requested}}
    switching = space("RUNNING_APP_STARTING", current, requested)
    plan = decide(session(spec), observed(switching), CONFIG, NOW)
    assert plan.deadline is not None and plan.deadline <= plan.requeue_after <= CONFIG.poll_interval  # type: ignore[operator]


def test_a_free_space_that_is_not_switching_has_no_deadline() -> None:
    plan = decide(session({"hardware": "cpu-basic"}), observed(space("RUNNING_APP_STARTING")), CONFIG, NOW)
    assert plan.deadline is None
