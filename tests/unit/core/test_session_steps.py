"""Each named step of a live session's chain (core/steps), on its own: a table of inputs and what the
step decides (an action and the Ready reason it writes) or that it passes to the next step."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from sandbox_operator.core.conditions import Reason, rfc3339
from sandbox_operator.core.draft import Draft
from sandbox_operator.core.model import FailureKind, HealthResult, HubFailure, SpaceView
from sandbox_operator.core.money import HardwareVerdict
from sandbox_operator.core.steps import STEPS, creating, next_step, running
from sandbox_operator.core.steps.given import Decision, Given
from tests.support.core import CONFIG, NOW, RECORDED, SPACE_ID, UID, new_session, observed, paid, space

#: A step that does not decide: the next one looks.
PASSES = "passes"
FREE = HardwareVerdict(True, Reason.FREE_HARDWARE, "cpu-basic needs no approval")
APPROVED = HardwareVerdict(True, Reason.APPROVED, "a10g-small approved")
UNAPPROVED = HardwareVerdict(False, Reason.AWAITING_APPROVAL, "a10g-small waits for an approver")
JUST = rfc3339(NOW - timedelta(seconds=1), precise=True)
LONG_AGO = rfc3339(NOW - timedelta(hours=1), precise=True)
NOT_FOUND = HubFailure(FailureKind.NOT_FOUND, "404 Not Found")
UNAVAILABLE = HubFailure(FailureKind.UNAVAILABLE, "503 Service Unavailable")
PAID_SPEC = {"hardware": "a10g-small"}
ON_PAID = {**RECORDED, "hardware": {"current": "a10g-small", "requested": "a10g-small"}}


def given(
    spec: dict[str, Any] | None = None,
    status: dict[str, Any] | None = None,
    verdict: HardwareVerdict = FREE,
    **seen: Any,
) -> Given:
    """One pass's input: the session (recorded by default), and what was observed (a running,
    healthy cpu-basic Space unless `seen` says otherwise)."""
    session = new_session(spec, RECORDED if status is None else status)
    draft = Draft(session, NOW, session.status.model_copy(deep=True), verdict)
    return Given(draft, observed(**seen), CONFIG, 0.5)


def outcome(decision: Decision | None, of: Given) -> object:
    """What a step decided, compared in the tables: the action's kind and the Ready reason written."""
    if decision is None:
        return PASSES
    action, _ = decision
    ready = next((c.reason for c in of.draft.status.conditions if c.type == "Ready"), None)
    return (type(action).__name__ if action is not None else None, ready)


def ready_message(of: Given) -> str:
    return next((c.message for c in of.draft.status.conditions if c.type == "Ready"), "")


def test_the_chain_is_one_ordered_list_ending_in_a_step_that_always_decides() -> None:
    names = [step.__name__ for step in STEPS]
    assert names[:5] == [
        "refuse_before_intent",
        "connection_secret_conflict",
        "record_intent",
        "await_own_duplicate",
        "hub_failure",
    ]
    assert names[-1] == "ready" and len(names) == len(set(names))
    assert names.index("give_up_disallowed_paid") < names.index("restart_failed_space")  # money first


def test_the_first_step_that_decides_wins() -> None:
    healthy = given()
    assert outcome(next_step(healthy.draft, healthy.observed, CONFIG, 0.5), healthy) == (
        None,
        Reason.SANDBOX_READY,
    )
    conflict = given(status={}, connection_conflict="Secret demo-sandbox is not this session's")
    # A conflict is reported before the intent is recorded: nothing is written over another's Secret.
    assert outcome(next_step(conflict.draft, conflict.observed, CONFIG, 0.5), conflict) == (
        None,
        Reason.CONNECTION_SECRET_CONFLICT,
    )


