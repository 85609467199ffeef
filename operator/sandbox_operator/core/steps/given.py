"""What every step of a live session's chain reads, what it decides, and the helpers steps share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, wraps

from sandbox_operator.api import Phase
from sandbox_operator.config.settings import OperatorConfig
from sandbox_operator.core.conditions import Reason
from sandbox_operator.core.draft import Draft, record_failure
from sandbox_operator.core.model import Action, Observation, Session, SpaceView
from sandbox_operator.core.money import is_free, sleep_time_for, target_hardware

#: A step's decision: the action (None: none) and the delay before the session is looked at again
#: (None: only when something changes).
Decision = tuple[Action | None, float | None]


@dataclass
class Given:
    """One pass's input to every step: the draft a step writes its status into, and the observation."""

    draft: Draft
    observed: Observation
    config: OperatorConfig
    jitter: float

    @property
    def space_id(self) -> str:
        """The Space's name: every step after `record_intent` has one."""
        assert self.draft.status.space_id is not None, "a step after record_intent needs status.spaceId"
        return self.draft.status.space_id

    @cached_property
    def target(self) -> str:
        """The flavor the Space should run on now, whatever it runs on."""
        draft = self.draft
        spec = draft.session.spec
        return target_hardware(spec, self.observed.space, self.config, draft.verdict, draft.exhausted)

    @cached_property
    def sleep_time(self) -> int | None:
        """The sleep time paid hardware gets; None on free hardware."""
        if is_free(self.target, self.config):
            return None
        return sleep_time_for(self.draft.session.spec, self.config)

    def fail(self, reason: Reason, message: str, minimum: float = 0.0) -> float:
        """A failed try: Failed, with its backoff; returns the delay before the next."""
        self.draft.status.phase = Phase.FAILED
        return record_failure(self.draft, reason, message, self.config, self.jitter, minimum)

    def fail_on(self, reason: Reason, problem: str | None) -> Decision | None:
        """A failed try, no action, when there is a problem; passes when there is none."""
        return None if problem is None else (None, self.fail(reason, problem))


Step = Callable[[Given], Decision | None]
#: A step about the Space the Hub shows.
SpaceStep = Callable[[Given, SpaceView], Decision | None]


def without_space(step: Step) -> Step:
    """The step applies only while the Hub shows no Space."""

    @wraps(step)
    def only_without_space(given: Given) -> Decision | None:
        return step(given) if given.observed.space is None else None

    return only_without_space


def with_space(step: SpaceStep) -> Step:
    """The step applies only to a Space the Hub shows."""

    @wraps(step)
    def only_with_space(given: Given) -> Decision | None:
        space = given.observed.space
        return step(given, space) if space is not None else None

    return only_with_space


def switching_phase(target: str, config: OperatorConfig) -> Phase:
    """The phase of a hardware switch, named by where it goes: up to paid hardware, or back down."""
    return Phase.DOWNGRADING if is_free(target, config) else Phase.UPGRADING


def published_hub_token(session: Session, observed: Observation) -> str:
    """What the connection Secret's hubToken should be: the read token for a private Space, else none."""
    return (observed.read_token or "") if session.spec.private else ""
