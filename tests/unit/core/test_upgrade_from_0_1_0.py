"""An upgrade from 0.1.0 keeps what users have, decided by the core alone: approvals 0.1.0 acted on
(whose approverGroups it never recorded) and the receipts of their paid stretches, lifetimes that
0.1.0 had not, and ownership markers under its default cluster id. Each status here is what 0.1.0
wrote; the tests also hold what a session editor must not get out of an inherited approval."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest

from sandbox_operator.api import AgentSessionSpec, AgentSessionStatus
from sandbox_operator.config.settings import LEGACY_CLUSTER_ID
from sandbox_operator.core.approvals import INHERITED_NOTE, fingerprint
from sandbox_operator.core.conditions import Reason, rfc3339
from sandbox_operator.core.creation import marker_unread, space_unrequested
from sandbox_operator.core.lifecycle import decide, decide_failure
from sandbox_operator.core.model import (
    DeleteSession,
    DeleteSpace,
    DeletionObservation,
    MigrateMarker,
    Observation,
    Plan,
    RecordReceipt,
    RequestHardware,
    Session,
    SpaceView,
)
from sandbox_operator.hub.spaces import ListedSpace, Ownership
from sandbox_operator.sweeper import Policy, Verdict, plan
from tests.support.core import (
    CONFIG,
    NOW,
    PRICES,
    SANDBOX,
    SPACE_ID,
    SPACE_URL,
    UID,
    new_session,
    observed,
    paid,
    space,
)

APPROVAL = {"hardware": "t4-small", "approvedBy": "erin"}
#: When 0.1.0 acted on the approval: HardwareApproved went True.
APPROVED_AT = NOW - timedelta(hours=2)
#: Its last spend update: $0.60 at $0.40/h, so on t4-small since 1.5 h before, NOW - 1h40m.
SPENT_AT = NOW - timedelta(minutes=10)
STRETCH_START = NOW - timedelta(hours=1, minutes=40)
#: When 0.1.0's chart installed the admission policy and its binding: before anything was approved.
POLICY_SINCE = rfc3339(NOW - timedelta(days=30))


def old_condition(type_: str, status: str, reason: str, since: datetime, generation: int) -> dict[str, Any]:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": "as 0.1.0 said it",
        "lastTransitionTime": rfc3339(since),
        "observedGeneration": generation,
    }


def status_0_1_0(hardware: str = "cpu-basic", generation: int = 2, **fields: Any) -> dict[str, Any]:
    """A converged session's status as 0.1.0 wrote it: no record of approvals, paid stretches,
    lifetimes or markers; its Space seen (url), its HardwareApproved verdict at `generation`."""
    paid_hw = hardware != "cpu-basic"
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "phase": "Starting",
        "spaceId": SPACE_ID,
        "url": SPACE_URL,
        "sandboxUrl": SANDBOX,
        "connectionSecret": "demo-sandbox",
        "stage": "RUNNING",
        "hardware": {"current": hardware, "requested": hardware},
        "conditions": [
            old_condition("Ready", "False", "HealthCheckFailing", APPROVED_AT, generation),
            old_condition(
                "HardwareApproved",
                "True",
                "Approved" if paid_hw else "FreeHardware",
                APPROVED_AT,
                generation,
            ),
        ],
    }
    if paid_hw:
        status["approvedBy"] = "erin"
        status["spend"] = {
            "estimatedUsd": 0.6,
            "usdPerHour": PRICES[hardware],
            "lastObservedTime": rfc3339(SPENT_AT, precise=True),
        }
    return {**status, **fields}


def legacy(
    spec: dict[str, Any] | None = None, generation: int = 2, created: datetime | None = None, **status: Any
) -> Session:
    spec = spec if spec is not None else {"hardware": "t4-small", "approval": APPROVAL}
    hardware = str(AgentSessionSpec.model_validate(spec).hardware)
    built = new_session(spec, status_0_1_0(hardware, generation=generation, **status))
    return replace(built, generation=generation, created=created or NOW - timedelta(hours=3))


def first_pass(on: SpaceView | None = None, **extra: Any) -> Observation:
    """The first observation of the new operator: policy enforced, and the SubjectAccessReview of
    `approvedBy` alone denied (erin approves through her group, which 0.1.0 did not record)."""
    return observed(on, **{"approver_authorized": False, "policy_since": POLICY_SINCE, **extra})


def on_t4(marker_cluster: str | None = None) -> SpaceView:
    return replace(paid("t4-small"), marker_cluster=marker_cluster)


def approved(plan: Plan) -> tuple[str, str, str]:
    found = next(c for c in plan.status.conditions if c.type == "HardwareApproved")
    return found.status, found.reason, found.message


def respecified(session: Session, plan: Plan, **spec: Any) -> Session:
    """The session after a spec change (a new generation) on top of the status `plan` wrote."""
    merged = {**session.spec.model_dump(by_alias=True, exclude_none=True), **spec}
    return replace(
        session,
        spec=AgentSessionSpec.model_validate(merged),
        status=plan.status,
        generation=session.generation + 1,
    )


# Approvals 0.1.0 acted on ----------------------------------------------------------------------


def test_an_approval_0_1_0_acted_on_stays_when_the_approver_approves_through_a_group() -> None:
    plan = decide(legacy(), first_pass(on_t4()), CONFIG, NOW)
    assert approved(plan)[:2] == ("True", "Approved")
    assert INHERITED_NOTE in approved(plan)[2]
    assert plan.action is None, "the Space stays on t4-small"
    record = plan.status.approval
    assert record is not None and record.inherited_hardware == "t4-small"
    assert (record.approved_by, record.seen_time) == ("erin", rfc3339(APPROVED_AT))
    assert plan.status.approved_by == "erin"


def test_an_inherited_approval_confirmed_by_a_review_says_nothing_of_inheritance() -> None:
    plan = decide(legacy(), first_pass(on_t4(), approver_authorized=True), CONFIG, NOW)
    assert approved(plan)[:2] == ("True", "Approved")
    assert INHERITED_NOTE not in approved(plan)[2]


def test_an_inherited_approval_needs_the_policy_enforced_like_any_other() -> None:
    plan = decide(legacy(), first_pass(on_t4(), policy_problem="it is not installed"), CONFIG, NOW)
    assert approved(plan)[:2] == ("False", "ApprovalNotEnforced")
    assert plan.action == RequestHardware(SPACE_ID, "cpu-basic", None)


def test_the_maximum_approval_duration_counts_from_when_0_1_0_acted_on_it() -> None:
    config = CONFIG.model_copy(update={"max_approval_duration": 3600.0})
    plan = decide(legacy(), first_pass(on_t4()), config, NOW)
    assert approved(plan)[:2] == ("False", "ApprovalExpired")
    assert plan.status.approval is not None
    assert plan.status.approval.expires_at == rfc3339(APPROVED_AT + timedelta(hours=1))


@pytest.mark.parametrize(
    "case",
    [
        "spec changed since 0.1.0's verdict",
        "approverGroups named",
        "another approver recorded",
        "0.1.0 did not approve it",
        "this version's record",
        "no admission policy when 0.1.0 acted on it",
        "no admission policy at all",
    ],
)
def test_only_what_0_1_0_approved_at_this_generation_is_inherited(case: str) -> None:
    """Nor what no admission policy checked: 0.1.0 run from its CRD alone acted on any approval a
    session editor wrote, naming anyone."""
    session = legacy()
    seen = first_pass(on_t4())
    if case == "spec changed since 0.1.0's verdict":
        session = replace(session, generation=3)
    elif case == "approverGroups named":
        spec = {"hardware": "t4-small", "approval": {**APPROVAL, "approverGroups": ["gpu-leads"]}}
        session = legacy(spec)
    elif case == "another approver recorded":
        session = legacy(approvedBy="mallory")
    elif case == "0.1.0 did not approve it":
        refused = old_condition("HardwareApproved", "False", "AwaitingApproval", APPROVED_AT, 2)
        session = legacy(conditions=[refused])
    elif case == "this version's record":
        record = {"approvedBy": "erin", "fingerprint": fingerprint(session.spec), "seenTime": rfc3339(NOW)}
        session = legacy(approval=record)
    elif case == "no admission policy when 0.1.0 acted on it":  # installed at the upgrade
        seen = first_pass(on_t4(), policy_since=rfc3339(NOW - timedelta(minutes=5)))
    else:
        seen = first_pass(on_t4(), policy_since=None)
    plan = decide(session, seen, CONFIG, NOW)
    assert approved(plan)[:2] == ("False", "ApproverNotAuthorized")
    assert plan.action == RequestHardware(SPACE_ID, "cpu-basic", None)
    assert plan.status.approval is not None and plan.status.approval.inherited_hardware is None


def test_other_hardware_under_an_inherited_approval_needs_a_fresh_one() -> None:
    """A session editor may change spec.hardware: away from the inherited flavor the inheritance is
    gone for good, and coming back needs an approval this version can check."""
    first = decide(legacy(), first_pass(on_t4()), CONFIG, NOW)
    moved = respecified(legacy(), first, hardware="a10g-small")
    plan = decide(moved, first_pass(on_t4()), CONFIG, NOW + timedelta(minutes=1))
    assert approved(plan)[:2] == ("False", "AwaitingApproval")
    assert plan.action == RequestHardware(SPACE_ID, "cpu-basic", None)
    assert plan.status.approval is not None and plan.status.approval.inherited_hardware is None
    back = respecified(moved, plan, hardware="t4-small")
    plan = decide(back, first_pass(), CONFIG, NOW + timedelta(minutes=2))
    assert approved(plan)[:2] == ("False", "ApproverNotAuthorized")
    assert plan.action is None, "t4-small is not requested again"


def test_a_standing_budget_0_1_0_acted_on_is_inherited_for_its_flavor_only() -> None:
    spec = {"hardware": "t4-small", "approval": {"maxUsdPerHour": 5, "approvedBy": "erin"}}
    first = decide(legacy(spec), first_pass(on_t4()), CONFIG, NOW)
    assert approved(first)[:2] == ("True", "Approved")
    moved = respecified(legacy(spec), first, hardware="a10g-small")
    plan = decide(moved, first_pass(on_t4()), CONFIG, NOW + timedelta(minutes=1))
    assert approved(plan)[:2] == ("False", "ApproverNotAuthorized"), "within the budget, yet not inherited"
    assert plan.action == RequestHardware(SPACE_ID, "cpu-basic", None)


def test_a_changed_approval_is_judged_as_any_new_one() -> None:
    first = decide(legacy(), first_pass(on_t4()), CONFIG, NOW)
    raised = respecified(legacy(), first, approval={**APPROVAL, "budgetUsd": 50})
    refused = decide(raised, first_pass(on_t4()), CONFIG, NOW + timedelta(minutes=1))
    assert approved(refused)[:2] == ("False", "ApproverNotAuthorized")
    confirmed = decide(
        raised, first_pass(on_t4(), approver_authorized=True), CONFIG, NOW + timedelta(minutes=1)
    )
    assert approved(confirmed)[:2] == ("True", "Approved")
    assert INHERITED_NOTE not in approved(confirmed)[2]


# Receipts --------------------------------------------------------------------------------------


def test_the_paid_stretch_0_1_0_left_running_is_recorded_from_its_spend() -> None:
    plan = decide(legacy(), first_pass(on_t4()), CONFIG, NOW)
    period = plan.status.paid_period
    assert period is not None
    assert (period.hardware, period.approved_by) == ("t4-small", "erin")
    assert (period.start_time, period.start_usd) == (rfc3339(STRETCH_START), 0.0)


def test_an_earlier_stretch_in_the_spend_is_not_counted_before_the_approval() -> None:
    """$1.00 at $0.40/h would start 2.5 h back, before 0.1.0 approved t4-small: that spend was an
    earlier stretch, and the receipt counts from the approval."""
    spend = {"estimatedUsd": 1.0, "usdPerHour": 0.4, "lastObservedTime": rfc3339(SPENT_AT, precise=True)}
    period = decide(legacy(spend=spend), first_pass(on_t4()), CONFIG, NOW).status.paid_period
    assert period is not None and period.start_time == rfc3339(APPROVED_AT)
    before = 0.4 * (SPENT_AT - APPROVED_AT).total_seconds() / 3600
    assert period.start_usd == pytest.approx(1.0 - before, abs=1e-5)


def test_a_receipt_after_the_upgrade_names_the_approver_and_the_whole_stretch() -> None:
    session = legacy()
    first = decide(session, first_pass(on_t4()), CONFIG, NOW)
    downgraded = respecified(session, first, hardware="cpu-basic")
    leaving = decide(downgraded, first_pass(on_t4()), CONFIG, NOW + timedelta(hours=1))
    assert leaving.action == RequestHardware(SPACE_ID, "cpu-basic", None)
    done = decide(replace(downgraded, status=leaving.status), first_pass(), CONFIG, NOW + timedelta(hours=1))
    (receipt,) = done.status.receipts or []
    assert (receipt.hardware, receipt.approved_by, receipt.ended_by) == ("t4-small", "erin", "Downgraded")
    assert receipt.start_time == rfc3339(STRETCH_START)
    assert receipt.end_time == rfc3339(NOW + timedelta(hours=1))
    hours = (NOW + timedelta(hours=1) - STRETCH_START).total_seconds() / 3600
    assert receipt.hours == pytest.approx(hours, abs=1e-3)
    assert any("approved by erin" in event.message for event in done.events)


def test_a_session_0_1_0_left_on_paid_hardware_gets_one_receipt_when_deleted() -> None:
    deleting = replace(legacy(), deleting=True)
    gone = DeletionObservation(marker=UID, marker_cluster=LEGACY_CLUSTER_ID)
    plan = decide(deleting, gone, CONFIG, NOW)
    assert plan.action == RecordReceipt()
    (receipt,) = plan.status.receipts or []
    assert (receipt.approved_by, receipt.start_time, receipt.ended_by) == (
        "erin",
        rfc3339(STRETCH_START),
        "SessionDeleted",
    )
    after = decide(replace(deleting, status=plan.status), gone, CONFIG, NOW)
    assert after.action == DeleteSpace(SPACE_ID)
    assert len(after.status.receipts or []) == 1


# Lifetimes -------------------------------------------------------------------------------------


def test_a_default_lifetime_counts_from_the_upgrade_for_a_session_0_1_0_managed() -> None:
    older = legacy({}, created=NOW - timedelta(days=3))  # older than the default lifetime (1 day)
    plan = decide(older, first_pass(), CONFIG, NOW)
    assert not isinstance(plan.action, DeleteSession)
    assert plan.status.lifetime_start_time == rfc3339(NOW)
    assert plan.status.expires_at == rfc3339(NOW + timedelta(seconds=CONFIG.lifetime_default))
    # Recorded once: a later pass (or a restarted operator) keeps counting from the upgrade.
    later = NOW + timedelta(hours=5)
    again = decide(replace(older, status=plan.status), first_pass(), CONFIG, later)
    assert again.status.lifetime_start_time == rfc3339(NOW)
    end = decide(replace(older, status=again.status), first_pass(), CONFIG, NOW + timedelta(days=1))
    assert end.action == DeleteSession(Reason.LIFETIME_EXPIRED)
    expiring = next(c for c in end.status.conditions if c.type == "Expiring")
    assert f"from {rfc3339(NOW)}" in expiring.message


def test_the_maximum_age_counts_from_the_upgrade_too() -> None:
    ageless = CONFIG.model_copy(update={"lifetime_default": 0})
    older = legacy({}, created=NOW - timedelta(days=10))  # past the 7-day maximum age
    plan = decide(older, first_pass(), ageless, NOW)
    assert plan.action is None
    assert plan.status.expires_at == rfc3339(NOW + timedelta(seconds=ageless.lifetime_max))


def test_sessions_created_under_this_version_count_from_their_creation() -> None:
    # As the API server creates it: the CRD defaults status.observedGeneration to 0, which says the
    # session was never reconciled (0.1.0 wrote the generation, 1 or more), so it predates nothing.
    unreconciled = AgentSessionStatus.model_validate({"observedGeneration": 0})
    fresh = replace(new_session(), created=NOW - timedelta(days=2), status=unreconciled)
    plan = decide(fresh, first_pass(space=None, token=None), CONFIG, NOW)
    assert plan.status.lifetime_start_time == rfc3339(NOW - timedelta(days=2))
    assert plan.action == DeleteSession(Reason.LIFETIME_EXPIRED)


def test_a_first_pass_that_fails_still_counts_the_lifetime_from_creation() -> None:
    """Its failure writes observedGeneration without expiresAt, as 0.1.0 did: the next pass must not
    take the session for one older than lifetimes and count from itself."""
    unreconciled = AgentSessionStatus.model_validate({"observedGeneration": 0})
    fresh = replace(new_session(), created=NOW - timedelta(hours=2), status=unreconciled)
    failed = decide_failure(fresh, Reason.INTERNAL_ERROR, "unexpected error", CONFIG, NOW)
    assert failed.status.lifetime_start_time == rfc3339(NOW - timedelta(hours=2))
    later = decide(replace(fresh, status=failed.status), first_pass(), CONFIG, NOW + timedelta(minutes=1))
    assert later.status.lifetime_start_time == rfc3339(NOW - timedelta(hours=2))


def test_a_lifetime_the_spec_sets_counts_from_creation_for_an_older_session_too() -> None:
    older = legacy({"lifetime": {"ttlSeconds": 3600}}, created=NOW - timedelta(hours=3))
    assert decide(older, first_pass(), CONFIG, NOW).action == DeleteSession(Reason.LIFETIME_EXPIRED)


# Ownership markers -----------------------------------------------------------------------------


def marked(cluster: str) -> SpaceView:
    return replace(space(), marker_cluster=cluster)


def test_a_space_0_1_0_marked_is_read_not_duplicated_again() -> None:
    status = legacy({}).status
    assert not space_unrequested(status)
    assert marker_unread(status, CONFIG)


def test_the_marker_of_0_1_0_is_rewritten_with_the_current_cluster_id() -> None:
    older = legacy({})
    plan = decide(older, first_pass(marked(LEGACY_CLUSTER_ID)), CONFIG, NOW)
    assert plan.action == MigrateMarker(SPACE_ID, CONFIG.cluster_id)
    assert plan.status.space_confirmed_time is not None
    assert marker_unread(plan.status, CONFIG), "until it is rewritten, it is read again"
    after = decide(replace(older, status=plan.status), first_pass(marked(CONFIG.cluster_id)), CONFIG, NOW)
    assert after.action is None and after.status.marker_cluster_id == CONFIG.cluster_id
    assert not marker_unread(after.status, CONFIG), "then the owner's listing serves"


def test_only_the_ids_this_installation_used_before_are_rewritten() -> None:
    older = legacy({})
    plan = decide(older, first_pass(marked("another-cluster")), CONFIG, NOW)
    assert plan.action is None
    assert plan.status.marker_cluster_id == "another-cluster"
    assert not marker_unread(plan.status, CONFIG), "a foreign id is not read again every pass"
    told = CONFIG.model_copy(update={"previous_cluster_ids": frozenset({"another-cluster"})})
    assert marker_unread(plan.status, told)
    plan = decide(older, first_pass(marked("another-cluster")), told, NOW)
    assert plan.action == MigrateMarker(SPACE_ID, CONFIG.cluster_id)
    pinned = CONFIG.model_copy(update={"cluster_id": LEGACY_CLUSTER_ID})
    assert decide(older, first_pass(marked(LEGACY_CLUSTER_ID)), pinned, NOW).action is None


def test_a_space_kept_by_policy_under_a_0_1_0_marker_is_freed_and_released_first() -> None:
    keep = replace(legacy({"deletionPolicy": "Orphan"}), deleting=True)
    seen = DeletionObservation(
        marker=UID,
        marker_cluster=LEGACY_CLUSTER_ID,
        current_hardware="t4-small",
        requested_hardware="t4-small",
    )
    plan = decide(keep, seen, CONFIG, NOW)
    assert plan.action == RequestHardware(SPACE_ID, "cpu-basic")
    foreign = replace(seen, marker_cluster="another-cluster")
    assert decide(keep, foreign, CONFIG, NOW).done


def test_the_sweeper_never_takes_a_previous_cluster_id_for_this_clusters() -> None:
    """Every 0.1.0 installation marked with `default`: clusters sharing a Hub owner share it, so an
    orphan marked so may be another cluster's."""
    policy = Policy(
        cluster_id="c1",
        prefix="ags",
        grace=600,
        max_deletes=10,
        dry_run=False,
        namespaces=frozenset(),
        earlier_cluster_ids=CONFIG.earlier_cluster_ids(),
    )
    orphan = ListedSpace(SPACE_ID, NOW - timedelta(days=1))
    (decision,) = plan(
        [orphan], frozenset(), {SPACE_ID: Ownership(UID, LEGACY_CLUSTER_ID, "team-a/gone")}, NOW, policy
    )
    assert decision.verdict is Verdict.OTHER_CLUSTER
    assert "never swept" in decision.message
