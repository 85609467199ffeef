"""Receipts of paid hardware: the paid stretch in progress (opened when the Hub shows paid hardware,
or inherited from a version that recorded none), why it ended, and what it cost, kept in status and
posted as an Event so the bill outlives the Space.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from sandbox_operator.api import (
    MAX_RECEIPTS,
    AgentSessionSpec,
    AgentSessionStatus,
    PaidPeriod,
    Receipt,
    Spend,
    parse_rfc3339,
)
from sandbox_operator.config.settings import OperatorConfig
from sandbox_operator.core.conditions import HARDWARE_APPROVED, EventNote, Reason, condition_of, rfc3339
from sandbox_operator.core.money import HardwareVerdict, is_free, usd
from sandbox_operator.core.prices import FALLBACK_USD_PER_HOUR

#: Why a receipt's stretch of paid hardware ended, when no verdict names it.
ENDED_DOWNGRADED = "Downgraded"
ENDED_HARDWARE_CHANGED = "HardwareChanged"
ENDED_PAUSED = "Paused"
ENDED_APPROVAL_WITHDRAWN = "ApprovalWithdrawn"
ENDED_SESSION_DELETED = "SessionDeleted"


def inherited_period(
    status: AgentSessionStatus, current: str | None, config: OperatorConfig
) -> PaidPeriod | None:
    """The paid stretch in progress that a version without paid periods (0.1.0) left unrecorded, from
    what its status holds; None for any status this version wrote (it opens the period in the write
    that first shows paid hardware, and a closed one leaves a receipt).

    That version accrued status.spend at the hourly price from its first observation on paid hardware:
    spend over price, back from its last observation, is when the stretch began, if it was the only
    one; an earlier stretch would make that too early, so never before the approval was acted on (the
    HardwareApproved transition to True). The approver is the one that version recorded."""
    spend = status.spend
    recorded = status.hardware.current if status.hardware else None
    if (
        status.paid_period is not None
        or status.receipts
        or current is None
        or is_free(current, config)
        or recorded != current
        or spend is None
        or spend.last_observed_time is None
        or spend.usd_per_hour <= 0
    ):
        return None
    last = parse_rfc3339(spend.last_observed_time)
    start = last - timedelta(hours=spend.estimated_usd / spend.usd_per_hour)
    verdict = condition_of(status, HARDWARE_APPROVED)
    if verdict is not None and (verdict.status, verdict.reason) == ("True", Reason.APPROVED):
        start = max(start, parse_rfc3339(verdict.last_transition_time))
    before = spend.usd_per_hour * (last - start).total_seconds() / 3600
    return PaidPeriod.model_validate(
        {
            "hardware": current,
            "approvedBy": status.approved_by,
            "startTime": rfc3339(start),
            "startUsd": round(max(0.0, spend.estimated_usd - before), 6),
        }
    )


def ending_reason(
    period: PaidPeriod,
    spec: AgentSessionSpec,
    verdict: HardwareVerdict,
    exhausted: bool,
    config: OperatorConfig,
) -> str:
    """Why the paid stretch `period` ended, for its receipt."""
    wanted = str(spec.hardware)
    if is_free(wanted, config):
        return ENDED_DOWNGRADED
    if exhausted:
        return str(Reason.BUDGET_SPENT)
    if not verdict.approved and verdict.reason in (Reason.APPROVAL_EXPIRED, Reason.DENIED):
        return str(verdict.reason)
    if spec.paused:  # the Hub bills nothing while the Space is paused
        return ENDED_PAUSED
    if wanted != period.hardware or verdict.approved:  # another flavor, or the Hub moved it
        return ENDED_HARDWARE_CHANGED
    if spec.approval is None:
        return ENDED_APPROVAL_WITHDRAWN
    return str(verdict.reason)  # e.g. ApproverNotAuthorized: the approver's role was revoked


def close_period(
    status: AgentSessionStatus, prices: Mapping[str, float], ended_by: str, now: datetime
) -> EventNote | None:
    """End the paid stretch in progress: its receipt goes into status (the last MAX_RECEIPTS) and an
    Event, so what it cost outlives the Space."""
    period = status.paid_period
    if period is None:
        return None
    spent = max(0.0, (status.spend.estimated_usd if status.spend else 0.0) - period.start_usd)
    price = prices.get(period.hardware)
    hours = spent / price if price else 0.0
    receipt = Receipt.model_validate(
        {
            "hardware": period.hardware,
            "approvedBy": period.approved_by,
            "startTime": period.start_time,
            "endTime": rfc3339(now),
            "hours": round(hours, 4),
            "estimatedUsd": round(spent, 6),
            "endedBy": ended_by,
        }
    )
    status.receipts = [*(status.receipts or []), receipt][-MAX_RECEIPTS:]
    status.paid_period = None
    by = period.approved_by or "nobody"
    return EventNote(
        Reason.HARDWARE_RECEIPT.severity,
        Reason.HARDWARE_RECEIPT,
        f"{period.hardware} approved by {by}: {billed(hours)} billed, estimated {usd(spent)}, from "
        f"{period.start_time} to {rfc3339(now)} ({ended_by})",
    )


def billed(hours: float) -> str:
    """Time on paid hardware as a person reads it: a 35-second stretch is "35 s", not "0.01 h"."""
    seconds = hours * 3600
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{hours:.2f} h"


def spend_until(spend: Spend | None, now: datetime) -> Spend | None:
    """Spend brought up to `now` at the rate last observed (for a session whose Space is not observed)."""
    if spend is None or spend.last_observed_time is None:
        return spend
    elapsed = max(0.0, (now - parse_rfc3339(spend.last_observed_time)).total_seconds())
    total = round(spend.estimated_usd + spend.usd_per_hour * elapsed / 3600, 6)
    return spend.model_copy(update={"estimated_usd": total, "last_observed_time": rfc3339(now, precise=True)})


def close_now(status: AgentSessionStatus, ended_by: str, now: datetime) -> EventNote | None:
    """End the paid stretch now, without a new look at the Space (the session is being deleted, or the
    operator gives the hardware up after a failed pass): spend counted up to now at the last rate (its
    hours at that rate too; the published price if it was asleep)."""
    period = status.paid_period
    if period is None:
        return None
    status.spend = spend_until(status.spend, now)
    rate = status.spend.usd_per_hour if status.spend else 0.0
    prices = {**FALLBACK_USD_PER_HOUR, **({period.hardware: rate} if rate > 0 else {})}
    return close_period(status, prices, ended_by, now)


def close_for_deletion(status: AgentSessionStatus, now: datetime) -> EventNote | None:
    """A session being deleted ends its paid stretch now."""
    return close_now(status, ENDED_SESSION_DELETED, now)


def held_flavor(status: AgentSessionStatus) -> str | None:
    """The flavor the Space held when last observed: the one requested, else the one it ran on."""
    hardware = status.hardware
    return (hardware.requested or hardware.current) if hardware is not None else None


def track_paid_period(
    status: AgentSessionStatus,
    current: str | None,
    prices: Mapping[str, float],
    config: OperatorConfig,
    now: datetime,
    ended_by: Callable[[PaidPeriod], str],
) -> list[EventNote]:
    """Close the paid stretch when the Hub shows the Space on another flavor (its receipt, the Event
    returned; `ended_by` says why it ended), and open one when it shows paid hardware."""
    notes = []
    period = status.paid_period
    if period is not None and current != period.hardware:
        note = close_period(status, prices, ended_by(period), now)
        notes += [note] if note else []
    if current is not None and not is_free(current, config) and status.paid_period is None:
        status.paid_period = PaidPeriod.model_validate(
            {
                "hardware": current,
                "approvedBy": status.approved_by,
                "startTime": rfc3339(now),
                "startUsd": status.spend.estimated_usd if status.spend else 0.0,
            }
        )
    return notes