@pytest.mark.parametrize(
    ("spec", "status", "expected"),
    [
        ({"owner": "elsewhere"}, {}, (None, Reason.OWNER_NOT_ALLOWED)),
        ({"template": "someone/else"}, {}, (None, Reason.TEMPLATE_NOT_ALLOWED)),
        ({"owner": "elsewhere"}, RECORDED, PASSES),  # named already: refused before a duplicate instead
        ({}, {}, PASSES),
    ],
)
def test_refuse_before_intent(spec: dict[str, Any], status: dict[str, Any], expected: object) -> None:
    g = given(spec, status, space=None)
    assert outcome(creating.refuse_before_intent(g), g) == expected


@pytest.mark.parametrize(
    ("conflict", "expected"),
    [
        ("a Secret of that name is not this session's", (None, Reason.CONNECTION_SECRET_CONFLICT)),
        (None, PASSES),
    ],
)
def test_connection_secret_conflict(conflict: str | None, expected: object) -> None:
    g = given(connection_conflict=conflict)
    assert outcome(creating.connection_secret_conflict(g), g) == expected


@pytest.mark.parametrize(
    ("status", "expected"),
    [({}, ("RecordIntent", Reason.PROVISIONING)), (RECORDED, PASSES)],
)
def test_record_intent(status: dict[str, Any], expected: object) -> None:
    g = given(status=status, space=None)
    assert outcome(creating.record_intent(g), g) == expected
    if expected != PASSES:
        assert g.draft.status.space_id == SPACE_ID


@pytest.mark.parametrize(
    ("requested", "failure", "expected"),
    [
        (JUST, NOT_FOUND, (None, Reason.CREATING)),
        (JUST, HubFailure(FailureKind.UNAUTHORIZED, "401"), (None, Reason.CREATING)),
        (JUST, UNAVAILABLE, PASSES),
        (LONG_AGO, NOT_FOUND, PASSES),
        (JUST, None, PASSES),
    ],
)
def test_await_own_duplicate(requested: str, failure: HubFailure | None, expected: object) -> None:
    g = given(status={**RECORDED, "duplicateRequestedTime": requested}, space=None, hub_failure=failure)
    assert outcome(creating.await_own_duplicate(g), g) == expected


@pytest.mark.parametrize(
    ("spec", "status", "verdict", "failure", "expected"),
    [
        ({}, RECORDED, FREE, UNAVAILABLE, (None, Reason.HUB_UNAVAILABLE)),
        # Paid hardware last seen and no longer approved is given up even when the Hub cannot be read.
        (PAID_SPEC, ON_PAID, UNAPPROVED, UNAVAILABLE, ("RequestHardware", Reason.HUB_UNAVAILABLE)),
        (PAID_SPEC, ON_PAID, APPROVED, UNAVAILABLE, (None, Reason.HUB_UNAVAILABLE)),
        ({}, RECORDED, FREE, None, PASSES),
    ],
)
def test_hub_failure(
    spec: dict[str, Any],
    status: dict[str, Any],
    verdict: HardwareVerdict,
    failure: HubFailure | None,
    expected: object,
) -> None:
    g = given(spec, status, verdict, space=None, hub_failure=failure)
    assert outcome(creating.hub_failure(g), g) == expected


@pytest.mark.parametrize(
    ("extra_status", "inherited", "expected"),
    [
        ({"duplicateRequestedTime": JUST}, False, (None, Reason.CREATING)),
        ({"duplicateRequestedTime": JUST}, True, PASSES),  # an earlier process's: sent again at once
        ({"duplicateRequestedTime": JUST, "duplicateFailure": "500"}, False, PASSES),
        ({"duplicateRequestedTime": LONG_AGO}, False, PASSES),
        ({}, False, PASSES),
    ],
)
def test_await_duplicate_landing(extra_status: dict[str, Any], inherited: bool, expected: object) -> None:
    g = given(status={**RECORDED, **extra_status}, space=None, create_record_inherited=inherited)
    assert outcome(creating.await_duplicate_landing(g), g) == expected


@pytest.mark.parametrize(
    ("problem", "expected"),
    [("Secret team-a/keys has no key api", (None, Reason.SECRET_NOT_FOUND)), (None, PASSES)],
)
def test_secrets_missing(problem: str | None, expected: object) -> None:
    g = given(space=None, secrets_problem=problem)
    assert outcome(creating.secrets_missing(g), g) == expected


