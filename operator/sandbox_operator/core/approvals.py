"""The approver's side of paid hardware: denials, approvals that expire, what waits for an approver,
the soft budget warning, and receipts of what each stretch of paid hardware cost.

`judge_request` wraps `money.judge_hardware` (a denial of the requested flavor wins over any approval;
an approval past its expiry no longer counts); `keep_books` brings the status facts that outlive a
single decision up to date (the approval's expiry clock, the pending request, the paid stretch in
progress and its receipt) and says which Events that posts. Pure: the controller gathers the inputs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from sandbox_operator.api import (
    MAX_RECEIPTS,
    AgentSessionSpec,
    AgentSessionStatus,
    ApprovalRecord,
    PaidPeriod,
    PendingApproval,
    Receipt,
    Spend,
    parse_rfc3339,
    shifted,
)
from sandbox_operator.config.settings import OperatorConfig
from sandbox_operator.core.conditions import (
    BUDGET_WARNING,
    HARDWARE_APPROVED,
    EventNote,
    Reason,
    condition_of,
    rfc3339,
    set_condition,
)
from sandbox_operator.core.model import Session, SpaceView
from sandbox_operator.core.money import HardwareVerdict, budget_exhausted, is_free, judge_hardware, usd
from sandbox_operator.core.prices import FALLBACK_USD_PER_HOUR

#: Said of an approval inherited from 0.1.0 that this version's review of its approver does not confirm.
INHERITED_NOTE = (
    "inherited from sandbox-operator 0.1.0, which acted on it but recorded no approverGroups: trusted for "
    "this flavor until spec.approval or spec.hardware changes (re-approve with `sandbox-operator approve` "
    "to have the approver's groups checked)"
)
#: Why a receipt's stretch of paid hardware ended, when no verdict names it.
ENDED_DOWNGRADED = "Downgraded"
ENDED_HARDWARE_CHANGED = "HardwareChanged"
ENDED_PAUSED = "Paused"
ENDED_APPROVAL_WITHDRAWN = "ApprovalWithdrawn"
ENDED_SESSION_DELETED = "SessionDeleted"


def fingerprint(spec: AgentSessionSpec) -> str | None:
    """A digest of spec.approval: any change to it (only an approver can make one) is a new approval."""
    if spec.approval is None:
        return None
    body = json.dumps(spec.approval.model_dump(by_alias=True, mode="json"), sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def approval_record(
    spec: AgentSessionSpec, previous: ApprovalRecord | None, config: OperatorConfig, now: datetime
) -> ApprovalRecord | None:
    """The approval as first seen, with its effective expiry: its own expiresAt, or sooner by the
    operator's maximum duration counted from when the operator first saw it. The clock restarts only
    when the approval changes, so toggling spec.hardware cannot stretch it. An inherited approval
    (see `inherited_record`) stops being one for good once spec.hardware leaves its flavor."""
    digest = fingerprint(spec)
    if spec.approval is None or digest is None:
        return None
    if previous is not None and previous.fingerprint == digest:
        inherited = previous.inherited_hardware
        if inherited is not None and inherited != str(spec.hardware):
            return previous.model_copy(update={"inherited_hardware": None})
        return previous
    return _record(spec, digest, config, now)


def _record(
    spec: AgentSessionSpec, digest: str, config: OperatorConfig, seen: datetime, inherited: str | None = None
) -> ApprovalRecord:
    assert spec.approval is not None
    ends = [parse_rfc3339(spec.approval.expires_at)] if spec.approval.expires_at else []
    if config.max_approval_duration is not None:
        ends.append(seen + timedelta(seconds=config.max_approval_duration))
    return ApprovalRecord.model_validate(
        {
            "approvedBy": spec.approval.approved_by,
            "fingerprint": digest,
            "seenTime": rfc3339(seen),
            "expiresAt": rfc3339(min(ends)) if ends else None,
            "inheritedHardware": inherited,
        }
    )


def inherited_record(
    session: Session, policy_since: str | None, config: OperatorConfig
) -> ApprovalRecord | None:
    """The record of an approval the previous operator version (0.1.0) acted on, for a session whose
    status that version wrote last; None unless every fact below holds.

    0.1.0 recorded no spec.approval.approverGroups, so an approver whose rights come through a group
    fails this version's SubjectAccessReview of `approvedBy` alone; and who is in which group is known
    only to the authenticator, never to the operator, so no review can say it afterwards. Only the
    admission check that let the approval in saw those groups. So the approval is inherited when:
    - the status, which only the operator writes (status subresource), shows that version's verdict
      `Approved` on the paid flavor asked for, by `approvedBy`, at the current metadata.generation (the
      API server counts every spec change: nothing in the spec moved since), and no record of this
      version (it writes one whenever spec.approval is set);
    - an admission policy and its binding (`policy_since`) existed before that verdict turned True,
      so the approval was written through it: 0.1.0 acted on approvals without one (installed from its
      CRD alone, any session editor could have written them), and those are not inherited.
    It then counts for that flavor only, while this version's policy is enforced (as every approval):
    a change to spec.approval (only an approver can make one) or to spec.hardware (any session editor
    can) ends the inheritance, and the approval is judged as any other. A role revoked since is not
    seen while it lasts: removing spec.approval, a denial or a new approval ends it. Its first sight
    is when that version first judged it approved (the condition's transition)."""
    spec, status = session.spec, session.status
    approval = spec.approval
    verdict = condition_of(status, HARDWARE_APPROVED)
    if (
        approval is None
        or approval.approver_groups
        or status.approval is not None
        or is_free(str(spec.hardware), config)
        or status.approved_by != approval.approved_by
        or verdict is None
        or (verdict.status, verdict.reason) != ("True", Reason.APPROVED)
        or verdict.observed_generation != session.generation
        or policy_since is None
        or parse_rfc3339(policy_since) > parse_rfc3339(verdict.last_transition_time)
    ):
        return None
    digest = fingerprint(spec)
    assert digest is not None
    seen = parse_rfc3339(verdict.last_transition_time)
    return _record(spec, digest, config, seen, inherited=str(spec.hardware))


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


def _expires(record: ApprovalRecord | None) -> datetime | None:
    return parse_rfc3339(record.expires_at) if record is not None and record.expires_at else None


def judge_request(
    spec: AgentSessionSpec,
    config: OperatorConfig,
    prices: Mapping[str, float],
    record: ApprovalRecord | None,
    now: datetime,
    *,
    policy_problem: str | None,
    approver_authorized: bool | None,
    denier_authorized: bool | None,
) -> HardwareVerdict:
    """`judge_hardware`, plus: a denial of the requested flavor wins over any approval, and an approval
    past its (effective) expiry no longer counts.

    A denial counts while the admission policy is enforced (else anyone could have written it) unless a
    SubjectAccessReview says its author may not approve that flavor here (`denier_authorized` False);
    an unanswered review still counts it, since a denial never spends money."""
    wanted = str(spec.hardware)
    denial = spec.denial
    if not is_free(wanted, config) and denial is not None and str(denial.hardware) == wanted:
        trusted = policy_problem is None and denier_authorized is not False
        if trusted or config.insecure_trust_approvals:
            when = f" at {denial.denied_at}" if denial.denied_at else ""
            return HardwareVerdict(
                False,
                Reason.DENIED,
                f"{wanted} was denied by {denial.denied_by}{when}: {denial.reason}; it is not requested "
                "again until spec.hardware names another flavor, or an approver removes spec.denial "
                "(`approve` does)",
            )
    inherited = record is not None and record.inherited_hardware == wanted
    verdict = judge_hardware(
        spec,
        config,
        prices,
        policy_problem=policy_problem,
        approver_authorized=True if inherited else approver_authorized,
    )
    if inherited and verdict.approved and approver_authorized is not True:
        verdict = replace(verdict, message=f"{verdict.message}; {INHERITED_NOTE}")
    expires = _expires(record)
    if verdict.reason != Reason.APPROVED or expires is None:
        return verdict
    if now >= expires:
        who = spec.approval.approved_by if spec.approval else "its approver"
        return HardwareVerdict(
            False,
            Reason.APPROVAL_EXPIRED,
            f"the approval of {wanted} by {who} expired at {rfc3339(expires)}; the Space is back on free "
            "hardware until an approver approves it again",
        )
    return replace(verdict, message=f"{verdict.message} (until {rfc3339(expires)})")


def pending_approval(
    previous: PendingApproval | None,
    spec: AgentSessionSpec,
    verdict: HardwareVerdict,
    prices: Mapping[str, float],
    config: OperatorConfig,
    now: datetime,
) -> tuple[PendingApproval | None, list[EventNote]]:
    """The paid flavor waiting for an approver (not one an approver denied), since when, and who asked;
    an Event when a flavor starts waiting, so a team can alert on it."""
    wanted = str(spec.hardware)
    if is_free(wanted, config) or verdict.approved or verdict.reason == Reason.DENIED:
        return None, []
    price = prices.get(wanted)
    same = previous is not None and previous.hardware == wanted and previous.requested_time is not None
    pending = PendingApproval.model_validate(
        {
            "hardware": wanted,
            "usdPerHour": price,
            "requestedBy": spec.requested_by,
            "requestedTime": previous.requested_time if same and previous else rfc3339(now),
        }
    )
    if same:
        return pending, []
    priced = f"{wanted} ({usd(price)}/h)" if price is not None else wanted
    by = f" by {spec.requested_by}" if spec.requested_by else ""
    reason = Reason.APPROVAL_REQUESTED
    note = EventNote(reason.severity, reason, f"{priced} requested{by} waits for an approver")
    return pending, [note]


@dataclass
class Books:
    """What `keep_books` changed besides the status: Events to post, and when to look again."""

    events: list[EventNote] = field(default_factory=list)
    requeue_after: float | None = None

    def wake_in(self, seconds: float) -> None:
        seconds = max(seconds, 0.5)
        self.requeue_after = seconds if self.requeue_after is None else min(self.requeue_after, seconds)


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
        f"{period.hardware} approved by {by}: {hours:.2f} h billed, estimated {usd(spent)}, from "
        f"{period.start_time} to {rfc3339(now)} ({ended_by})",
    )


