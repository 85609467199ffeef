"""Lifetimes, pause and idle, decided by the core alone (core/lifetime.py through `decide`), on a
clock the test moves by hand."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from sandbox_operator.api import AgentSessionSpec, Phase
from sandbox_operator.config.settings import OperatorConfig
from sandbox_operator.core.conditions import EXPIRING, Reason, Severity, rfc3339
from sandbox_operator.core.lifecycle import decide
from sandbox_operator.core.lifetime import lifetime_problem, resume_command
from sandbox_operator.core.model import (
    DeleteSession,
    DeletionObservation,
    FailureKind,
    HealthResult,
    HubFailure,
    Observation,
    PauseSpace,
    Plan,
    PublishPause,
    RestartSpace,
    Session,
)
from sandbox_operator.core.money import accrue_spend
from sandbox_operator.k8s.client import KubeClient
from sandbox_operator.k8s.transport import ApiError, KubeApi
from tests.support.clock import ManualClock
from tests.support.core import CONFIG, HEALTHY, NOW, RECORDED, SANDBOX, SPACE_ID, TRUSTED, paid, ready, space
from tests.support.core import new_session as plain_session

HOUR = 3600.0


class Clock(ManualClock):
    """The manual clock, read as the time the core decides at."""

    def at(self) -> datetime:
        return datetime.fromtimestamp(self(), UTC)

    def advance(self, seconds: float) -> datetime:
        self.now += seconds
        return self.at()


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW.timestamp())


def ready_status(since: datetime = NOW, **status: Any) -> dict[str, Any]:
    """A session that has been Ready since `since`."""
    condition = {
        "type": "Ready",
        "status": "True",
        "reason": "SandboxReady",
        "message": "ready",
        "lastTransitionTime": rfc3339(since),
    }
    return {**RECORDED, "phase": "Ready", "conditions": [condition], **status}


def session(spec: dict[str, Any] | None = None, status: dict[str, Any] | None = None) -> Session:
    """`team-a/demo`, created at NOW."""
    return replace(plain_session(spec, status if status is not None else ready_status()), created=NOW)


def observed(**fields: Any) -> Observation:
    """A running, healthy Space whose connection Secret is up to date."""
    defaults: dict[str, Any] = {"space": space(), "token": "t", "connection_url": SANDBOX, "health": HEALTHY}
    return Observation(**TRUSTED, **{**defaults, **fields})


def expiring(plan: Plan) -> tuple[str, str]:
    found = next(c for c in plan.status.conditions if c.type == EXPIRING)
    return found.status, found.reason


def then(previous: Session, plan: Plan) -> Session:
    """The session as the next pass reads it: the plan's status written."""
    return replace(previous, status=plan.status)


# Lifetimes -----------------------------------------------------------------------------------------


def test_a_ttl_is_warned_of_once_then_the_session_is_deleted_on_time(clock: Clock) -> None:
    demo = session({"lifetime": {"ttlSeconds": 1200}})
    plan = decide(demo, observed(), CONFIG, clock.at())
    assert plan.status.expires_at == rfc3339(NOW + timedelta(seconds=1200))
    assert EXPIRING not in {c.type for c in plan.status.conditions}
    assert not [e for e in plan.events if e.reason.startswith("Lifetime")]
    assert plan.action is None and plan.requeue_after == 1200 - CONFIG.lifetime_warning

    demo = then(demo, plan)
    plan = decide(demo, observed(), CONFIG, clock.advance(1200 - CONFIG.lifetime_warning))
    assert expiring(plan) == ("True", Reason.LIFETIME_ENDING)
    warnings = [e for e in plan.events if e.reason == Reason.LIFETIME_ENDING]
    assert [e.type for e in warnings] == [Severity.WARNING]
    assert (
        "spec.lifetime" in warnings[0].message
        and rfc3339(NOW + timedelta(seconds=1200)) in warnings[0].message
    )
    assert plan.requeue_after == CONFIG.lifetime_warning

    demo = then(demo, plan)
    plan = decide(demo, observed(), CONFIG, clock.advance(300))
    assert not [e for e in plan.events if e.reason == Reason.LIFETIME_ENDING]  # warned once
    plan = decide(then(demo, plan), observed(), CONFIG, clock.advance(300))
    assert plan.action == DeleteSession(Reason.LIFETIME_EXPIRED)
    assert expiring(plan) == ("True", Reason.LIFETIME_EXPIRED)
    assert [e.reason for e in plan.events] == [Reason.LIFETIME_EXPIRED]


