"""A session's life in the decision core (core/lifecycle.py): creation, readiness, failures and backoff,
hardware, deletion, approvals and spend, driven with plain values: no server, no clock, no randomness."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from sandbox_operator.api import Phase
from sandbox_operator.core.deletion import decide_deletion
from sandbox_operator.core.draft import backoff_delay
from sandbox_operator.core.lifecycle import decide
from sandbox_operator.core.model import (
    CreateSpace,
    DeletionObservation,
    FailureKind,
    HealthResult,
    HubFailure,
    Observation,
    PublishConnection,
    RecordIntent,
    RequestHardware,
    RestartSpace,
    RotateToken,
)
from tests.support.core import (
    CONFIG,
    HEALTHY,
    NOW,
    RECORDED,
    SANDBOX,
    SPACE_ID,
    TRUSTED,
    UID,
    observed,
    paid,
    ready,
    space,
)
from tests.support.core import (
    new_session as session,
)


def test_new_session_records_intent_before_any_hub_call() -> None:
    plan = decide(session(), Observation(), CONFIG, NOW)
    assert plan.action == RecordIntent(SPACE_ID, "demo-sandbox")
    assert ready(plan.status) == ("False", "Provisioning")
    assert plan.status.phase == Phase.CREATING


def test_space_name_is_deterministic_from_uid_and_owner() -> None:
    plan = decide(session({"owner": "acme"}), Observation(), CONFIG, NOW)
    assert isinstance(plan.action, RecordIntent)
    assert plan.action.space_id == f"acme/ags-{UID}"


def test_recorded_intent_without_space_creates_it_from_template() -> None:
    plan = decide(session(status={"spaceId": SPACE_ID}), Observation(token="t"), CONFIG, NOW)
    send_by = NOW + timedelta(seconds=CONFIG.duplicate_send_deadline)
    requested = "2026-11-26T12:00:00.000000Z"
    assert plan.action == CreateSpace(SPACE_ID, "templates/agent-sandbox", True, requested, send_by)
    assert plan.status.duplicate_requested_time == requested


def test_lost_connection_secret_before_creation_records_intent_again() -> None:
    plan = decide(session(status={"spaceId": SPACE_ID}), Observation(token=None), CONFIG, NOW)
    assert isinstance(plan.action, RecordIntent)


def test_missing_secret_reference_blocks_creation_with_clear_reason() -> None:
    observed = Observation(token="t", secrets_problem="spec.secrets[X]: Secret team-a/s does not exist")
    plan = decide(session(status={"spaceId": SPACE_ID}), observed, CONFIG, NOW)
    assert plan.action is None
    assert ready(plan.status) == ("False", "SecretNotFound")
    assert plan.requeue_after is not None and plan.status.failures == 1


def test_building_space_waits_without_action() -> None:
    observed = Observation(space=space("BUILDING", None, "cpu-basic"), token="t", connection_url=SANDBOX)
    plan = decide(session(status=RECORDED), observed, CONFIG, NOW)
    assert plan.action is None
    assert plan.requeue_after == CONFIG.poll_interval
    assert ready(plan.status) == ("False", "Building")
    assert plan.status.stage == "BUILDING"


def test_running_space_publishes_sandbox_url_then_needs_health() -> None:
    observed = Observation(space=space(), token="t")
    assert decide(session(status=RECORDED), observed, CONFIG, NOW).action == PublishConnection(SANDBOX)
    unhealthy = replace(observed, connection_url=SANDBOX, health=HealthResult(False, "answered 401"))
    plan = decide(session(status=RECORDED), unhealthy, CONFIG, NOW)
    assert ready(plan.status) == ("False", "HealthCheckFailing")
    assert "401" in next(c.message for c in plan.status.conditions if c.type == "Ready")


def test_running_healthy_space_is_ready_and_converged() -> None:
    observed = Observation(space=space(), token="t", connection_url=SANDBOX, health=HEALTHY)
    plan = decide(session(status=RECORDED), observed, CONFIG, NOW)
    assert plan.converged
    assert ready(plan.status) == ("True", "SandboxReady")
    assert plan.status.phase == Phase.READY
    assert plan.status.observed_generation == 1
    # progress (FreeHardware) is no Event: only what a user acts on is
    assert [e.reason for e in plan.events] == ["NoReadToken", "SandboxReady"]


def test_lost_token_is_rotated() -> None:
    plan = decide(session(status=RECORDED), Observation(space=space(), token=None), CONFIG, NOW)
    assert plan.action == RotateToken(SPACE_ID)


def test_space_with_foreign_marker_is_never_touched() -> None:
    foreign = replace(space(), marker_uid="someone-else")
    plan = decide(session(status=RECORDED), Observation(space=foreign, token="t"), CONFIG, NOW)
    assert plan.action is None
    assert ready(plan.status) == ("False", "SpaceNotOwned")


@pytest.mark.parametrize("stage", ["BUILD_ERROR", "RUNTIME_ERROR"])
def test_error_stage_is_reported_then_restarted_with_backoff(stage: str) -> None:
    observed = Observation(space=space(stage), token="t", connection_url=SANDBOX)
    first = decide(session(status=RECORDED), observed, CONFIG, NOW, jitter=0.5)
    assert first.action is None
    assert ready(first.status)[0] == "False"
    assert ready(first.status)[1] in ("BuildError", "RuntimeError")
    assert first.status.failures == 1 and first.status.next_retry_time is not None
    again = session(status=first.status.model_dump(by_alias=True))
    second = decide(again, observed, CONFIG, NOW, jitter=0.5)
    assert second.action == RestartSpace(SPACE_ID)
    assert second.requeue_after is not None and first.requeue_after is not None
    assert second.requeue_after > first.requeue_after


def test_rate_limit_waits_at_least_retry_after() -> None:
    failure = HubFailure(FailureKind.RATE_LIMITED, "rate limited", retry_after=60)
    plan = decide(session(status=RECORDED), Observation(hub_failure=failure, token="t"), CONFIG, NOW)
    assert plan.requeue_after == 60
    assert ready(plan.status) == ("False", "HubRateLimited")
    assert "next try in 60s" in next(c.message for c in plan.status.conditions if c.type == "Ready")


def test_credentials_failure_waits_long() -> None:
    failure = HubFailure(FailureKind.UNAUTHORIZED, "bad token")
    plan = decide(session(status=RECORDED), Observation(hub_failure=failure, token="t"), CONFIG, NOW)
    assert plan.requeue_after is not None and plan.requeue_after >= CONFIG.credentials_backoff_min


def test_backoff_grows_and_is_capped() -> None:
    delays = [backoff_delay(n, CONFIG, 0.5) for n in range(1, 15)]
    assert delays == sorted(delays)
    assert delays[-1] == CONFIG.backoff_max


def test_failure_counter_resets_on_success() -> None:
    failing = session(status={**RECORDED, "failures": 4, "nextRetryTime": "2026-11-26T12:00:00Z"})
    observed = Observation(space=space(), token="t", connection_url=SANDBOX, health=HEALTHY)
    plan = decide(failing, observed, CONFIG, NOW)
    assert plan.status.failures is None and plan.status.next_retry_time is None


def test_condition_transition_time_moves_only_on_status_change() -> None:
    observed = Observation(space=space("BUILDING", None, "cpu-basic"), token="t", connection_url=SANDBOX)
    first = decide(session(status=RECORDED), observed, CONFIG, NOW)
    later = datetime(2026, 11, 26, 12, 5, tzinfo=UTC)
    observed_starting = replace(observed, space=space("APP_STARTING", None, "cpu-basic"))
    second = decide(session(status=first.status.model_dump(by_alias=True)), observed_starting, CONFIG, later)
    before = next(c for c in first.status.conditions if c.type == "Ready")
    after = next(c for c in second.status.conditions if c.type == "Ready")
    assert after.reason == "Starting" and after.last_transition_time == before.last_transition_time


# Hardware ------------------------------------------------------------------------------


def test_paid_hardware_without_approval_is_never_requested() -> None:
    observed = Observation(space=space(), token="t", connection_url=SANDBOX, health=HEALTHY)
    plan = decide(session({"hardware": "a10g-small"}, RECORDED), observed, CONFIG, NOW)
    assert plan.action is None
    approval = next(c for c in plan.status.conditions if c.type == "HardwareApproved")
    assert (approval.status, approval.reason) == ("False", "AwaitingApproval")


def test_approved_hardware_is_requested() -> None:
    spec = {"hardware": "a10g-small", "approval": {"hardware": "a10g-small", "approvedBy": "boss"}}
    observed = Observation(space=space(), token="t", connection_url=SANDBOX, health=HEALTHY, **TRUSTED)
    plan = decide(session(spec, RECORDED), observed, CONFIG, NOW)
    assert plan.action == RequestHardware(SPACE_ID, "a10g-small", CONFIG.sleep_time_default)
    assert plan.status.phase == Phase.UPGRADING
    # Back to free hardware is a downgrade, and its phase says so.
    back = {"hardware": "cpu-basic", "approval": spec["approval"]}
    observed = replace(observed, space=paid())
    plan = decide(session(back, RECORDED), observed, CONFIG, NOW)
    assert plan.action == RequestHardware(SPACE_ID, "cpu-basic", None)
    assert plan.status.phase == Phase.DOWNGRADING


def test_approval_for_another_flavor_does_not_count() -> None:
    spec = {"hardware": "a100-large", "approval": {"hardware": "a10g-small", "approvedBy": "boss"}}
    observed = Observation(space=space(), token="t", connection_url=SANDBOX, health=HEALTHY)
    plan = decide(session(spec, RECORDED), observed, CONFIG, NOW)
    assert plan.action is None
    approval = next(c for c in plan.status.conditions if c.type == "HardwareApproved")
    assert approval.reason == "AwaitingApproval" and "approve a100-large" in approval.message


def test_downgrade_to_free_needs_no_approval() -> None:
    observed = Observation(
        space=space("RUNNING", "a10g-small", "a10g-small"), token="t", connection_url=SANDBOX
    )
    plan = decide(session({"hardware": "cpu-basic"}, RECORDED), observed, CONFIG, NOW)
    assert plan.action == RequestHardware(SPACE_ID, "cpu-basic")


# Deletion ------------------------------------------------------------------------------


def test_finalize_deletes_owned_space() -> None:
    plan = decide_deletion(session(status=RECORDED), DeletionObservation(marker=UID), CONFIG, now=NOW)
    assert plan.action is not None and plan.action.space_id == SPACE_ID and not plan.done


def test_finalize_is_done_when_space_is_gone() -> None:
    assert decide_deletion(session(status=RECORDED), DeletionObservation(marker=None), CONFIG, now=NOW).done


def test_finalize_orphan_policy_keeps_space() -> None:
    plan = decide_deletion(
        session({"deletionPolicy": "Orphan"}, RECORDED), DeletionObservation(marker=UID), CONFIG, now=NOW
    )
    assert plan.done and plan.action is None and plan.reason == "SpaceOrphaned"


def test_finalize_never_deletes_a_foreign_space() -> None:
    plan = decide_deletion(session(status=RECORDED), DeletionObservation(marker="other"), CONFIG, now=NOW)
    assert plan.done and plan.action is None and plan.reason == "SpaceNotOwned"


def test_finalize_waits_while_hub_is_down() -> None:
    failure = HubFailure(FailureKind.UNAVAILABLE, "503")
    plan = decide_deletion(
        session(status=RECORDED), DeletionObservation(hub_failure=failure), CONFIG, now=NOW
    )
    assert not plan.done and plan.requeue_after is not None and plan.reason == "HubUnavailable"


def test_awaiting_approval_shows_flavor_and_price() -> None:
    observed = Observation(space=space(), token="t", connection_url=SANDBOX, health=HEALTHY)
    plan = decide(session({"hardware": "a10g-small"}, RECORDED), observed, CONFIG, NOW)
    assert plan.status.pending_approval is not None
    assert (plan.status.pending_approval.hardware, plan.status.pending_approval.usd_per_hour) == (
        "a10g-small",
        1.0,
    )
    assert ready(plan.status) == ("True", "SandboxReady")  # the sandbox keeps serving on cpu-basic


def test_approval_clears_pending_and_names_approver() -> None:
    spec = {
        "hardware": "a10g-small",
        "approval": {"hardware": "a10g-small", "approvedBy": "boss", "reason": "eval"},
    }
    observed = Observation(space=paid(), token="t", connection_url=SANDBOX, health=HEALTHY, **TRUSTED)
    plan = decide(session(spec, RECORDED), observed, CONFIG, NOW)
    assert plan.status.pending_approval is None and plan.status.approved_by == "boss"
    assert ready(plan.status) == ("True", "SandboxReady")
    event = next(e for e in plan.events if e.reason == "Approved")
    assert "boss" in event.message and "eval" in event.message


def test_standing_budget_covers_flavors_within_the_hourly_limit() -> None:
    approval = {"maxUsdPerHour": 1.5, "approvedBy": "boss"}
    observed = Observation(space=space(), token="t", connection_url=SANDBOX, health=HEALTHY, **TRUSTED)
    within = decide(
        session({"hardware": "a10g-large", "approval": approval}, RECORDED), observed, CONFIG, NOW
    )
    assert within.action == RequestHardware(SPACE_ID, "a10g-large", CONFIG.sleep_time_default)
    above = decide(session({"hardware": "a100-large", "approval": approval}, RECORDED), observed, CONFIG, NOW)
    assert above.action is None
    assert (
        next(c for c in above.status.conditions if c.type == "HardwareApproved").reason == "AwaitingApproval"
    )


def test_operator_limits_cap_what_an_approval_may_grant() -> None:
    config = CONFIG.model_copy(update={"max_budget_usd": 50.0, "max_usd_per_hour": 2.0})
    observed = Observation(space=space(), token="t", connection_url=SANDBOX, health=HEALTHY, **TRUSTED)
    for spec in (
        {
            "hardware": "a10g-small",
            "approval": {"hardware": "a10g-small", "approvedBy": "b", "budgetUsd": 500},
        },
        {"hardware": "a10g-small", "approval": {"hardware": "a10g-small", "approvedBy": "b"}},
        {"hardware": "a100x8", "approval": {"hardware": "a100x8", "approvedBy": "b", "budgetUsd": 10}},
    ):
        plan = decide(session(spec, RECORDED), observed, config, NOW)
        assert plan.action is None, spec
        approved = next(c for c in plan.status.conditions if c.type == "HardwareApproved")
        assert approved.reason == "ApprovalExceedsLimit", spec


def test_spend_accrues_from_observed_time_on_paid_hardware() -> None:
    spec = {
        "hardware": "a10g-small",
        "approval": {"hardware": "a10g-small", "approvedBy": "b", "budgetUsd": 5},
    }
    observed = Observation(space=paid(), token="t", connection_url=SANDBOX, health=HEALTHY, **TRUSTED)
    first = decide(session(spec, RECORDED), observed, CONFIG, NOW)
    assert first.status.spend is not None and first.status.spend.usd_per_hour == 1.0
    assert first.requeue_after == CONFIG.spend_interval  # comes back to keep the estimate current
    later = NOW.replace(hour=13)  # one hour on a10g-small at $1/h
    second = decide(session(spec, first.status.model_dump(by_alias=True)), observed, CONFIG, later)
    assert second.status.spend is not None and second.status.spend.estimated_usd == 1.0
    budget = next(c for c in second.status.conditions if c.type == "BudgetExhausted")
    assert (budget.status, budget.reason) == ("False", "WithinBudget")


def test_requeue_lands_when_the_budget_runs_out() -> None:
    spec = {
        "hardware": "a10g-small",
        "approval": {"hardware": "a10g-small", "approvedBy": "b", "budgetUsd": 0.001},
    }
    observed = Observation(space=paid(), token="t", connection_url=SANDBOX, health=HEALTHY, **TRUSTED)
    plan = decide(session(spec, RECORDED), observed, CONFIG, NOW)
    assert plan.requeue_after == pytest.approx(3.6)


def test_exhausted_budget_returns_the_space_to_cpu_basic() -> None:
    spec = {
        "hardware": "a10g-small",
        "approval": {"hardware": "a10g-small", "approvedBy": "b", "budgetUsd": 2},
    }
    status = {
        **RECORDED,
        "spend": {"estimatedUsd": 1.9, "usdPerHour": 1.0, "lastObservedTime": "2026-11-26T11:00:00Z"},
    }
    observed = Observation(space=paid(), token="t", connection_url=SANDBOX, health=HEALTHY, **TRUSTED)
    plan = decide(session(spec, status), observed, CONFIG, NOW)
    assert plan.action == RequestHardware(SPACE_ID, "cpu-basic")
    budget = next(c for c in plan.status.conditions if c.type == "BudgetExhausted")
    assert (budget.status, budget.reason) == ("True", "BudgetSpent")
    assert any(e.reason == "BudgetSpent" and e.type == "Warning" for e in plan.events)


def test_prices_come_from_the_observation() -> None:
    observed = Observation(
        space=space(), token="t", connection_url=SANDBOX, health=HEALTHY, prices={"a10g-small": 9.0}
    )
    plan = decide(session({"hardware": "a10g-small"}, RECORDED), observed, CONFIG, NOW)
    assert plan.status.pending_approval is not None and plan.status.pending_approval.usd_per_hour == 9.0


@pytest.mark.parametrize("stage", ["BUILDING", "APP_STARTING"])
def test_a_waiting_free_session_decides_the_same_status_on_every_wake_up(stage: str) -> None:
    """Nothing a user acts on changes while a free Space builds: the next pass writes no status."""
    from sandbox_operator.k8s.client import status_patch

    confirmed = {**RECORDED, "spaceConfirmedTime": "2026-11-26T11:59:00Z"}
    seen = observed(space(stage, None, "cpu-basic"), health=None)
    first = decide(session(status=confirmed), seen, CONFIG, NOW)
    later = decide(session(status=status_patch(first.status)), seen, CONFIG, NOW + timedelta(seconds=30))
    assert first.action is None and later.action is None
    assert status_patch(later.status) == status_patch(first.status)


def test_paid_hardware_still_brings_spend_up_to_date_on_every_pass() -> None:
    from sandbox_operator.k8s.client import status_patch

    approved = {"hardware": "a10g-small", "approval": {"approvedBy": "ops", "hardware": "a10g-small"}}
    seen = observed(paid())
    first = decide(session(approved, status=RECORDED), seen, CONFIG, NOW)
    later = decide(
        session(approved, status=status_patch(first.status)), seen, CONFIG, NOW + timedelta(hours=1)
    )
    assert first.status.spend is not None and later.status.spend is not None
    assert later.status.spend.estimated_usd == pytest.approx(first.status.spend.estimated_usd + 1.0)