def spend_until(spend: Spend | None, now: datetime) -> Spend | None:
    """Spend brought up to `now` at the rate last observed (for a session whose Space is not observed)."""
    if spend is None or spend.last_observed_time is None:
        return spend
    elapsed = max(0.0, (now - parse_rfc3339(spend.last_observed_time)).total_seconds())
    total = round(spend.estimated_usd + spend.usd_per_hour * elapsed / 3600, 6)
    return spend.model_copy(update={"estimated_usd": total, "last_observed_time": rfc3339(now, precise=True)})


def keep_books(
    status: AgentSessionStatus,
    spec: AgentSessionSpec,
    generation: int,
    verdict: HardwareVerdict,
    exhausted: bool,
    space: SpaceView | None,
    prices: Mapping[str, float],
    config: OperatorConfig,
    now: datetime,
) -> Books:
    """Update the status facts of this module after spend was accrued: the pending request, the expiry
    notice, the budget warning, and the paid stretch (opened when the Hub shows paid hardware, closed
    with a receipt when it shows anything else)."""
    books = Books()
    status.pending_approval, notes = pending_approval(
        status.pending_approval, spec, verdict, prices, config, now
    )
    books.events += notes

    record = status.approval
    expires = _expires(record)
    if record is not None and expires is not None and verdict.reason == Reason.APPROVED:
        notice_at = shifted(expires, -config.approval_expiry_notice)
        if record.notice_time is None and now >= notice_at:
            status.approval = record.model_copy(update={"notice_time": rfc3339(now)})
            books.events.append(
                EventNote(
                    Reason.APPROVAL_EXPIRING.severity,
                    Reason.APPROVAL_EXPIRING,
                    f"the approval of {spec.hardware} by {record.approved_by} expires at {rfc3339(expires)}; "
                    "the Space then returns to free hardware unless an approver approves again",
                )
            )
        elif record.notice_time is None:
            books.wake_in((notice_at - now).total_seconds())
        books.wake_in((expires - now).total_seconds())

    warn = spec.approval.warn_at_usd if spec.approval else None
    if warn is None:
        status.conditions = [c for c in status.conditions if c.type != BUDGET_WARNING]
    else:
        spent = status.spend.estimated_usd if status.spend else 0.0
        budget = spec.approval.budget_usd if spec.approval else None
        of = f" of the {usd(budget)} budget" if budget is not None else ""
        reached = spent >= warn
        status.conditions = set_condition(
            status.conditions,
            BUDGET_WARNING,
            "True" if reached else "False",
            Reason.BUDGET_NEARLY_SPENT if reached else Reason.BELOW_WARNING,
            f"estimated spend {usd(spent)} {'reached' if reached else 'is below'} the warning at "
            f"{usd(warn)}{of}",
            generation,
            now,
        )

    if space is None:
        return books
    current = space.current_hardware
    paid_now = current is not None and not is_free(current, config)
    period = status.paid_period
    if period is not None and current != period.hardware:
        note = close_period(status, prices, ending_reason(period, spec, verdict, exhausted, config), now)
        books.events += [note] if note else []
    if paid_now and status.paid_period is None:
        status.paid_period = PaidPeriod.model_validate(
            {
                "hardware": current,
                "approvedBy": status.approved_by,
                "startTime": rfc3339(now),
                "startUsd": status.spend.estimated_usd if status.spend else 0.0,
            }
        )
    return books


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


