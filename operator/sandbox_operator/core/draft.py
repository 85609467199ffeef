"""A status under construction for one decision, and what every branch of a decision shares: a failed
try with its backoff, the poll of a session that waits, and giving up paid hardware.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sandbox_operator.api import AgentSessionStatus, HardwareStatus, parse_rfc3339
from sandbox_operator.config.settings import OperatorConfig
from sandbox_operator.core import receipts
from sandbox_operator.core.conditions import READY, EventNote, Reason, condition_of, rfc3339, set_condition
from sandbox_operator.core.model import FailureKind, HubFailure, RequestHardware, Session
from sandbox_operator.core.money import HardwareVerdict, free_flavor, is_free

#: While a session stays starting or unhealthy, the poll delay is this fraction of the time it has
#: not been Ready: polls thin out geometrically (x1.25 each), up to `waiting_poll_max`.
WAITING_BACKOFF_FRACTION = 0.25


def backoff_delay(failures: int, config: OperatorConfig, jitter: float) -> float:
    """Exponential backoff with +-20% jitter (jitter in [0, 1)), so many sessions do not retry in step."""
    base = min(config.backoff_max, config.backoff_base * (2.0 ** max(0, failures - 1)))
    return round(base * (0.8 + 0.4 * jitter), 3)


def waiting_delay(status: AgentSessionStatus, config: OperatorConfig, now: datetime) -> float:
    """The next poll of a session that is starting or unhealthy: a share of the time it has not been
    Ready (the Ready condition's lastTransitionTime), so a stuck session does not eat the Hub budget."""
    ready = condition_of(status, READY)
    held = 0.0
    if ready is not None and ready.status != "True":
        held = max(0.0, (now - parse_rfc3339(ready.last_transition_time)).total_seconds())
    return max(config.poll_interval, min(config.waiting_poll_max, held * WAITING_BACKOFF_FRACTION))


def sooner(requeue: float | None, other: float | None) -> float | None:
    """The earlier of two requeue delays; None is never."""
    return other if requeue is None else requeue if other is None else min(requeue, other)


@dataclass
class Draft:
    """A status under construction for one decision."""

    session: Session
    now: datetime
    status: AgentSessionStatus
    verdict: HardwareVerdict
    failed: bool = False
    exhausted: bool = False
    #: Events of this decision besides the conditions' transitions (a receipt).
    notes: list[EventNote] = field(default_factory=list)

    def condition(self, type_: str, status: str, reason: Reason, message: str) -> None:
        self.status.conditions = set_condition(
            self.status.conditions, type_, status, reason, message, self.session.generation, self.now
        )

    def ready(self, status: str, reason: Reason, message: str) -> None:
        self.condition(READY, status, reason, message)

    def clear_failures(self) -> None:
        """No failure this time: the count of tries (and its next retry) starts again."""
        self.status.failures = None
        self.status.next_retry_time = None


def record_failure(
    draft: Draft, reason: Reason, message: str, config: OperatorConfig, jitter: float, minimum: float = 0.0
) -> float:
    """Record a failed reconcile; returns the delay before the next try."""
    failures = (draft.status.failures or 0) + 1
    delay = max(minimum, backoff_delay(failures, config, jitter))
    draft.failed = True
    retry_at = draft.now + timedelta(seconds=delay)
    draft.status.failures = failures
    draft.status.next_retry_time = rfc3339(retry_at)
    draft.ready(
        "False", reason, f"{message} (attempt {failures}; next try in {delay:.0f}s at {rfc3339(retry_at)})"
    )
    return delay


def hub_failure_delay(failure: HubFailure, config: OperatorConfig) -> float:
    """The least wait after a Hub failure: what a rate limit asks, longer for credentials."""
    if failure.kind is FailureKind.RATE_LIMITED and failure.retry_after is not None:
        return float(failure.retry_after)
    if failure.kind in (FailureKind.UNAUTHORIZED, FailureKind.FORBIDDEN):
        return config.credentials_backoff_min
    return 0.0


def give_up_paid(
    draft: Draft, ended_by: str, config: OperatorConfig, *, record: bool
) -> RequestHardware | None:
    """Free hardware for a Space whose last known flavor is paid (when no observation of it is at
    hand): the request, and the receipt of the paid stretch in progress. `record`: the status says
    the free flavor was requested (it is written only once it was)."""
    status = draft.status
    held = receipts.held_flavor(status)
    if status.space_id is None or held is None or is_free(held, config):
        return None
    current = status.hardware.current if status.hardware is not None else None
    free = free_flavor(current, config)
    receipt = receipts.close_now(status, ended_by, draft.now)
    draft.notes += [receipt] if receipt is not None else []
    if record:
        status.hardware = HardwareStatus(current=current, requested=free)
    return RequestHardware(status.space_id, free)