@pytest.mark.parametrize(
    ("token", "expected"), [(None, ("RecordIntent", Reason.PROVISIONING)), ("t", PASSES)]
)
def test_record_intent_again(token: str | None, expected: object) -> None:
    g = given(space=None, token=token)
    assert outcome(creating.record_intent_again(g), g) == expected


@pytest.mark.parametrize(
    ("spec", "expected"),
    [({"owner": "elsewhere"}, (None, Reason.OWNER_NOT_ALLOWED)), ({"owner": "acme"}, PASSES)],
)
def test_refuse_creation(spec: dict[str, Any], expected: object) -> None:
    g = given(spec, space=None)
    assert outcome(creating.refuse_creation(g), g) == expected


@pytest.mark.parametrize(
    ("extra_status", "expected"),
    [
        ({}, ("CreateSpace", Reason.CREATING)),
        ({"spaceConfirmedTime": LONG_AGO}, ("CreateSpace", Reason.SPACE_LOST)),
        ({"duplicateRequestedTime": JUST, "duplicateFailure": "500"}, ("CreateSpace", Reason.CREATING)),
    ],
)
def test_create_space(extra_status: dict[str, Any], expected: object) -> None:
    g = given(status={**RECORDED, **extra_status}, space=None)
    assert outcome(creating.create_space(g), g) == expected
    assert g.draft.status.duplicate_requested_time == rfc3339(NOW, precise=True)


def marked(by: str | None, cluster: str | None = "c1", on: SpaceView | None = None) -> SpaceView:
    """The Space carrying the ownership marker of session `by`, written by cluster `cluster`."""
    return replace(on or space(), marker_uid=by, marker_cluster=cluster)


@pytest.mark.parametrize(
    ("seen", "expected"),
    [
        (marked("someone-else"), (None, Reason.SPACE_NOT_OWNED)),
        (marked(UID), PASSES),
        (marked(None, None), PASSES),  # the marker was not read this time
    ],
)
def test_adopt_space(seen: SpaceView, expected: object) -> None:
    g = given(space=seen)
    assert outcome(running.adopt_space(g, seen), g) == expected
    assert g.draft.status.stage == seen.stage


def test_adopt_space_notes_our_marker_once() -> None:
    g = given(space=marked(UID))
    running.adopt_space(g, marked(UID))
    assert g.draft.status.space_confirmed_time == rfc3339(NOW, precise=True)
    assert g.draft.status.marker_cluster_id == "c1"


@pytest.mark.parametrize(
    ("spec", "verdict", "seen", "expected"),
    [
        (PAID_SPEC, UNAPPROVED, paid(), ("RequestHardware", Reason.HARDWARE_SWITCHING)),
        ({}, FREE, paid(), ("RequestHardware", Reason.HARDWARE_SWITCHING)),  # the spec went back to free
        (PAID_SPEC, APPROVED, paid(), PASSES),
        (PAID_SPEC, UNAPPROVED, space(), PASSES),
    ],
)
def test_give_up_disallowed_paid(
    spec: dict[str, Any], verdict: HardwareVerdict, seen: SpaceView, expected: object
) -> None:
    g = given(spec, verdict=verdict, space=seen)
    assert outcome(running.give_up_disallowed_paid(g, seen), g) == expected


@pytest.mark.parametrize(
    ("seen", "expected"),
    [
        (marked(UID, "legacy"), ("MigrateMarker", None)),
        (marked(UID, "c1"), PASSES),
        (marked("someone-else", "legacy"), PASSES),
        (marked(UID, None), PASSES),
    ],
)
def test_migrate_marker(seen: SpaceView, expected: object) -> None:
    config = CONFIG.model_copy(update={"previous_cluster_ids": frozenset({"legacy"})})
    g = replace(given(space=seen), config=config)
    assert outcome(running.migrate_marker(g, seen), g) == expected


