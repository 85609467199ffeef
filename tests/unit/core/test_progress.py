"""Reconciling and Stalled, derived in one place (core/progress.py) at the end of every decision, and
status.observedGeneration with them: what kstatus, Flux and Argo CD read (tests/status reads the same
stages with those tools' code)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from sandbox_operator.api import AgentSessionStatus, Condition, PooledSpace
from sandbox_operator.core import pool as pools
from sandbox_operator.core.conditions import (
    BUDGET_EXHAUSTED,
    HARDWARE_APPROVED,
    READY,
    RECONCILING,
    STALLED,
    Reason,
)
from sandbox_operator.core.lifecycle import decide, decide_failure
from sandbox_operator.core.model import (
    DeleteSession,
    DeletionObservation,
    FailureKind,
    HealthResult,
    HubFailure,
)
from tests.support.core import CONFIG, NOW, RECORDED, UID, new_session, observed, paid, space
from tests.support.stages import APPROVAL, pool_objects, session_objects


def conditions(status: dict[str, Any] | AgentSessionStatus) -> dict[str, tuple[str, str]]:
    listed = status.conditions if isinstance(status, AgentSessionStatus) else status["conditions"]
    found = [c if isinstance(c, Condition) else Condition.model_validate(c) for c in listed]
    return {c.type: (c.status, c.reason) for c in found}


def stage_statuses() -> list[tuple[str, dict[str, Any]]]:
    """Every decided stage of a session and a pool (not the one no decision wrote yet)."""
    stages = [(f"session {k}", v) for k, v in session_objects().items()]
    stages += [(f"pool {k}", v) for k, v in pool_objects().items()]
    return [(name, obj["status"]) for name, obj in stages if "conditions" in obj["status"]]


@pytest.mark.parametrize(("stage", "status"), stage_statuses(), ids=[name for name, _ in stage_statuses()])
def test_every_decision_leaves_ready_reconciling_and_stalled_and_its_generation(
    stage: str, status: dict[str, Any]
) -> None:
    found = conditions(status)
    assert {READY, RECONCILING, STALLED} <= found.keys()
    assert (found[RECONCILING][0], found[STALLED][0]) != ("True", "True")
    assert all(c["observedGeneration"] <= status["observedGeneration"] for c in status["conditions"])


def test_deletion_and_failures_write_the_generation_they_decided_on() -> None:
    behind = replace(new_session({}, {**RECORDED, "observedGeneration": 1}), generation=3)
    deleting = replace(behind, deleting=True)
    for plan in (
        decide(deleting, DeletionObservation(marker=UID, marker_cluster="c1"), CONFIG, NOW),
        decide_failure(deleting, Reason.INTERNAL_ERROR, "boom", CONFIG, NOW),
        decide_failure(behind, Reason.SECRET_INVALID, "not text", CONFIG, NOW),
    ):
        assert plan.status.observed_generation == 3
        assert {c.observed_generation for c in plan.status.conditions} == {3}


@pytest.mark.parametrize("kind", list(FailureKind))
def test_of_the_hub_failures_only_a_missing_template_stalls(kind: FailureKind) -> None:
    seen = observed(None, hub_failure=HubFailure(kind, "the Hub says no"))
    found = conditions(decide(new_session({}, RECORDED), seen, CONFIG, NOW).status)
    stalls = kind is FailureKind.TEMPLATE_NOT_FOUND
    assert found[STALLED][0] == ("True" if stalls else "False")
    assert found[RECONCILING][0] == ("False" if stalls else "True")


def test_a_paused_session_whose_paid_flavor_waits_for_an_approver_is_not_reconciling() -> None:
    since = "2026-11-26T12:00:00.000000Z"
    stopped = observed(space("PAUSED", None), health=None, connection_paused_since=since)
    paused = new_session({"hardware": "a10g-small", "paused": True}, {**RECORDED, "pausedSince": since})
    found = conditions(decide(paused, stopped, CONFIG, NOW).status)
    assert found[HARDWARE_APPROVED] == ("False", Reason.AWAITING_APPROVAL)
    assert (found[READY], found[RECONCILING][0], found[STALLED][0]) == (
        ("True", Reason.PAUSED),
        "False",
        "False",
    )


def test_a_spent_budget_stalls_only_while_a_paid_flavor_is_asked_for() -> None:
    approval = {**APPROVAL, "budgetUsd": 1.0}
    spent = {"spend": {"estimatedUsd": 2.0, "usdPerHour": 1.0, "budgetUsd": 1.0}}
    asked = new_session({"hardware": "a10g-small", "approval": approval}, {**RECORDED, **spent})
    found = conditions(decide(asked, observed(paid()), CONFIG, NOW).status)
    assert found[STALLED] == ("True", Reason.BUDGET_SPENT)
    back = new_session({"approval": approval}, {**RECORDED, **spent})
    found = conditions(decide(back, observed(), CONFIG, NOW).status)
    assert found[BUDGET_EXHAUSTED][0] == "True" and found[STALLED][0] == "False"
    assert found[RECONCILING] == ("False", Reason.SANDBOX_READY)


def test_the_derived_conditions_post_no_events_of_their_own() -> None:
    refused = new_session({"template": "elsewhere/template"})
    plan = decide(refused, observed(None, space=None), CONFIG, NOW)
    assert conditions(plan.status)[STALLED] == ("True", Reason.TEMPLATE_NOT_ALLOWED)
    assert [e.reason for e in plan.events] == [Reason.TEMPLATE_NOT_ALLOWED]


def test_ready_is_unknown_while_no_step_reported_on_the_session() -> None:
    """A session deleted at its very first pass (its lifetime ended while no operator ran)."""
    late = replace(new_session({"lifetime": {"ttlSeconds": 60}}), created=NOW - timedelta(hours=1))
    plan = decide(late, observed(None, space=None), CONFIG, NOW)
    assert plan.action == DeleteSession(Reason.LIFETIME_EXPIRED)
    found = conditions(plan.status)
    assert found[READY] == ("Unknown", Reason.PENDING) and found[RECONCILING] == ("True", Reason.PENDING)


def test_a_warm_claim_is_concluded_like_any_decision() -> None:
    entry = PooledSpace.model_validate(
        {"spaceId": "agents/ags-p1", "state": "Ready", "requestedTime": "2026-11-26T11:00:00Z"}
    )
    healthy = HealthResult(True, "200 OK", 200)
    claimed = pools.claimed_status(
        AgentSessionStatus(), entry, "warm", "demo-sandbox", 2, NOW, "templates/agent-sandbox", healthy
    )
    assert claimed.observed_generation == 2
    assert conditions(claimed)[RECONCILING] == ("False", Reason.WARM_SPACE_CLAIMED)
    assert conditions(claimed)[STALLED] == ("False", Reason.WARM_SPACE_CLAIMED)
