"""Sleep time, spend while asleep, and what agent pods need for a private Space's edge: the core alone."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from sandbox_operator.api import AgentSessionSpec, Phase
from sandbox_operator.core.conditions import AGENT_ACCESS
from sandbox_operator.core.lifecycle import decide
from sandbox_operator.core.model import (
    UNBILLED_STAGES,
    Observation,
    PublishHubToken,
    RequestHardware,
    RestartSpace,
    SetSleepTime,
)
from sandbox_operator.core.money import accrue_spend, sleep_time_for
from sandbox_operator.core.steps.running import NO_EDGE_TOKEN
from sandbox_operator.k8s.lease import LeaseSettings
from tests.support.core import (
    CONFIG,
    HEALTHY,
    NOW,
    RECORDED,
    SANDBOX,
    SPACE_ID,
    TRUSTED,
    paid,
    ready,
    space,
)
from tests.support.core import (
    new_session as session,
)

APPROVED = {"hardware": "a10g-small", "approval": {"hardware": "a10g-small", "approvedBy": "boss"}}
PRICES = {"a10g-small": 1.0, "cpu-basic": 0.0}


def condition(plan_status: object, type_: str) -> tuple[str, str]:
    found = next(c for c in plan_status.conditions if c.type == type_)  # type: ignore[attr-defined]
    return found.status, found.reason


# Sleep time ----------------------------------------------------------------------------------------


def test_every_paid_hardware_request_carries_a_sleep_time() -> None:
    observed = Observation(**TRUSTED, space=space(), token="t", connection_url=SANDBOX, health=HEALTHY)
    plan = decide(session(APPROVED, RECORDED), observed, CONFIG, NOW)
    assert plan.action == RequestHardware(SPACE_ID, "a10g-small", CONFIG.sleep_time_default)


def test_the_sessions_sleep_time_is_sent_capped_at_the_operators_maximum() -> None:
    observed = Observation(**TRUSTED, space=space(), token="t", connection_url=SANDBOX, health=HEALTHY)
    plan = decide(session({**APPROVED, "sleepTimeSeconds": 600}, RECORDED), observed, CONFIG, NOW)
    assert plan.action == RequestHardware(SPACE_ID, "a10g-small", 600)
    huge = AgentSessionSpec.model_validate({**APPROVED, "sleepTimeSeconds": 10**7})
    assert sleep_time_for(huge, CONFIG) == CONFIG.sleep_time_max


def test_free_hardware_gets_no_sleep_time_the_hub_fixes_it() -> None:
    spec = {**APPROVED, "hardware": "cpu-basic"}
    observed = Observation(**TRUSTED, space=paid(), token="t", connection_url=SANDBOX, health=HEALTHY)
    plan = decide(session(spec, RECORDED), observed, CONFIG, NOW)
    assert plan.action == RequestHardware(SPACE_ID, "cpu-basic", None)


def test_sleep_times_below_a_minute_are_rejected_by_the_schema() -> None:
    with pytest.raises(ValueError):
        AgentSessionSpec.model_validate({"sleepTimeSeconds": 5})


def test_paid_space_without_the_sessions_sleep_time_gets_it() -> None:
    observed = Observation(
        **TRUSTED, space=replace(paid(), sleep_time=None), token="t", connection_url=SANDBOX, health=HEALTHY
    )
    plan = decide(session(APPROVED, RECORDED), observed, CONFIG, NOW)
    assert plan.action == SetSleepTime(SPACE_ID, CONFIG.sleep_time_default)
    shorter = session({**APPROVED, "sleepTimeSeconds": 900}, RECORDED)
    changed = decide(shorter, replace(observed, space=paid()), CONFIG, NOW)
    assert changed.action == SetSleepTime(SPACE_ID, 900)


# Asleep: not a failure, not woken, not billed -------------------------------------------------------


def asleep() -> Observation:
    return Observation(
        **TRUSTED, space=space("SLEEPING", None, "a10g-small"), token="t", connection_url=SANDBOX
    )


def test_a_sleeping_space_stays_ready_and_is_not_woken() -> None:
    plan = decide(session(APPROVED, RECORDED), asleep(), CONFIG, NOW)
    assert plan.action is None
    assert not isinstance(plan.action, RestartSpace)
    assert ready(plan.status) == ("True", "SandboxSleeping")
    assert plan.status.phase == Phase.SLEEPING
    assert plan.status.failures is None
    # Woken by an agent, it bills again: looked at as often as spend is accrued.
    assert plan.requeue_after == CONFIG.spend_interval


def test_a_sleeping_space_on_free_hardware_is_converged() -> None:
    observed = replace(asleep(), space=space("SLEEPING", None, "cpu-basic"))
    assert decide(session(status=RECORDED), observed, CONFIG, NOW).converged


@pytest.mark.parametrize("stage", sorted(UNBILLED_STAGES))
def test_no_spend_accrues_while_asleep_paused_or_stopped(stage: str) -> None:
    running = accrue_spend(None, paid(), CONFIG, PRICES, None, NOW)
    assert running.usd_per_hour == 1.0
    # Even if the Hub still names the paid flavor as current while the Space is not running.
    idle = replace(paid(), stage=stage)
    after_an_hour = accrue_spend(running, idle, CONFIG, PRICES, None, NOW + timedelta(hours=1))
    assert after_an_hour.estimated_usd == pytest.approx(1.0)  # the hour it ran
    assert after_an_hour.usd_per_hour == 0.0
    later = accrue_spend(after_an_hour, idle, CONFIG, PRICES, None, NOW + timedelta(hours=5))
    assert later.estimated_usd == pytest.approx(1.0)


def test_health_is_never_checked_while_asleep() -> None:
    """The controller checks health only in RUNNING (a request would wake the Space)."""
    plan = decide(session(APPROVED, RECORDED), replace(asleep(), health=None), CONFIG, NOW)
    assert ready(plan.status) == ("True", "SandboxSleeping")


# Agent access to a private Space's edge ---------------------------------------------------------------


def test_private_session_without_a_read_token_says_agents_will_not_pass_the_edge() -> None:
    observed = Observation(**TRUSTED, space=space(), token="t", connection_url=SANDBOX, health=HEALTHY)
    plan = decide(session(status=RECORDED), observed, CONFIG, NOW)
    assert condition(plan.status, AGENT_ACCESS) == ("False", "NoReadToken")
    assert ready(plan.status) == ("True", "SandboxReady")  # the sandbox itself is fine


def test_without_a_read_token_a_private_sandbox_is_not_health_checked_with_the_operators_token() -> None:
    """The shell makes no health check then (health None); the core says why, and it is not Ready."""
    observed = Observation(**TRUSTED, space=space(), token="t", connection_url=SANDBOX)
    plan = decide(session(status=RECORDED), observed, CONFIG, NOW)
    assert ready(plan.status) == ("False", "HealthCheckFailing")
    assert NO_EDGE_TOKEN in next(c.message for c in plan.status.conditions if c.type == "Ready")


def test_the_read_token_is_published_for_agent_pods() -> None:
    observed = Observation(
        **TRUSTED, space=space(), token="t", connection_url=SANDBOX, health=HEALTHY, read_token="hf_read"
    )
    plan = decide(session(status=RECORDED), observed, CONFIG, NOW)
    assert plan.action == PublishHubToken("hf_read")
    published = decide(
        session(status=RECORDED), replace(observed, connection_hub_token="hf_read"), CONFIG, NOW
    )
    assert published.converged
    assert condition(published.status, AGENT_ACCESS) == ("True", "ReadTokenPublished")


def test_a_read_token_taken_away_is_removed_from_the_connection_secret() -> None:
    observed = Observation(
        **TRUSTED,
        space=space(),
        token="t",
        connection_url=SANDBOX,
        health=HEALTHY,
        connection_hub_token="hf_old",
    )
    assert decide(session(status=RECORDED), observed, CONFIG, NOW).action == PublishHubToken("")


def test_a_public_space_needs_no_hub_token() -> None:
    observed = Observation(
        **TRUSTED, space=space(), token="t", connection_url=SANDBOX, health=HEALTHY, read_token="hf_read"
    )
    plan = decide(session({"private": False}, RECORDED), observed, CONFIG, NOW)
    assert plan.converged
    assert condition(plan.status, AGENT_ACCESS) == ("True", "PublicSpace")


def test_an_unreadable_session_token_secret_is_named() -> None:
    observed = Observation(
        **TRUSTED,
        space=space(),
        token="t",
        connection_url=SANDBOX,
        health=HEALTHY,
        read_token_problem="spec.hubTokenSecretRef: Secret team-a/x does not exist",
    )
    plan = decide(session(status=RECORDED), observed, CONFIG, NOW)
    assert condition(plan.status, AGENT_ACCESS) == ("False", "ReadTokenSecretNotFound")


# No Hub request outlives the lease ------------------------------------------------------------------


def test_a_hub_timeout_that_cannot_fit_in_the_lease_is_refused() -> None:
    lease = LeaseSettings("sandbox-operator", "sandbox-operator", "me")
    lease.check_hub_timeout(CONFIG.hub_timeout)  # the defaults fit
    with pytest.raises(ValueError, match="does not fit"):
        lease.check_hub_timeout(lease.renew_deadline)


def test_run_refuses_a_hub_timeout_that_cannot_fit_before_acting() -> None:
    from click.testing import CliRunner

    from sandbox_operator.cli.main import main

    result = CliRunner().invoke(
        main, ["run", "--default-template", "t/t", "--hub-timeout", "30"], env={"KUBECONFIG": "/nonexistent"}
    )
    assert result.exit_code == 2
    assert "does not fit in the leader Lease's renew deadline" in result.output