def test_expires_at_is_the_lifetime_from_creation_and_the_default_applies_without_one(clock: Clock) -> None:
    plan = decide(
        session({"lifetime": {"expiresAt": "2026-11-26T14:00:00Z"}}), observed(), CONFIG, clock.at()
    )
    assert plan.status.expires_at == "2026-11-26T14:00:00Z"
    plan = decide(session(), observed(), CONFIG, clock.at())
    assert plan.status.expires_at == rfc3339(NOW + timedelta(seconds=CONFIG.lifetime_default))
    unlimited = CONFIG.model_copy(update={"lifetime_default": 0, "lifetime_max": 0})
    plan = decide(session(), observed(), unlimited, clock.at())
    assert plan.status.expires_at is None
    assert EXPIRING not in {c.type for c in plan.status.conditions}


def test_an_expiry_in_the_past_deletes_at_once_even_while_the_hub_fails(clock: Clock) -> None:
    demo = replace(
        session({"lifetime": {"expiresAt": "2026-11-26T11:00:00Z"}}), created=NOW - timedelta(hours=2)
    )
    failing = observed(space=None, hub_failure=HubFailure(FailureKind.UNAVAILABLE, "503"))
    plan = decide(demo, failing, CONFIG, clock.at())
    assert plan.action == DeleteSession(Reason.LIFETIME_EXPIRED)
    message = next(c.message for c in plan.status.conditions if c.type == EXPIRING)
    assert message == (
        "deleting the session at the end of its lifetime (spec.lifetime.expiresAt 2026-11-26T11:00:00Z)"
    )


def test_an_expiry_before_the_creation_is_a_typo_not_an_order_to_delete() -> None:
    typo = AgentSessionSpec.model_validate({"lifetime": {"expiresAt": "2020-01-01T00:00:00Z"}})
    problem = lifetime_problem(typo, NOW)
    assert problem == (
        "spec.lifetime.expiresAt: 2020-01-01T00:00:00Z is before the session was created "
        "(2026-11-26T12:00:00Z), a lifetime that ended before it began; set a later time, or ttlSeconds"
    )
    later = AgentSessionSpec.model_validate({"lifetime": {"expiresAt": "2026-11-26T12:30:00Z"}})
    assert lifetime_problem(later, NOW) is None and lifetime_problem(typo, None) is None
    # The shell reads it as a spec that cannot be acted on: nothing is created, nothing is deleted.
    plan = decide(replace(session({}, {}), spec_problem=problem), observed(space=None), CONFIG, NOW)
    assert plan.action is None
    assert (plan.status.phase, ready_reason(plan)) == (Phase.FAILED, "SpecInvalid")


def test_no_lifetime_outlives_the_operators_maximum_age(clock: Clock) -> None:
    demo = session({"lifetime": {"ttlSeconds": 30 * 86400}})
    plan = decide(demo, observed(), CONFIG, clock.at())
    assert plan.status.expires_at == rfc3339(NOW + timedelta(seconds=CONFIG.lifetime_max))
    # Paused, the lifetime stops running out, the maximum age does not.
    paused = session(
        {"lifetime": {"ttlSeconds": 30 * 86400}, "paused": True, "idle": {"retentionSeconds": 0}}
    )
    plan = decide(paused, observed(space=space("PAUSED", None)), CONFIG, clock.advance(CONFIG.lifetime_max))
    assert plan.action == DeleteSession(Reason.LIFETIME_EXPIRED)
    assert "maximum age" in next(c.message for c in plan.status.conditions if c.type == EXPIRING)


