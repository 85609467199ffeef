"""A budget's switch back to free hardware leaves early enough for the Hub's bill to end within it: paid
hardware bills until the Hub completes the switch, and the core counts that time as the switch onto it
took, from its look at the switch under way to the look that saw it done."""

from __future__ import annotations

from datetime import timedelta

import pytest

from sandbox_operator.api import AgentSessionSpec, Spend
from sandbox_operator.core.conditions import rfc3339
from sandbox_operator.core.lifecycle import decide
from sandbox_operator.core.model import RequestHardware
from sandbox_operator.core.money import accrue_spend, budget_exhausted, spend_recheck_delay
from tests.support.core import CONFIG, NOW, PRICES, RECORDED, new_session, observed, paid, space

APPROVAL = {"hardware": "a10g-small", "approvedBy": "alice"}
#: Five seconds of a10g-small ($1/h).
FIVE_SECONDS = round(5 / 3600, 6)


def spend(estimated: float, rate: float, switch_back: float = 0.0) -> Spend:
    return Spend.model_validate(
        {
            "estimatedUsd": estimated,
            "usdPerHour": rate,
            "budgetUsd": 0.02,
            "lastObservedTime": rfc3339(NOW, precise=True),
            "switchBackUsd": switch_back,
        }
    )


def budget_spec(budget: float = 0.02) -> AgentSessionSpec:
    return AgentSessionSpec.model_validate(
        {"hardware": "a10g-small", "approval": {**APPROVAL, "budgetUsd": budget}}
    )


def test_the_switch_onto_paid_hardware_is_timed_from_the_look_that_saw_it_under_way() -> None:
    switching = space("RUNNING_APP_STARTING", "cpu-basic", "a10g-small")
    seen = accrue_spend(None, switching, CONFIG, PRICES, 0.02, NOW)
    assert seen.switch_start_time == rfc3339(NOW, precise=True) and seen.usd_per_hour == 0.0
    later = accrue_spend(seen, switching, CONFIG, PRICES, 0.02, NOW + timedelta(seconds=2))
    assert later is seen  # nothing billed, nothing changed: not written again
    done = accrue_spend(later, paid(), CONFIG, PRICES, 0.02, NOW + timedelta(seconds=4.2))
    assert done.switch_start_time is None and done.usd_per_hour == 1.0
    assert done.switch_back_usd == FIVE_SECONDS and done.estimated_usd == 0.0  # to the second above
    on = accrue_spend(done, paid(), CONFIG, PRICES, 0.02, NOW + timedelta(seconds=64.2))
    assert on.switch_back_usd == FIVE_SECONDS and on.estimated_usd == pytest.approx(60 / 3600, abs=1e-6)


@pytest.mark.parametrize(
    ("estimated", "rate", "switch_back", "budget", "exhausted", "delay"),
    [
        # No switch timed yet: the budget runs out when the estimate reaches it ($0.005 at $1/h: 18 s).
        (0.015, 1.0, 0.0, 0.02, False, 18.0),
        # A 5 s switch: the switch back leaves 5 s earlier.
        (0.015, 1.0, FIVE_SECONDS, 0.02, False, 13.0),
        (0.0187, 1.0, FIVE_SECONDS, 0.02, True, 0.5),
        # Back on free hardware: the budget stays spent (no switch up again for what is left).
        (0.0195, 0.0, FIVE_SECONDS, 0.02, True, None),
        # Until an approver raises it.
        (0.0195, 0.0, FIVE_SECONDS, 0.05, False, None),
    ],
)
def test_the_budget_counts_the_switch_back(
    estimated: float, rate: float, switch_back: float, budget: float, exhausted: bool, delay: float | None
) -> None:
    current = spend(estimated, rate, switch_back).model_copy(update={"budget_usd": budget})
    assert budget_exhausted(budget_spec(budget), current) is exhausted
    found = spend_recheck_delay(current, CONFIG)
    assert found == (pytest.approx(delay, abs=0.01) if delay is not None else None)


def test_the_switch_back_is_asked_for_when_what_is_left_pays_for_it() -> None:
    """$0.005 left at $1/h with a 5 s switch: the session looks again in 13 s and switches back then."""
    recorded = spend(0.015, 1.0, FIVE_SECONDS).model_dump(by_alias=True, mode="json")
    session = new_session(
        budget_spec().model_dump(by_alias=True, mode="json"), {**RECORDED, "spend": recorded}
    )
    plan = decide(session, observed(paid()), CONFIG, NOW)
    assert plan.action is None and plan.deadline == pytest.approx(13.0, abs=0.01)
    spent = decide(session, observed(paid()), CONFIG, NOW + timedelta(seconds=13))
    assert isinstance(spent.action, RequestHardware) and spent.action.flavor == "cpu-basic"
    message = next(c.message for c in spent.status.conditions if c.type == "BudgetExhausted")
    assert "plus $0.0014 for the switch back to free hardware reached the budget of $0.02" in message
