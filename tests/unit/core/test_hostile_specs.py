"""What a hostile session editor can write into a spec, in the decision core: durations and counts
past every bound, timestamps at the edges of what can be parsed, a spec that cannot be read at all,
and a pass that fails while paid hardware runs. None of it overflows, stops a session's loop or keeps
paid hardware that nothing allows any more."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from sandbox_operator import api
from sandbox_operator.api import (
    EARLIEST,
    LATEST,
    MAX_DURATION_SECONDS,
    MAX_POOL_REPLICAS,
    RFC3339_PATTERN,
    Phase,
    parse_rfc3339,
    read_spec,
    shifted,
)
from sandbox_operator.api.crd import build_crd, build_pool_crd
from sandbox_operator.config.settings import OperatorConfig
from sandbox_operator.core.conditions import Reason, rfc3339
from sandbox_operator.core.lifecycle import decide, decide_failure
from sandbox_operator.core.model import (
    DeleteSession,
    DeleteSpace,
    DeletionObservation,
    FailureKind,
    HubFailure,
    Observation,
    PauseSpace,
    Plan,
    RequestHardware,
    Session,
)
from sandbox_operator.hub.sandbox_health import last_activity
from tests.support.core import CONFIG, HEALTHY, NOW, RECORDED, SPACE_ID, UID, observed, paid, space

APPROVAL = {"hardware": "a10g-small", "approvedBy": "alice"}
CREATED = NOW - timedelta(hours=1)


def session(spec: dict[str, Any], status: dict[str, Any] | None = None, **fields: Any) -> Session:
    """team-a/demo, created an hour ago, read as the controller reads it (`read_spec`)."""
    parsed, problem = read_spec(spec)
    return Session(
        name="demo",
        namespace="team-a",
        uid=UID,
        generation=2,
        spec=parsed,
        status=api.AgentSessionStatus.model_validate({**RECORDED, **(status or {})}),
        created=CREATED,
        spec_problem=problem,
        **fields,
    )


def condition(plan: Plan, type_: str) -> tuple[str, str, str] | None:
    found = next((c for c in plan.status.conditions if c.type == type_), None)
    return (found.status, found.reason, found.message) if found else None


def on_gpu(spec: dict[str, Any], **status: Any) -> Session:
    """A session whose last pass saw its Space on a10g-small, approved, since NOW - 30 min."""
    started = rfc3339(NOW - timedelta(minutes=30))
    first = session(spec, {"hardware": {"current": "a10g-small", "requested": "a10g-small"}, **status})
    judged = decide(first, observed(space=paid()), CONFIG, NOW - timedelta(minutes=30))
    assert judged.status.paid_period is not None and judged.status.paid_period.start_time == started
    return replace(first, status=judged.status)


# Bounds: one ceiling each, in the schema and in the operator's options ------------------------------


def _schema_field(crd: dict[str, Any], *path: str) -> dict[str, Any]:
    node = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    for name in path:
        node = node["properties"][name]
    return dict(node)


@pytest.mark.parametrize(
    ("crd", "path", "ceiling"),
    [
        (build_crd, ("lifetime", "ttlSeconds"), MAX_DURATION_SECONDS),
        (build_crd, ("idle", "retentionSeconds"), MAX_DURATION_SECONDS),
        (build_crd, ("idle", "pauseAfterSeconds"), MAX_DURATION_SECONDS),
        (build_crd, ("sleepTimeSeconds",), MAX_DURATION_SECONDS),
        (build_pool_crd, ("sleepTimeSeconds",), MAX_DURATION_SECONDS),
        (build_pool_crd, ("replicas",), MAX_POOL_REPLICAS),
        (build_crd, ("approval", "budgetUsd"), api.MAX_APPROVAL_BUDGET_USD),
        (build_crd, ("approval", "maxUsdPerHour"), api.MAX_APPROVAL_USD_PER_HOUR),
    ],
)
def test_every_duration_and_count_has_the_schemas_maximum(
    crd: Any, path: tuple[str, ...], ceiling: float
) -> None:
    assert _schema_field(crd(), *path)["maximum"] == ceiling


@pytest.mark.parametrize(
    ("option", "ceiling"),
    [
        ("lifetime_default", MAX_DURATION_SECONDS),
        ("lifetime_max", MAX_DURATION_SECONDS),
        ("idle_retention", MAX_DURATION_SECONDS),
        ("idle_pause_after", MAX_DURATION_SECONDS),
        ("sleep_time_max", MAX_DURATION_SECONDS),
        ("max_approval_duration", MAX_DURATION_SECONDS),
        ("pool_max_replicas", MAX_POOL_REPLICAS),
        ("max_budget_usd", api.MAX_APPROVAL_BUDGET_USD),
    ],
)
def test_the_operators_options_have_the_same_ceiling(option: str, ceiling: float) -> None:
    OperatorConfig.model_validate({option: ceiling, "lifetime_default": 0, "sleep_time_default": 60})
    with pytest.raises(ValidationError, match=option):
        OperatorConfig.model_validate({option: ceiling + 1})


def test_a_count_past_the_maximum_that_an_older_crd_admitted_is_read_as_the_maximum() -> None:
    spec, problem = read_spec(
        {"lifetime": {"ttlSeconds": 10**12}, "idle": {"retentionSeconds": 10**12}, "sleepTimeSeconds": 10**12}
    )
    assert problem is None
    assert spec.lifetime is not None and spec.lifetime.ttl_seconds == MAX_DURATION_SECONDS
    assert spec.idle is not None and spec.idle.retention_seconds == MAX_DURATION_SECONDS
    assert spec.sleep_time_seconds == MAX_DURATION_SECONDS
    assert api.AgentSessionPoolSpec.model_validate({"replicas": 10**12}).replicas == MAX_POOL_REPLICAS


# Timestamps ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "refused",
    [
        "2030-01-01T00:00:00+24:00",
        "2030-01-01T00:00:00+23:60",
        "0000-01-01T00:00:00Z",
        "2030-01-01T00:00:60Z",
        "2030-13-01T00:00:00Z",
        "2030-01-01t00:00:00z",
        "2030-01-01T00:00:00",
    ],
)
def test_the_timestamp_pattern_refuses_what_no_datetime_holds(refused: str) -> None:
    assert re.fullmatch(RFC3339_PATTERN, refused) is None


@pytest.mark.parametrize(
    ("admitted", "read"),
    [
        ("2030-01-01T00:00:00+05:30", datetime(2029, 12, 31, 18, 30, tzinfo=UTC)),
        ("2030-01-01T00:00:00.123456789Z", datetime(2030, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)),
        ("9999-12-31T23:59:59-23:59", LATEST),
        ("0001-01-01T00:00:00+23:59", EARLIEST),
    ],
)
def test_every_timestamp_the_pattern_admits_is_read(admitted: str, read: datetime) -> None:
    assert re.fullmatch(RFC3339_PATTERN, admitted)
    assert parse_rfc3339(admitted) == read


def test_date_arithmetic_saturates_instead_of_overflowing() -> None:
    assert shifted(NOW, 10**30) == LATEST
    assert shifted(NOW, -(10**30)) == EARLIEST
    assert shifted(LATEST, 1) == LATEST
    assert rfc3339(LATEST) == "9999-12-31T23:59:59Z"


# No overflow, whatever a spec says ----------------------------------------------------------------


@pytest.mark.parametrize("lifetime_max", [0, CONFIG.lifetime_max])
def test_the_longest_lifetime_runs_every_control_without_overflow(lifetime_max: int) -> None:
    config = CONFIG.model_copy(update={"lifetime_max": lifetime_max})
    spec = {"hardware": "a10g-small", "approval": {**APPROVAL, "budgetUsd": 0.02}}
    spec |= {"lifetime": {"ttlSeconds": 10**12}, "idle": {"pauseAfterSeconds": 10**12}}
    start = on_gpu(spec)
    # Its budget is spent: the Space goes back to cpu-basic, with the receipt.
    plan = decide(start, observed(space=paid()), config, NOW)
    assert plan.action == RequestHardware(SPACE_ID, "cpu-basic")
    assert condition(plan, "BudgetExhausted")[:2] == ("True", "BudgetSpent")  # type: ignore[index]
    assert plan.status.expires_at is not None
    moved = decide(replace(start, status=plan.status), observed(space=space()), config, NOW)
    assert [r.ended_by for r in moved.status.receipts or []] == ["BudgetSpent"]


@pytest.mark.parametrize(
    "lifetime", [{"expiresAt": "9999-12-31T23:59:59-23:59"}, {"expiresAt": "0001-01-01T00:00:00+23:59"}]
)
def test_a_lifetime_at_the_edge_of_time_neither_overflows_nor_outlives_the_maximum_age(
    lifetime: dict[str, Any],
) -> None:
    plan = decide(session({"lifetime": lifetime}), observed(), CONFIG, NOW)
    assert plan.status.expires_at is not None
    assert parse_rfc3339(plan.status.expires_at) <= CREATED + timedelta(seconds=CONFIG.lifetime_max)


def test_a_paused_session_with_the_longest_retention_is_paused() -> None:
    spec = {"paused": True, "idle": {"retentionSeconds": 10**12}}
    plan = decide(session(spec), observed(), CONFIG.model_copy(update={"lifetime_max": 0}), NOW)
    assert plan.action == PauseSpace(SPACE_ID)
    assert plan.status.paused_since is not None and plan.status.phase == Phase.PAUSED


@pytest.mark.parametrize("expires", ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59"])
def test_an_approval_expiring_at_the_edge_of_time_neither_overflows_nor_runs_on(expires: str) -> None:
    spec = {"hardware": "a10g-small", "approval": {**APPROVAL, "expiresAt": expires}}
    plan = decide(session(spec), observed(space=paid()), CONFIG, NOW)
    expired = parse_rfc3339(expires) < NOW
    assert condition(plan, "HardwareApproved")[1] == ("ApprovalExpired" if expired else "Approved")  # type: ignore[index]


@pytest.mark.parametrize("when", ["0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59-23:59"])
def test_a_sandbox_reporting_activity_at_the_edge_of_time_does_not_overflow(when: str) -> None:
    activity = last_activity(f'{{"lastActivityTime": "{when}"}}')
    assert activity in (EARLIEST, LATEST)
    config = CONFIG.model_copy(update={"idle_pause_after": 60})
    ready = decide(session({}), observed(), config, NOW - timedelta(minutes=5))
    health = replace(HEALTHY, last_activity=activity)
    decide(session({}, ready.status.model_dump(by_alias=True)), observed(health=health), config, NOW)


# A spec that cannot be read ------------------------------------------------------------------------

UNREADABLE = {"lifetime": {"expiresAt": "2030-01-01T00:00:00+24:00"}}


def test_an_unreadable_spec_names_its_field_and_keeps_what_the_finalizer_needs() -> None:
    spec, problem = read_spec({**UNREADABLE, "owner": "acme", "deletionPolicy": "Orphan"})
    assert problem is not None and problem.startswith("spec.lifetime.expiresAt: ")
    assert "2030-01-01T00:00:00+24:00" in problem
    assert (spec.owner, spec.deletion_policy, spec.lifetime) == ("acme", "Orphan", None)


def test_an_unreadable_spec_stalls_gives_up_paid_hardware_with_its_receipt_and_says_so_once() -> None:
    start = on_gpu({"hardware": "a10g-small", "approval": APPROVAL})
    unreadable = replace(start, spec_problem=read_spec(UNREADABLE)[1], generation=3)
    plan = decide(unreadable, Observation(), CONFIG, NOW)
    assert plan.action == RequestHardware(SPACE_ID, "cpu-basic")
    assert plan.status.observed_generation == 3
    assert condition(plan, "Ready")[:2] == ("False", "SpecInvalid")  # type: ignore[index]
    assert condition(plan, "Stalled")[:2] == ("True", "SpecInvalid")  # type: ignore[index]
    assert "spec.lifetime.expiresAt" in condition(plan, "Stalled")[2]  # type: ignore[index]
    assert condition(plan, "Reconciling")[0] == "False"  # type: ignore[index]
    assert condition(plan, "HardwareApproved")[:2] == ("False", "SpecInvalid")  # type: ignore[index]
    (receipt,) = plan.status.receipts or []
    assert receipt.ended_by == "SpecInvalid" and receipt.estimated_usd == pytest.approx(0.5)
    assert [e.reason for e in plan.events] == ["SpecInvalid", "HardwareReceipt"]
    assert plan.events[0].message.startswith("Ready=False: the spec cannot be read")  # what to do
    assert plan.status.hardware is not None and plan.status.hardware.requested == "cpu-basic"
    # Once requested, the next pass asks for nothing (and says nothing again).
    again = decide(replace(unreadable, status=plan.status), Observation(), CONFIG, NOW)
    assert again.action is None and again.events == []


def test_a_failed_request_for_free_hardware_keeps_the_stretch_open_and_is_retried() -> None:
    start = on_gpu({"hardware": "a10g-small", "approval": APPROVAL})
    unreadable = replace(start, spec_problem=read_spec(UNREADABLE)[1])
    failed = Observation(hub_failure=HubFailure(FailureKind.UNAVAILABLE, "503"))
    plan = decide(unreadable, failed, CONFIG, NOW)
    assert plan.action is None and plan.status.paid_period is not None and not plan.status.receipts
    assert condition(plan, "Ready")[1] == "HubUnavailable"  # type: ignore[index]
    assert condition(plan, "Stalled")[:2] == ("True", "SpecInvalid")  # type: ignore[index]
    assert "spec.lifetime.expiresAt" in condition(plan, "Stalled")[2]  # type: ignore[index]
    assert condition(plan, "Reconciling")[0] == "False"  # type: ignore[index]
    assert plan.requeue_after is not None and plan.status.failures == 1


def test_only_the_maximum_age_deletes_an_unreadable_session() -> None:
    unreadable = session(UNREADABLE)
    assert decide(unreadable, Observation(), CONFIG, NOW).action is None  # not the default lifetime
    old = replace(unreadable, created=NOW - timedelta(seconds=CONFIG.lifetime_max))
    plan = decide(old, Observation(), CONFIG, NOW)
    assert plan.action == DeleteSession(Reason.LIFETIME_EXPIRED)


@pytest.mark.parametrize(("policy", "keeps"), [("Delete", False), ("Orphan", True), (None, False)])
def test_an_unreadable_session_is_deleted_by_what_can_be_read(policy: str | None, keeps: bool) -> None:
    spec = {**UNREADABLE, **({"deletionPolicy": policy} if policy else {})}
    deleting = session(spec, deleting=True)
    plan = decide(deleting, DeletionObservation(marker=UID, marker_cluster="c1"), CONFIG, NOW)
    assert (plan.action == DeleteSpace(SPACE_ID)) is not keeps


def test_a_spec_readable_again_is_no_longer_stalled() -> None:
    stalled = decide(session(UNREADABLE), Observation(), CONFIG, NOW)
    assert condition(stalled, "Reconciling")[0] == "False"  # type: ignore[index]  # both always present
    fixed = session({}, stalled.status.model_dump(by_alias=True))
    plan = decide(fixed, observed(), CONFIG, NOW)
    stalled_now = condition(plan, "Stalled")
    assert stalled_now is not None and stalled_now[0] == "False"
    assert condition(plan, "Ready")[:2] == ("True", "SandboxReady")  # type: ignore[index]


# Money first when a pass fails ---------------------------------------------------------------------


def failure_plan(start: Session, at: datetime = NOW) -> Plan:
    return decide_failure(start, Reason.INTERNAL_ERROR, "unexpected error: boom", CONFIG, at)


def test_a_failed_pass_keeps_paid_hardware_that_is_still_approved() -> None:
    plan = failure_plan(on_gpu({"hardware": "a10g-small", "approval": {**APPROVAL, "budgetUsd": 10}}))
    assert plan.action is None and not plan.status.receipts
    assert condition(plan, "Ready")[:2] == ("False", "InternalError")  # type: ignore[index]


@pytest.mark.parametrize(
    ("change", "ended_by"),
    [
        ({"approval": {**APPROVAL, "expiresAt": rfc3339(NOW - timedelta(minutes=1))}}, "NotJudged"),
        ({"approval": None}, "ApprovalWithdrawn"),
        ({"approval": {**APPROVAL, "reason": "another"}}, "NotJudged"),
        ({"hardware": "cpu-basic"}, "Downgraded"),
        ({"denial": {"hardware": "a10g-small", "deniedBy": "bob", "reason": "no"}}, "Denied"),
    ],
)
def test_a_failed_pass_gives_up_paid_hardware_nothing_allows_any_more(
    change: dict[str, Any], ended_by: str
) -> None:
    start = on_gpu({"hardware": "a10g-small", "approval": APPROVAL})
    spec = {"hardware": "a10g-small", "approval": APPROVAL, **change}
    changed = replace(start, spec=read_spec({k: v for k, v in spec.items() if v is not None})[0])
    plan = failure_plan(changed)
    assert plan.action == RequestHardware(SPACE_ID, "cpu-basic")
    assert [r.ended_by for r in plan.status.receipts or []] == [ended_by]
    assert "HardwareReceipt" in [e.reason for e in plan.events]


def test_a_failed_pass_ends_a_spent_budget() -> None:
    # Approved at NOW - 30 min with nothing spent; $0.50 at $1/h by NOW, over its $0.20.
    plan = failure_plan(on_gpu({"hardware": "a10g-small", "approval": {**APPROVAL, "budgetUsd": 0.2}}))
    assert plan.action == RequestHardware(SPACE_ID, "cpu-basic")
    assert [r.ended_by for r in plan.status.receipts or []] == ["BudgetSpent"]


def test_a_failed_pass_ends_an_approval_at_its_recorded_expiry() -> None:
    config = CONFIG.model_copy(update={"max_approval_duration": 600.0})
    first = session({"hardware": "a10g-small", "approval": APPROVAL})
    judged = decide(first, observed(space=paid()), config, NOW)
    plan = decide_failure(
        replace(first, status=judged.status), Reason.INTERNAL_ERROR, "boom", config, NOW + timedelta(hours=1)
    )
    assert plan.action == RequestHardware(SPACE_ID, "cpu-basic")
    assert [r.ended_by for r in plan.status.receipts or []] == ["ApprovalExpired"]


def test_a_hub_failure_still_gives_up_paid_hardware_without_claiming_it_was_requested() -> None:
    spec = {"hardware": "a10g-small", "approval": {**APPROVAL, "expiresAt": rfc3339(NOW)}}
    start = on_gpu(spec)
    failed = observed(space=None, hub_failure=HubFailure(FailureKind.UNAVAILABLE, "503"))
    plan = decide(start, failed, CONFIG, NOW)
    assert plan.action == RequestHardware(SPACE_ID, "cpu-basic")
    assert condition(plan, "Ready")[1] == "HubUnavailable"  # type: ignore[index]
    assert [r.ended_by for r in plan.status.receipts or []] == ["ApprovalExpired"]
    assert plan.status.hardware is not None and plan.status.hardware.requested == "a10g-small"
    # The next failing pass asks again (no stretch left to close).
    again = decide(replace(start, status=plan.status), failed, CONFIG, NOW)
    assert again.action == RequestHardware(SPACE_ID, "cpu-basic") and len(again.status.receipts or []) == 1