def test_paused_time_does_not_count_against_the_lifetime_unless_configured(clock: Clock) -> None:
    spec = {"lifetime": {"ttlSeconds": int(HOUR)}}
    demo = session(spec)
    demo = then(demo, decide(demo, observed(), CONFIG, clock.at()))
    # Paused after 10 minutes, for 20 minutes.
    demo = replace(demo, spec=AgentSessionSpec.model_validate({**spec, "paused": True}))
    plan = decide(demo, observed(space=space("PAUSED", None)), CONFIG, clock.advance(600))
    assert plan.status.paused_since == rfc3339(clock.at(), precise=True)
    # While paused only the retention and the maximum age run.
    retention_end = clock.at() + timedelta(seconds=CONFIG.idle_retention)
    assert plan.status.expires_at == rfc3339(retention_end)
    demo = replace(then(demo, plan), spec=AgentSessionSpec.model_validate(spec))
    plan = decide(demo, observed(space=space("PAUSED", None)), CONFIG, clock.advance(1200))
    assert plan.status.paused_since is None and plan.status.paused_seconds == 1200
    assert plan.status.expires_at == rfc3339(NOW + timedelta(seconds=HOUR + 1200))

    counting = CONFIG.model_copy(update={"lifetime_counts_paused": True})
    assert decide(demo, observed(), counting, clock.at()).status.expires_at == rfc3339(
        NOW + timedelta(seconds=HOUR)
    )


def test_a_deadline_after_the_next_resync_is_left_to_it(clock: Clock) -> None:
    plan = decide(session({"lifetime": {"ttlSeconds": 86400}}), observed(), CONFIG, clock.at())
    assert plan.requeue_after is None  # the loop's resync (every 1800 s) comes first


# Pause ---------------------------------------------------------------------------------------------


def test_a_paused_session_pauses_its_space_says_so_and_waits(clock: Clock) -> None:
    demo = session({"paused": True})
    plan = decide(demo, observed(), CONFIG, clock.at())
    assert plan.action == PauseSpace(SPACE_ID)
    assert ready(plan.status) == ("False", Reason.PAUSING) and plan.status.phase == Phase.PAUSED
    since = plan.status.paused_since
    assert since == rfc3339(NOW, precise=True) and plan.status.paused_by == "User"

    demo = then(demo, plan)
    stopped = observed(space=space("PAUSED", None))
    plan = decide(demo, stopped, CONFIG, clock.advance(1))
    assert plan.action == PublishPause(since, resume_command(demo))
    assert "spec" in plan.action.resume and "paused" in plan.action.resume

    plan = decide(then(demo, plan), replace(stopped, connection_paused_since=since), CONFIG, clock.at())
    assert plan.action is None
    # Ready: where its spec puts it, so GitOps tools do not wait on it; the reason says it is paused.
    assert ready(plan.status) == ("True", Reason.PAUSED) and plan.status.phase == Phase.PAUSED
    message = next(c.message for c in plan.status.conditions if c.type == "Ready")
    assert since in message and resume_command(demo) in message
    assert Reason.PAUSED.severity is Severity.NORMAL and Reason.IDLE_PAUSED.severity is Severity.NORMAL


def test_unpausing_restarts_the_space_and_clears_the_connection_secret(clock: Clock) -> None:
    since = rfc3339(NOW, precise=True)
    demo = session({}, ready_status(pausedSince=since, pausedBy="User", phase="Paused"))
    stopped = observed(space=space("PAUSED", None), connection_paused_since=since)
    plan = decide(demo, stopped, CONFIG, clock.advance(300))
    assert plan.action == PublishPause("", "")
    assert plan.status.paused_since is None and plan.status.paused_seconds == 300
    plan = decide(then(demo, plan), replace(stopped, connection_paused_since=None), CONFIG, clock.at())
    assert plan.action == RestartSpace(SPACE_ID)


def test_paid_hardware_paused_accrues_no_spend_and_needs_no_restart_to_stay_within_budget(
    clock: Clock,
) -> None:
    spent = accrue_spend(None, replace(paid(), stage="PAUSED"), CONFIG, {"a10g-small": 1.0}, 5.0, clock.at())
    later = accrue_spend(spent, replace(paid(), stage="PAUSED"), CONFIG, {"a10g-small": 1.0}, 5.0,
                         clock.advance(10 * HOUR))  # fmt: skip
    assert later.estimated_usd == 0 and later.usd_per_hour == 0


# Idle ----------------------------------------------------------------------------------------------

IDLE = {"idle": {"pauseAfterSeconds": 900}}


