"""Decisions that keep Spaces from leaking or doubling: the transient 404 after our own duplicate,
the release of a Space kept by deletionPolicy Orphan, and retry times after Hub failures."""

from __future__ import annotations

from dataclasses import replace

from sandbox_operator.api import Phase
from sandbox_operator.core.creation import create_failure
from sandbox_operator.core.deletion import decide_deletion
from sandbox_operator.core.lifecycle import decide
from sandbox_operator.core.model import (
    CreateSpace,
    DeletionObservation,
    FailureKind,
    HubFailure,
    Observation,
    ReleaseSpace,
    Session,
)
from tests.support.core import CONFIG, NOW, SPACE_ID, UID, new_session, space


def session(policy: str = "Delete", **status: object) -> Session:
    return new_session(
        {"deletionPolicy": policy}, {"spaceId": SPACE_ID, "connectionSecret": "demo-sandbox", **status}
    )


#: A duplicate asked for a moment ago, as status.duplicateRequestedTime records it.
JUST_DUPLICATED = {"duplicateRequestedTime": "2026-11-26T11:59:58.000000Z"}


def test_a_space_we_just_duplicated_is_waited_for_not_duplicated_again() -> None:
    plan = decide(session(**JUST_DUPLICATED), Observation(token="t"), CONFIG, NOW)
    assert plan.action is None and plan.requeue_after == CONFIG.poll_interval
    assert plan.status.phase == Phase.CREATING and not plan.status.failures
    assert isinstance(decide(session(), Observation(token="t"), CONFIG, NOW).action, CreateSpace)


def test_the_template_is_recorded_with_the_duplicate_request() -> None:
    """`kubectl get ags -o wide` shows what the Space was made from, the operator's default included."""
    plan = decide(session(), Observation(token="t"), CONFIG, NOW)
    assert isinstance(plan.action, CreateSpace)
    assert plan.status.template == plan.action.template == CONFIG.default_template
    assert plan.status.duplicate_requested_time == plan.action.requested_time


def test_a_duplicate_an_earlier_process_recorded_is_sent_again_not_waited_out() -> None:
    """An operator killed between recording its duplicate and sending it leaves a record of a request
    that never left: its successor cannot tell, and waiting out the window held the session for
    80 s (the flaky test_operator_killed_mid_create_leaves_exactly_one_space). It sends it again:
    the Space's name is the session's, so one that did land answers 409 and is adopted."""
    inherited = Observation(token="t", create_record_inherited=True)
    plan = decide(session(**JUST_DUPLICATED), inherited, CONFIG, NOW)
    assert isinstance(plan.action, CreateSpace) and plan.action.space_id == SPACE_ID
    assert plan.status.duplicate_requested_time == plan.action.requested_time == "2026-11-26T12:00:00.000000Z"
    assert plan.status.phase == Phase.CREATING and not plan.status.failures
    ready = next(c for c in plan.status.conditions if c.type == "Ready")
    assert ready.reason == "Creating" and "earlier operator process" in ready.message
    # Once seen, the Space is the session's as ever: nothing is sent again.
    seen = decide(session(**JUST_DUPLICATED), replace(inherited, space=space("BUILDING", None)), CONFIG, NOW)
    assert not isinstance(seen.action, CreateSpace)


def test_a_duplicate_the_hub_answered_with_an_error_is_sent_again_counting_attempts_not_waited_out() -> None:
    """A 503 to the duplicate cost 80 s of "the Hub does not show it yet" per attempt, each "attempt 1".
    The answer is recorded: the next pass after the backoff sends it again (a Space that landed anyway
    answers 409 and is adopted), and the attempts count on until a duplicate is answered without error."""
    failed = {**JUST_DUPLICATED, "duplicateFailure": "503 Service Unavailable", "failures": 2}
    plan = decide(session(**failed), Observation(token="t"), CONFIG, NOW)
    assert isinstance(plan.action, CreateSpace)
    assert plan.status.failures == 2  # kept while the duplicate is retried
    ready = next(c for c in plan.status.conditions if c.type == "Ready")
    assert "again (attempt 3)" in ready.message and "503 Service Unavailable" in ready.message
    answer = HubFailure(FailureKind.UNAVAILABLE, "503 Service Unavailable")
    assert create_failure(plan.status, True, answer) == "503 Service Unavailable"
    assert create_failure(plan.status, True, None) is None
    assert create_failure(plan.status, False, None) == plan.status.duplicate_failure


def test_rate_limit_retry_time_is_never_before_the_pause_ends() -> None:
    failure = HubFailure(FailureKind.RATE_LIMITED, "paused", retry_after=57.0)
    plan = decide(session(), Observation(token="t", hub_failure=failure), CONFIG, NOW)
    assert plan.requeue_after is not None and plan.requeue_after >= 57.0
    assert plan.status.next_retry_time is not None and plan.status.next_retry_time >= "2026-11-26T12:00:57Z"
    ready = next(c for c in plan.status.conditions if c.type == "Ready")
    assert ready.reason == "HubRateLimited" and "next try in" in ready.message


def test_orphan_policy_releases_the_space_from_the_sweeper_first() -> None:
    observed = DeletionObservation(marker=UID, marker_cluster="c1")
    plan = decide_deletion(session("Orphan"), observed, CONFIG, now=NOW)
    assert plan.action == ReleaseSpace(SPACE_ID) and not plan.done
    released = DeletionObservation(marker=UID, marker_cluster="")
    assert decide_deletion(session("Orphan"), released, CONFIG, now=NOW).done
    assert decide_deletion(session("Orphan"), DeletionObservation(), CONFIG, now=NOW).done


def test_orphan_policy_waits_for_the_hub_too() -> None:
    failure = HubFailure(FailureKind.UNAVAILABLE, "503")
    plan = decide_deletion(session("Orphan"), DeletionObservation(hub_failure=failure), CONFIG, now=NOW)
    assert not plan.done and plan.reason == "HubUnavailable"


def test_finalize_failure_says_when_the_next_try_is() -> None:
    failure = HubFailure(FailureKind.UNAVAILABLE, "the Hub answered 503")
    plan = decide_deletion(session(), DeletionObservation(hub_failure=failure), CONFIG, 0.5, now=NOW)
    assert plan.requeue_after == 2.0
    assert "503" in plan.message and "next try in 2s at 2026-11-26T12:00:02Z" in plan.message


def test_a_space_deleted_before_the_hub_shows_it_is_waited_for_not_forgotten() -> None:
    plan = decide_deletion(session(**JUST_DUPLICATED), DeletionObservation(), CONFIG, now=NOW)
    assert not plan.done and plan.action is None and plan.requeue_after == CONFIG.poll_interval
    assert decide_deletion(session(), DeletionObservation(), CONFIG, now=NOW).done