@pytest.mark.parametrize(
    ("paused", "stage", "since", "secret_says", "expected"),
    [
        (True, "RUNNING", None, None, ("PauseSpace", Reason.PAUSING)),
        (True, "PAUSED", JUST, None, ("PublishPause", None)),  # the Secret says so before Ready does
        (True, "PAUSED", JUST, JUST, (None, Reason.PAUSED)),
        (False, "RUNNING", None, JUST, ("PublishPause", None)),  # resumed: the Secret no longer says paused
        (False, "RUNNING", None, None, PASSES),
    ],
)
def test_pause(
    paused: bool, stage: str, since: str | None, secret_says: str | None, expected: object
) -> None:
    g = given({"paused": paused}, {**RECORDED, "pausedSince": since}, connection_paused_since=secret_says)
    assert outcome(running.pause(g, space(stage)), g) == expected


@pytest.mark.parametrize(
    ("token", "expected"), [(None, ("RotateToken", Reason.ROTATING_TOKEN)), ("t", PASSES)]
)
def test_rotate_lost_token(token: str | None, expected: object) -> None:
    g = given(token=token)
    assert outcome(running.rotate_lost_token(g, space()), g) == expected


@pytest.mark.parametrize(
    ("published", "expected"),
    [
        (None, ("PublishConnection", None)),
        ("http://old/", ("PublishConnection", None)),
        (space().sandbox_url, PASSES),
    ],
)
def test_publish_connection(published: str | None, expected: object) -> None:
    g = given(connection_url=published)
    assert outcome(running.publish_connection(g, space()), g) == expected


@pytest.mark.parametrize(
    ("private", "held", "expected"),
    [
        (True, "", ("PublishHubToken", None)),
        (True, "r", PASSES),
        (False, "r", ("PublishHubToken", None)),  # a public Space's Secret holds no read token
        (False, None, PASSES),
    ],
)
def test_publish_hub_token(private: bool, held: str | None, expected: object) -> None:
    g = given({"private": private}, connection_hub_token=held)
    assert outcome(running.publish_hub_token(g, space()), g) == expected


@pytest.mark.parametrize(
    ("stage", "before", "expected"),
    [
        ("BUILD_ERROR", {}, (None, Reason.BUILD_ERROR)),
        ("RUNTIME_ERROR", {}, (None, Reason.RUNTIME_ERROR)),
        # Seen failing before with the same reason: restarted.
        (
            "RUNTIME_ERROR",
            {"failures": 1, "reason": Reason.RUNTIME_ERROR},
            ("RestartSpace", Reason.RUNTIME_ERROR),
        ),
        ("RUNTIME_ERROR", {"failures": 1, "reason": Reason.BUILD_ERROR}, (None, Reason.RUNTIME_ERROR)),
        ("RUNNING", {}, PASSES),
    ],
)
def test_restart_failed_space(stage: str, before: dict[str, Any], expected: object) -> None:
    status: dict[str, Any] = dict(RECORDED)
    if before:
        ready = {"type": "Ready", "status": "False", "reason": before["reason"], "message": "failing"}
        status |= {"failures": before["failures"], "conditions": [{**ready, "lastTransitionTime": JUST}]}
    g = given(status=status, space=space(stage))
    assert outcome(running.restart_failed_space(g, space(stage)), g) == expected


@pytest.mark.parametrize(
    ("seen", "requeue", "expected"),
    [
        (space("SLEEPING"), None, (None, Reason.SANDBOX_SLEEPING)),
        # Woken by an agent, paid hardware bills again: looked at as often as spend is accrued.
        (replace(paid(), stage="SLEEPING"), CONFIG.spend_interval, (None, Reason.SANDBOX_SLEEPING)),
        (space("RUNNING"), None, PASSES),
    ],
)
def test_asleep(seen: SpaceView, requeue: float | None, expected: object) -> None:
    g = given(space=seen)
    decision = running.asleep(g, seen)
    assert outcome(decision, g) == expected
    if decision is not None:
        assert decision[1] == requeue


@pytest.mark.parametrize(
    ("stage", "expected"),
    [
        ("PAUSED", ("RestartSpace", Reason.RESTARTING)),
        ("STOPPED", ("RestartSpace", Reason.RESTARTING)),
        ("RUNNING", PASSES),
    ],
)
def test_restart_stopped_space(stage: str, expected: object) -> None:
    g = given(space=space(stage))
    assert outcome(running.restart_stopped_space(g, space(stage)), g) == expected