def used_at(moment: datetime) -> HealthResult:
    return HealthResult(True, "200 OK", 200, last_activity=moment)


def test_an_unused_sandbox_is_paused_after_its_idle_time(clock: Clock) -> None:
    demo = session(IDLE)
    plan = decide(demo, observed(health=used_at(NOW)), CONFIG, clock.advance(600))
    assert plan.action is None and plan.requeue_after == 300
    assert plan.status.idle_since == rfc3339(NOW)

    plan = decide(then(demo, plan), observed(health=used_at(NOW)), CONFIG, clock.advance(300))
    assert plan.action == PauseSpace(SPACE_ID, for_idle=True)
    assert plan.status.paused_by == "Idle" and plan.status.paused_since == rfc3339(clock.at(), precise=True)
    assert ready(plan.status) == ("False", Reason.IDLE_PAUSED)
    assert "pauseAfterSeconds" in plan.message and resume_command(demo) in plan.message


def test_use_postpones_the_idle_pause_and_no_policy_means_none(clock: Clock) -> None:
    plan = decide(
        session(IDLE), observed(health=used_at(NOW + timedelta(seconds=800))), CONFIG, clock.advance(900)
    )
    assert plan.action is None and plan.requeue_after == 800
    plan = decide(session(), observed(health=used_at(NOW)), CONFIG, clock.advance(10 * HOUR))
    assert plan.action is None and plan.status.idle_since is None


def test_idleness_counts_from_when_the_session_became_ready(clock: Clock) -> None:
    resumed = NOW + timedelta(seconds=3000)
    demo = session(IDLE, ready_status(since=resumed))
    plan = decide(demo, observed(health=used_at(NOW)), CONFIG, clock.advance(3600))
    assert plan.action is None and plan.status.idle_since == rfc3339(resumed)


def test_an_asleep_space_is_idle_for_at_least_its_sleep_time(clock: Clock) -> None:
    asleep = observed(space=replace(paid(), stage="SLEEPING", current_hardware=None), health=None)
    spec = {"hardware": "a10g-small", "approval": {"hardware": "a10g-small", "approvedBy": "boss"}}
    plan = decide(session({**spec, **IDLE}), asleep, CONFIG, clock.advance(2 * HOUR))
    assert plan.action == PauseSpace(SPACE_ID, for_idle=True)  # asleep after 3600 s idle > 900 s

    long_idle = {**spec, "idle": {"pauseAfterSeconds": 7200}}
    demo = session(long_idle)
    plan = decide(demo, asleep, CONFIG, clock.at())
    first_seen = clock.at() - timedelta(seconds=CONFIG.sleep_time_default)
    assert plan.action is None and plan.status.idle_since == rfc3339(first_seen)
    plan = decide(then(demo, plan), asleep, CONFIG, clock.advance(3600))
    assert plan.action == PauseSpace(SPACE_ID, for_idle=True)


def test_an_idle_paused_session_says_so(clock: Clock) -> None:
    since = rfc3339(NOW, precise=True)
    demo = session({"paused": True, **IDLE}, ready_status(pausedSince=since, pausedBy="Idle"))
    stopped = observed(space=space("PAUSED", None), connection_paused_since=since)
    plan = decide(demo, stopped, CONFIG, clock.advance(60))
    assert plan.action is None and ready(plan.status) == ("True", Reason.IDLE_PAUSED)


# Retention -----------------------------------------------------------------------------------------


def test_a_paused_session_is_deleted_after_its_retention_with_a_warning_first(clock: Clock) -> None:
    since = rfc3339(NOW, precise=True)
    demo = session({"paused": True, "idle": {"retentionSeconds": 3600}}, ready_status(pausedSince=since))
    stopped = observed(space=space("PAUSED", None), connection_paused_since=since)
    plan = decide(demo, stopped, CONFIG, clock.advance(3000))
    assert expiring(plan) == ("True", Reason.RETENTION_ENDING)
    warning = next(e for e in plan.events if e.reason == Reason.RETENTION_ENDING)
    assert warning.type == Severity.WARNING and resume_command(demo) in warning.message
    plan = decide(then(demo, plan), stopped, CONFIG, clock.advance(600))
    assert plan.action == DeleteSession(Reason.RETENTION_EXPIRED)


