"""The next step of a live session, as an ordered chain of named steps (cert-manager's certificate
policy chain is the model): each looks at the session and what was observed, and either decides (an
action, or none, and when to look again) or passes to the next. `STEPS` is the order; the first
decision wins, and the last step always decides.
"""

from __future__ import annotations

from sandbox_operator.config.settings import OperatorConfig
from sandbox_operator.core.draft import Draft
from sandbox_operator.core.model import Observation
from sandbox_operator.core.steps import creating, running
from sandbox_operator.core.steps.given import Decision, Given, Step, with_space, without_space

#: The whole chain, in order: the first step that decides wins.
STEPS: list[Step] = [
    creating.refuse_before_intent,
    creating.connection_secret_conflict,
    creating.record_intent,
    creating.await_own_duplicate,
    creating.hub_failure,
    without_space(creating.await_duplicate_landing),
    without_space(creating.secrets_missing),
    without_space(creating.record_intent_again),
    without_space(creating.refuse_creation),
    without_space(creating.create_space),
    with_space(running.adopt_space),
    with_space(running.give_up_disallowed_paid),
    with_space(running.migrate_marker),
    with_space(running.pause),
    with_space(running.rotate_lost_token),
    with_space(running.publish_connection),
    with_space(running.publish_hub_token),
    with_space(running.restart_failed_space),
    with_space(running.asleep),
    with_space(running.restart_stopped_space),
    with_space(running.await_start),
    with_space(running.request_target_hardware),
    with_space(running.await_hardware_switch),
    with_space(running.set_sleep_time),
    with_space(running.rotate_rejected_token),
    with_space(running.await_health),
    with_space(running.ready),
]


def next_step(draft: Draft, observed: Observation, config: OperatorConfig, jitter: float) -> Decision:
    """The decision of the first step in `STEPS` that decides."""
    given = Given(draft, observed, config, jitter)
    for step in STEPS:
        decision = step(given)
        if decision is not None:
            return decision
    raise AssertionError("the chain ends in a step that always decides")