def approval_lapse(
    spec: AgentSessionSpec, status: AgentSessionStatus, config: OperatorConfig, now: datetime
) -> str | None:
    """Why the paid flavor the Space last held may no longer run, judged from the spec and status alone,
    for a pass that failed before it could ask the Hub or the API server (a receipt's endedBy); None
    while it holds free hardware, or the approval the operator last judged approved stands: the same
    one (its fingerprint), for that flavor, not expired, not denied, within its budget."""
    held = held_flavor(status)
    if held is None or is_free(held, config):
        return None
    wanted = str(spec.hardware)
    if is_free(wanted, config):
        return ENDED_DOWNGRADED
    if wanted != held:
        return ENDED_HARDWARE_CHANGED
    if spec.approval is None:
        return ENDED_APPROVAL_WITHDRAWN
    if spec.denial is not None and str(spec.denial.hardware) == held:
        return str(Reason.DENIED)
    record = status.approval
    judged = condition_of(status, HARDWARE_APPROVED)
    if record is None or record.fingerprint != fingerprint(spec) or judged is None or judged.status != "True":
        return str(Reason.NOT_JUDGED)
    expires = _expires(record)
    if expires is not None and now >= expires:
        return str(Reason.APPROVAL_EXPIRED)
    if budget_exhausted(spec, spend_until(status.spend, now)):
        return str(Reason.BUDGET_SPENT)
    return None
