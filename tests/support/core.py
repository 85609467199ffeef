"""Fixtures of the decision core's unit tests: one session, its Space, the operator's defaults.

Plain values, so every test drives `decide` without a server, a clock or randomness.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from sandbox_operator.api import AgentSessionSpec, AgentSessionStatus
from sandbox_operator.config.settings import OperatorConfig
from sandbox_operator.core.model import HealthResult, Observation, Session, SpaceView

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
UID = "0b0e5a4e-1111-2222-3333-444455556666"
SPACE_ID = f"agents/ags-{UID}"
SANDBOX = "http://hub/_sandbox/agents/x"
SPACE_URL = f"http://hub/spaces/{SPACE_ID}"
#: The operator's settings in these tests (owner `acme` allowed besides the default one).
CONFIG = OperatorConfig(
    default_owner="agents",
    default_template="templates/agent-sandbox",
    cluster_id="c1",
    allowed_owners=frozenset({"acme"}),
)
#: What the controller observes where the approval policy is enforced and the approver may approve.
TRUSTED: dict[str, Any] = {"policy_problem": None, "approver_authorized": True}
#: What the operator has recorded once the Space was seen.
RECORDED = {"spaceId": SPACE_ID, "connectionSecret": "demo-sandbox", "url": SPACE_URL}
HEALTHY = HealthResult(True, "200 OK")


def new_session(
    spec: dict[str, Any] | None = None, status: dict[str, Any] | None = None, **fields: Any
) -> Session:
    """The session `team-a/demo` with this spec and status; `fields` sets the others (generation,
    deleting, created...)."""
    return Session(
        **{
            "name": "demo",
            "namespace": "team-a",
            "uid": UID,
            "generation": 1,
            "spec": AgentSessionSpec.model_validate(spec or {}),
            "status": AgentSessionStatus.model_validate(status or {}),
            **fields,
        }
    )


def space(
    stage: str = "RUNNING", current: str | None = "cpu-basic", requested: str | None = "cpu-basic"
) -> SpaceView:
    """The session's private Space as the Hub shows it."""
    return SpaceView(SPACE_ID, stage, current, requested, True, SPACE_URL, SANDBOX, UID)


def paid(current: str = "a10g-small") -> SpaceView:
    """Running on `current` with the sleep time the operator sends by default."""
    return replace(space("RUNNING", current, current), sleep_time=CONFIG.sleep_time_default)


#: The Hub's prices in these tests (USD per hour).
PRICES = {"a10g-small": 1.0, "t4-small": 0.4}


def observed(on: SpaceView | None = None, **extra: Any) -> Observation:
    """A running, healthy Space (cpu-basic unless `on` says otherwise), where approvals are trusted."""
    fields: dict[str, Any] = {
        **TRUSTED,
        "space": on or space(),
        "token": "t",
        "connection_url": SANDBOX,
        "health": HEALTHY,
        "read_token": "r",
        "connection_hub_token": "r",
        "prices": PRICES,
        **extra,
    }
    return Observation(**fields)


def ready(plan_status: AgentSessionStatus) -> tuple[str, str]:
    """The Ready condition's status and reason."""
    condition = next(c for c in plan_status.conditions if c.type == "Ready")
    return condition.status, condition.reason