def test_retention_zero_keeps_a_paused_session(clock: Clock) -> None:
    since = rfc3339(NOW, precise=True)
    config = CONFIG.model_copy(update={"lifetime_max": 0})
    demo = session({"paused": True, "idle": {"retentionSeconds": 0}}, ready_status(pausedSince=since))
    plan = decide(demo, observed(space=space("PAUSED", None), connection_paused_since=since), config,
                  clock.advance(365 * 86400))  # fmt: skip
    assert plan.action is None and plan.status.expires_at is None


# The API and the options ---------------------------------------------------------------------------


def test_a_lifetime_names_exactly_one_of_ttl_and_expiry() -> None:
    for wrong in ({}, {"ttlSeconds": 5, "expiresAt": "2026-11-26T14:00:00Z"}):
        with pytest.raises(ValueError, match="exactly one of ttlSeconds"):
            AgentSessionSpec.model_validate({"lifetime": wrong})
    naive = AgentSessionSpec.model_validate({"lifetime": {"expiresAt": "2026-11-26T14:00:00"}})
    assert naive.lifetime is not None and naive.lifetime.expires_at == datetime(2026, 11, 26, 14, tzinfo=UTC)


def test_the_default_lifetime_fits_the_maximum() -> None:
    with pytest.raises(ValueError, match="lifetime_default"):
        OperatorConfig(lifetime_default=10, lifetime_max=5)
    assert OperatorConfig(lifetime_default=10, lifetime_max=0).lifetime_default == 10


# The shell's one deletion ---------------------------------------------------------------------------


class RecordingCustomObjects:
    """Stands in for KubeApi: records deletions, answers `status`."""

    def __init__(self, status: int | None = None) -> None:
        self.status = status
        self.deleted: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    async def delete_namespaced_custom_object(self, *args: Any, **kwargs: Any) -> None:
        self.deleted.append((args, kwargs))
        if self.status is not None:
            raise ApiError(self.status, "refused")


@pytest.mark.parametrize("answer", [None, 404, 409])
def test_an_expired_session_is_deleted_by_its_uid_never_a_same_named_successor(answer: int | None) -> None:
    recorder = RecordingCustomObjects(answer)
    kube = KubeClient(cast(KubeApi, recorder))
    asyncio.run(kube.delete_session("team-a", "demo", "uid-1"))  # gone already, or a successor: fine
    ((args, kwargs),) = recorder.deleted
    assert args[-2:] == ("agentsessions", "demo") and args[2] == "team-a"
    assert kwargs["body"] == {"preconditions": {"uid": "uid-1"}}


def ready_reason(plan: Plan) -> str:
    return next(c.reason for c in plan.status.conditions if c.type == "Ready")


def test_deleting_a_session_that_never_asked_for_a_space_says_none_was_created() -> None:
    never = session({}, {"conditions": []})
    plan = decide(never, DeletionObservation(), CONFIG, NOW)
    assert plan.done and [note.message for note in plan.events] == ["no Space was ever created"]
    plan = decide(session(), DeletionObservation(), CONFIG, NOW)
    assert [note.message for note in plan.events] == [f"Space {SPACE_ID} is deleted"]


def test_a_lifetime_past_the_operators_maximum_says_so_at_once(clock: Clock) -> None:
    demo = session({"lifetime": {"ttlSeconds": 30 * 86400}})
    plan = decide(demo, observed(), CONFIG, clock.at())
    assert expiring(plan) == ("False", Reason.LIFETIME_CAPPED)
    message = next(c.message for c in plan.status.conditions if c.type == EXPIRING)
    assert message == (
        "spec.lifetime (2592000s of unpaused time from creation) ends after the operator's maximum age of a "
        f"session ({CONFIG.lifetime_max}s, --lifetime-max), so the session is deleted at "
        f"{plan.status.expires_at}"
    )
    assert [note.reason for note in plan.events if note.reason == Reason.LIFETIME_CAPPED] == [
        "LifetimeCapped"
    ]
    # Within the maximum: nothing to say until the warning.
    plan = decide(session({"lifetime": {"ttlSeconds": 7200}}), observed(), CONFIG, clock.at())
    assert EXPIRING not in {c.type for c in plan.status.conditions}
