"""What the decision core holds to under attack: money rules in every stage, Orphan on free
hardware, "not found" within the duplicate window, backoff of stuck sessions, token rotation,
and failures met outside the Hub."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from sandbox_operator.api import AgentSessionStatus, Phase
from sandbox_operator.core.creation import create_record, duplicate_window_end
from sandbox_operator.core.deletion import decide_deletion
from sandbox_operator.core.draft import waiting_delay
from sandbox_operator.core.lifecycle import decide, decide_failure
from sandbox_operator.core.model import (
    CreateSpace,
    DeletionObservation,
    FailureKind,
    HealthResult,
    HubFailure,
    Observation,
    ReleaseSpace,
    RequestHardware,
    RestartSpace,
    RotateToken,
    Session,
    SpaceView,
)
from tests.support.core import CONFIG, NOW, SANDBOX, SPACE_ID, TRUSTED, UID, new_session
from tests.support.core import space as space_view

SEEN = {
    "spaceId": SPACE_ID,
    "connectionSecret": "demo-sandbox",
    "spaceConfirmedTime": "2026-11-26T11:00:00Z",
}
APPROVED_T4 = {"hardware": "t4-small", "approval": {"hardware": "t4-small", "approvedBy": "alice"}}
HEALTHY = HealthResult(True, "200 OK", 200)

#: Every stage the Hub reports (huggingface_hub's SpaceStage), besides RUNNING.
STAGES = [
    "NO_APP_FILE",
    "CONFIG_ERROR",
    "BUILDING",
    "BUILD_ERROR",
    "APP_STARTING",
    "RUNNING_APP_STARTING",
    "RUNNING_BUILDING",
    "RUNTIME_ERROR",
    "DELETING",
    "STOPPED",
    "PAUSED",
    "SLEEPING",
    "RUNNING",
]


def session(spec: dict[str, object] | None = None, **status: object) -> Session:
    return new_session(spec, {**SEEN, **status})


def space(
    stage: str = "RUNNING", current: str | None = "t4-small", requested: str | None = "t4-small"
) -> SpaceView:
    return space_view(stage, current, requested)


def ready(status: AgentSessionStatus) -> tuple[str, str, str]:
    condition = next(c for c in status.conditions if c.type == "Ready")
    return condition.status, condition.reason, condition.message


def observed(view: SpaceView, **extra: object) -> Observation:
    # Approvals count only while the policy is enforced and the approver confirmed.
    trusted: dict[str, object] = {**TRUSTED, **extra}
    return Observation(space=view, token="t", connection_url=SANDBOX, **trusted)  # type: ignore[arg-type]


# Money rules apply in every stage -------------------------------------------------------------


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize(
    "spec",
    [
        {"hardware": "t4-small"},  # approval removed
        {"hardware": "cpu-basic"},  # back to free
        {"hardware": "t4-small", "approval": {"hardware": "a10g-small", "approvedBy": "alice"}},
        {
            "hardware": "t4-small",
            "approval": {"hardware": "t4-small", "approvedBy": "alice", "budgetUsd": 1},
        },  # budget spent (see the status below)
    ],
    ids=["approval-removed", "free-requested", "other-flavor-approved", "budget-exhausted"],
)
def test_paid_hardware_not_allowed_now_is_given_up_first_in_every_stage(
    stage: str, spec: dict[str, object]
) -> None:
    spent = {"spend": {"estimatedUsd": 1.5, "usdPerHour": 0.4, "lastObservedTime": "2026-11-26T12:00:00Z"}}
    for current, requested in (("t4-small", "t4-small"), (None, "t4-small"), ("t4-small", None)):
        view = space(stage, current, requested)
        plan = decide(session(spec, **spent), observed(view, health=HEALTHY), CONFIG, NOW)
        assert plan.action == RequestHardware(SPACE_ID, "cpu-basic"), (stage, current, requested)
        assert ready(plan.status)[:2] == ("False", "HardwareSwitching")


@pytest.mark.parametrize("stage", STAGES)
def test_allowed_paid_hardware_is_left_alone_in_every_stage(stage: str) -> None:
    plan = decide(session(APPROVED_T4), observed(space(stage), health=HEALTHY), CONFIG, NOW)
    assert not isinstance(plan.action, RequestHardware), stage


def test_a_downgrade_already_requested_is_not_requested_again() -> None:
    view = space("RUNNING_BUILDING", "t4-small", "cpu-basic")
    plan = decide(session({"hardware": "t4-small"}), observed(view), CONFIG, NOW)
    assert plan.action is None


def test_a_paused_space_on_unapproved_paid_hardware_is_downgraded_before_its_restart() -> None:
    view = space("PAUSED", None, "t4-small")
    plan = decide(session({"hardware": "t4-small"}), observed(view), CONFIG, NOW)
    assert plan.action == RequestHardware(SPACE_ID, "cpu-basic")
    after = decide(
        session({"hardware": "t4-small"}), observed(space("PAUSED", None, "cpu-basic")), CONFIG, NOW
    )
    assert after.action == RestartSpace(SPACE_ID)


def test_money_comes_before_a_new_token() -> None:
    plan = decide(session({"hardware": "t4-small"}), Observation(space=space("BUILDING")), CONFIG, NOW)
    assert plan.action == RequestHardware(SPACE_ID, "cpu-basic")


# deletionPolicy Orphan brings the Space back to free hardware ---------------------------------


def orphan(**status: object) -> Session:
    return session({**APPROVED_T4, "deletionPolicy": "Orphan"}, **status)


@pytest.mark.parametrize(
    ("current", "requested"), [("t4-small", "t4-small"), (None, "t4-small"), ("t4-small", None)]
)
def test_orphan_requests_free_hardware_before_release(current: str | None, requested: str | None) -> None:
    ours = DeletionObservation(
        marker=UID, marker_cluster="c1", current_hardware=current, requested_hardware=requested
    )
    plan = decide_deletion(orphan(), ours, CONFIG, now=NOW)
    assert plan.action == RequestHardware(SPACE_ID, "cpu-basic") and not plan.done
    assert plan.reason == "FreeingHardware"


def test_orphan_is_released_once_the_hub_reports_free_hardware_requested() -> None:
    switching = DeletionObservation(
        marker=UID, marker_cluster="c1", current_hardware="t4-small", requested_hardware="cpu-basic"
    )
    assert decide_deletion(orphan(), switching, CONFIG, now=NOW).action == ReleaseSpace(SPACE_ID)


def test_an_orphan_never_ours_or_already_released_is_not_touched() -> None:
    for marker, cluster in (("someone-else", "c1"), (UID, ""), (UID, "other-cluster")):
        seen = DeletionObservation(
            marker=marker, marker_cluster=cluster, current_hardware="t4-small", requested_hardware="t4-small"
        )
        plan = decide_deletion(orphan(), seen, CONFIG, now=NOW)
        assert plan.done and plan.action is None, (marker, cluster)


# A create in flight, and "not visible yet" ----------------------------------------------------


def test_create_is_recorded_with_a_send_deadline_inside_the_window() -> None:
    fresh = session(spaceConfirmedTime=None)
    plan = decide(fresh, Observation(token="t"), CONFIG, NOW)
    assert isinstance(plan.action, CreateSpace)
    assert plan.status.duplicate_requested_time == plan.action.requested_time
    end = duplicate_window_end(plan.status, CONFIG)
    assert end is not None and NOW < plan.action.send_by < end
    assert end == NOW + timedelta(
        seconds=CONFIG.duplicate_send_deadline + CONFIG.hub_timeout + CONFIG.hub_visibility_grace
    )


def test_the_finalizer_waits_out_a_create_that_may_still_land_then_concludes() -> None:
    in_flight = session(spaceConfirmedTime=None, duplicateRequestedTime="2026-11-26T12:00:00.000000Z")
    window = CONFIG.duplicate_send_deadline + CONFIG.hub_timeout + CONFIG.hub_visibility_grace
    for seconds in (0, window / 3, window - 1):
        plan = decide_deletion(in_flight, DeletionObservation(), CONFIG, now=NOW + timedelta(seconds=seconds))
        assert not plan.done and plan.reason == "WaitingForHub" and not plan.failed, seconds
    assert decide_deletion(in_flight, DeletionObservation(), CONFIG, now=NOW + timedelta(seconds=window)).done
    appeared = DeletionObservation(marker=UID, marker_cluster="c1")
    assert decide_deletion(in_flight, appeared, CONFIG, now=NOW).action is not None  # deletes what appears


def test_a_space_seen_after_the_request_is_not_taken_for_gone_by_the_finalizer_inside_the_window() -> None:
    # A listing confirmed it, but its own routes (the marker's too) may still answer "not found" (F32).
    landed = session(
        duplicateRequestedTime="2026-11-26T11:59:50.000000Z", spaceConfirmedTime="2026-11-26T11:59:55Z"
    )
    waiting = decide_deletion(landed, DeletionObservation(), CONFIG, now=NOW)
    assert not waiting.done and waiting.reason == "WaitingForHub"
    window = CONFIG.duplicate_send_deadline + CONFIG.hub_timeout + CONFIG.hub_visibility_grace
    assert decide_deletion(landed, DeletionObservation(), CONFIG, now=NOW + timedelta(seconds=window)).done
    lost = decide(landed, Observation(token="t"), CONFIG, NOW)  # a live session re-creates (409 adopts)
    assert isinstance(lost.action, CreateSpace) and ready(lost.status)[1] == "SpaceLost"


def test_the_finalizer_is_done_once_it_deleted_the_space_itself() -> None:
    just = session(duplicateRequestedTime="2026-11-26T11:59:50.000000Z", spaceConfirmedTime=None)
    plan = decide_deletion(just, DeletionObservation(deleted=True), CONFIG, now=NOW)
    assert plan.done and plan.reason == "SpaceDeleted"


@pytest.mark.parametrize(
    ("sent", "failure", "recorded"),
    [
        (False, None, "before"),  # a missing Secret or a deleted session: nothing went out
        (True, None, "now"),
        (True, HubFailure(FailureKind.UNAVAILABLE, "timed out"), "now"),  # may have landed
        (True, HubFailure(FailureKind.FORBIDDEN, "403"), None),  # refused: nothing created
        (True, HubFailure(FailureKind.TEMPLATE_NOT_FOUND, "404"), None),
        (True, HubFailure(FailureKind.RATE_LIMITED, "429"), None),
    ],
)
def test_the_create_record_follows_what_the_duplicate_may_have_done(
    sent: bool, failure: HubFailure | None, recorded: str | None
) -> None:
    action = CreateSpace(SPACE_ID, "t/t", True, "now", NOW)
    status = AgentSessionStatus.model_validate({"duplicateRequestedTime": "before"})
    assert create_record(status, action, sent, failure) == recorded


@pytest.mark.parametrize("kind", [FailureKind.NOT_FOUND, FailureKind.UNAUTHORIZED])
def test_401_or_404_right_after_our_duplicate_means_not_visible_yet(kind: FailureKind) -> None:
    just = session(duplicateRequestedTime="2026-11-26T11:59:50.000000Z")
    failure = HubFailure(kind, f"{kind.value} on hardware")
    plan = decide(just, Observation(token="t", hub_failure=failure), CONFIG, NOW)
    assert plan.action is None and plan.requeue_after == CONFIG.poll_interval
    assert not plan.status.failures and ready(plan.status)[1] == "Creating"
    assert all(e.reason != "HubUnauthorized" for e in plan.events)
    finalizing = decide_deletion(just, DeletionObservation(hub_failure=failure), CONFIG, now=NOW)
    assert finalizing.reason == "WaitingForHub" and not finalizing.failed
    later = NOW + timedelta(minutes=5)
    after = decide(just, Observation(token="t", hub_failure=failure), CONFIG, later)
    assert ready(after.status)[1] == kind.value and after.status.failures == 1


def test_a_space_lost_after_it_was_confirmed_is_created_again_and_confirmed_anew() -> None:
    plan = decide(session(), Observation(token="t"), CONFIG, NOW)
    assert isinstance(plan.action, CreateSpace)
    assert ready(plan.status)[1] == "SpaceLost"
    assert plan.status.space_confirmed_time is None


def test_the_space_is_confirmed_once_seen_with_our_marker() -> None:
    fresh = session(spaceConfirmedTime=None)
    view = replace(space("BUILDING", None, "cpu-basic"), marker_uid=UID)
    confirmed = decide(fresh, observed(view), CONFIG, NOW).status.space_confirmed_time
    assert confirmed == "2026-11-26T12:00:00.000000Z"
    unread = replace(view, marker_uid=None)
    assert decide(fresh, observed(unread), CONFIG, NOW).status.space_confirmed_time is None


# "Not found" is not always gone ---------------------------------------------------------------


def test_access_lost_does_not_hold_a_session_that_never_had_a_space() -> None:
    failure = HubFailure(FailureKind.ACCESS_LOST, "the token cannot see namespace someone-else")
    never = session(spaceConfirmedTime=None)
    plan = decide_deletion(never, DeletionObservation(hub_failure=failure), CONFIG, now=NOW)
    assert plan.done and plan.reason == "SpaceDeleted"


def test_access_lost_keeps_the_finalizer_and_retries_with_backoff() -> None:
    failure = HubFailure(FailureKind.ACCESS_LOST, "the token cannot see namespace agents")
    plan = decide_deletion(session(), DeletionObservation(hub_failure=failure), CONFIG, 0.5, now=NOW)
    assert not plan.done and plan.failed and plan.reason == "HubAccessLost"
    assert "agents" in plan.message and plan.requeue_after == 2.0
    again = decide_deletion(
        session(failures=3), DeletionObservation(hub_failure=failure), CONFIG, 0.5, now=NOW
    )
    assert again.requeue_after is not None and again.requeue_after > plan.requeue_after
    live = decide(session(), Observation(token="t", hub_failure=failure), CONFIG, NOW)
    assert live.action is None and ready(live.status)[1] == "HubAccessLost"


# A stuck session backs off -------------------------------------------------------------------


def test_a_session_that_stays_unhealthy_polls_less_and_less_up_to_the_cap() -> None:
    failing = HealthResult(False, "answered 503", 503)
    status: dict[str, object] = {}
    delays = []
    moment = NOW
    for _ in range(40):
        current = session({"hardware": "cpu-basic"}, **status)
        view = space("RUNNING", "cpu-basic", "cpu-basic")
        plan = decide(current, observed(view, health=failing), CONFIG, moment)
        assert plan.action is None and ready(plan.status)[1] == "HealthCheckFailing"
        assert plan.requeue_after is not None
        delays.append(plan.requeue_after)
        status = plan.status.model_dump(by_alias=True, exclude_none=True)
        moment += timedelta(seconds=plan.requeue_after)
    assert delays[0] == CONFIG.poll_interval
    assert delays == sorted(delays) and delays[-1] == CONFIG.waiting_poll_max
    # 40 polls cover more than 15 minutes stuck; at the poll interval they would cover 80 seconds
    assert (moment - NOW).total_seconds() > 900


@pytest.mark.parametrize("stage", ["BUILDING", "APP_STARTING", "RUNNING_APP_STARTING"])
def test_a_session_stuck_starting_backs_off_too(stage: str) -> None:
    ten_minutes = session(
        {"hardware": "cpu-basic"},
        conditions=[
            {
                "type": "Ready",
                "status": "False",
                "reason": "Building",
                "lastTransitionTime": "2026-11-26T11:50:00Z",
            }
        ],
    )
    plan = decide(ten_minutes, observed(space(stage, None, "cpu-basic")), CONFIG, NOW)
    assert plan.action is None and plan.requeue_after == CONFIG.waiting_poll_max


def test_waiting_delay_never_drops_below_the_poll_interval() -> None:
    config = CONFIG.model_copy(update={"poll_interval": 90.0})
    assert waiting_delay(AgentSessionStatus(), config, NOW) == 90.0


# A rejected token is rotated, but not in a loop ----------------------------------------------


def test_a_token_the_sandbox_rejects_is_rotated_at_most_once_per_interval() -> None:
    rejected = HealthResult(False, "answered 401", 401)
    view = space("RUNNING", "cpu-basic", "cpu-basic")
    first = decide(session(), observed(view, health=rejected), CONFIG, NOW)
    assert first.action == RotateToken(SPACE_ID)
    assert first.status.token_rotated_time == "2026-11-26T12:00:00Z"
    rotated = first.status.model_dump(by_alias=True, exclude_none=True)
    soon = decide(session(**rotated), observed(view, health=rejected), CONFIG, NOW + timedelta(minutes=1))
    assert soon.action is None and ready(soon.status)[1] == "HealthCheckFailing"
    later = NOW + timedelta(seconds=CONFIG.token_rotation_interval)
    assert decide(session(**rotated), observed(view, health=rejected), CONFIG, later).action == RotateToken(
        SPACE_ID
    )
    unavailable = HealthResult(False, "answered 503", 503)
    assert decide(session(), observed(view, health=unavailable), CONFIG, NOW).action is None


@pytest.mark.parametrize(
    ("reason", "message"),
    [
        ("SecretInvalid", "Secret team-a/creds key 'k' is not UTF-8 text"),
        ("InternalError", "unexpected error: KeyError: 'x'"),
    ],
)
def test_failures_outside_the_hub_become_a_condition_an_event_and_a_backoff(
    reason: str, message: str
) -> None:
    plan = decide_failure(session(), reason, message, CONFIG, NOW, 0.5)
    status, got_reason, text = ready(plan.status)
    assert (status, got_reason) == ("False", reason) and message in text and "next try in" in text
    assert plan.status.phase == Phase.FAILED and plan.status.failures == 1
    assert [(e.type, e.reason) for e in plan.events] == [("Warning", reason)]
    again = decide_failure(
        session(**plan.status.model_dump(by_alias=True, exclude_none=True)), reason, message, CONFIG, NOW, 0.5
    )
    assert again.requeue_after is not None and plan.requeue_after is not None
    assert again.requeue_after > plan.requeue_after and again.events == []


def test_a_hub_not_found_on_a_write_outside_the_window_is_a_failure_not_a_crash() -> None:
    failure = HubFailure(FailureKind.NOT_FOUND, "the Hub does not show the Space on hardware")
    plan = decide(session(), Observation(token="t", hub_failure=failure), CONFIG, NOW)
    assert ready(plan.status)[1] == "SpaceNotFound" and plan.status.failures == 1