@pytest.mark.parametrize(
    ("stage", "expected"),
    [
        ("BUILDING", (None, Reason.BUILDING)),
        ("APP_STARTING", (None, Reason.STARTING)),
        ("SOMETHING_NEW", (None, Reason.STARTING)),  # any stage but RUNNING is waited for
        ("RUNNING", PASSES),
    ],
)
def test_await_start(stage: str, expected: object) -> None:
    g = given(space=space(stage))
    assert outcome(running.await_start(g, space(stage)), g) == expected


@pytest.mark.parametrize(
    ("seen", "expected"),
    [
        (space(), ("RequestHardware", Reason.HARDWARE_SWITCHING)),
        (space(requested="a10g-small"), PASSES),  # asked for already
        (paid(), PASSES),
    ],
)
def test_request_target_hardware(seen: SpaceView, expected: object) -> None:
    g = given(PAID_SPEC, verdict=APPROVED, space=seen)
    assert outcome(running.request_target_hardware(g, seen), g) == expected


@pytest.mark.parametrize(
    ("seen", "expected"),
    [(space(requested="a10g-small"), (None, Reason.HARDWARE_SWITCHING)), (paid(), PASSES)],
)
def test_await_hardware_switch(seen: SpaceView, expected: object) -> None:
    g = given(PAID_SPEC, verdict=APPROVED, space=seen)
    assert outcome(running.await_hardware_switch(g, seen), g) == expected


@pytest.mark.parametrize(
    ("spec", "verdict", "seen", "expected"),
    [
        (PAID_SPEC, APPROVED, replace(paid(), sleep_time=None), ("SetSleepTime", None)),
        (PAID_SPEC, APPROVED, paid(), PASSES),
        ({}, FREE, space(), PASSES),  # free hardware keeps the Hub's own sleep time
    ],
)
def test_set_sleep_time(
    spec: dict[str, Any], verdict: HardwareVerdict, seen: SpaceView, expected: object
) -> None:
    g = given(spec, verdict=verdict, space=seen)
    assert outcome(running.set_sleep_time(g, seen), g) == expected


REJECTED = HealthResult(False, "401 Unauthorized", 401)


@pytest.mark.parametrize(
    ("health", "rotated", "expected"),
    [
        (REJECTED, None, ("RotateToken", Reason.ROTATING_TOKEN)),
        (REJECTED, rfc3339(NOW), PASSES),  # rotated within the interval: not again
        (HealthResult(False, "503", 503), None, PASSES),
        (HealthResult(True, "200 OK", 200), None, PASSES),
    ],
)
def test_rotate_rejected_token(health: HealthResult, rotated: str | None, expected: object) -> None:
    g = given(status={**RECORDED, "tokenRotatedTime": rotated}, health=health)
    assert outcome(running.rotate_rejected_token(g, space()), g) == expected


@pytest.mark.parametrize(
    ("health", "read_token", "expected", "says"),
    [
        (
            HealthResult(False, "503 Service Unavailable", 503),
            "r",
            (None, Reason.HEALTH_CHECK_FAILING),
            "503",
        ),
        (None, "r", (None, Reason.HEALTH_CHECK_FAILING), "not checked yet"),
        (None, None, (None, Reason.HEALTH_CHECK_FAILING), running.NO_EDGE_TOKEN),
        (HealthResult(True, "200 OK", 200), "r", PASSES, ""),
    ],
)
def test_await_health(
    health: HealthResult | None, read_token: str | None, expected: object, says: str
) -> None:
    g = given(health=health, read_token=read_token)
    assert outcome(running.await_health(g, space()), g) == expected
    assert says in ready_message(g)


def test_ready_always_decides() -> None:
    g = given()
    assert outcome(running.ready(g, space()), g) == (None, Reason.SANDBOX_READY)
    assert running.ready(g, space())[1] is None  # nothing to look at until something changes
