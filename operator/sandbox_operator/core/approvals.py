"""The approver's side of paid hardware: denials, approvals that expire, what waits for an approver,
and the soft budget warning.

`judge_request` wraps `money.judge_hardware` (a denial of the requested flavor wins over any approval;
an approval past its expiry no longer counts); `keep_books` brings the status facts that outlive a
single decision up to date (the approval's expiry clock, the pending request, the paid stretch in
progress and its receipt, `core/receipts.py`) and says which Events that posts. Pure: the controller
gathers the inputs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from sandbox_operator.api import (
    AgentSessionSpec,
    AgentSessionStatus,
    ApprovalRecord,
    PaidPeriod,
    PendingApproval,
    parse_rfc3339,
    shifted,
)
from sandbox_operator.config.settings import OperatorConfig
from sandbox_operator.core import receipts
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

#: Said of an approval inherited from 0.1.0 that this version's review of its approver does not confirm.
INHERITED_NOTE = (
    "inherited from sandbox-operator 0.1.0, which acted on it but recorded no approverGroups: trusted for "
    "this flavor until spec.approval or spec.hardware changes (re-approve with `sandbox-operator approve` "
    "to have the approver's groups checked)"
)


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
    by = f" requested by {spec.requested_by}" if spec.requested_by else ""
    reason = Reason.APPROVAL_REQUESTED
    note = EventNote(reason.severity, reason, f"{priced}{by} waits for an approver")
    return pending, [note]


@dataclass
class Books:
    """What `keep_books` changed besides the status: Events to post, and when to look again."""

    events: list[EventNote] = field(default_factory=list)
    requeue_after: float | None = None

    def wake_in(self, seconds: float) -> None:
        seconds = max(seconds, 0.5)
        self.requeue_after = seconds if self.requeue_after is None else min(self.requeue_after, seconds)


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
    if verdict.reason == Reason.APPROVED:
        _notice_expiry(books, status, spec, config, now)
    _warn_of_budget(status, spec, generation, now)
    if space is not None:

        def ended_by(period: PaidPeriod) -> str:
            return receipts.ending_reason(period, spec, verdict, exhausted, config)

        books.events += receipts.track_paid_period(
            status, space.current_hardware, prices, config, now, ended_by
        )
    return books


def _notice_expiry(
    books: Books, status: AgentSessionStatus, spec: AgentSessionSpec, config: OperatorConfig, now: datetime
) -> None:
    """An approval that expires is noticed once, `approval_expiry_notice` before it does (an Event);
    the books wake for the notice and for the expiry."""
    record = status.approval
    expires = _expires(record)
    if record is None or expires is None:
        return
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


def _warn_of_budget(
    status: AgentSessionStatus, spec: AgentSessionSpec, generation: int, now: datetime
) -> None:
    """The BudgetWarning condition: whether estimated spend reached the approval's warning threshold."""
    warn = spec.approval.warn_at_usd if spec.approval else None
    if warn is None:
        status.conditions = [c for c in status.conditions if c.type != BUDGET_WARNING]
        return
    spent = status.spend.estimated_usd if status.spend else 0.0
    budget = spec.approval.budget_usd if spec.approval else None
    of = f" of the {usd(budget)} budget" if budget is not None else ""
    reached = spent >= warn
    status.conditions = set_condition(
        status.conditions,
        BUDGET_WARNING,
        "True" if reached else "False",
        Reason.BUDGET_NEARLY_SPENT if reached else Reason.BELOW_WARNING,
        f"estimated spend {usd(spent)} {'reached' if reached else 'is below'} the warning at {usd(warn)}{of}",
        generation,
        now,
    )


def approval_lapse(
    spec: AgentSessionSpec, status: AgentSessionStatus, config: OperatorConfig, now: datetime
) -> str | None:
    """Why the paid flavor the Space last held may no longer run, judged from the spec and status alone,
    for a pass that failed before it could ask the Hub or the API server (a receipt's endedBy); None
    while it holds free hardware, or the approval the operator last judged approved stands: the same
    one (its fingerprint), for that flavor, not expired, not denied, within its budget."""
    held = receipts.held_flavor(status)
    if held is None or is_free(held, config):
        return None
    wanted = str(spec.hardware)
    if is_free(wanted, config):
        return receipts.ENDED_DOWNGRADED
    if wanted != held:
        return receipts.ENDED_HARDWARE_CHANGED
    if spec.approval is None:
        return receipts.ENDED_APPROVAL_WITHDRAWN
    if spec.denial is not None and str(spec.denial.hardware) == held:
        return str(Reason.DENIED)
    record = status.approval
    judged = condition_of(status, HARDWARE_APPROVED)
    if record is None or record.fingerprint != fingerprint(spec) or judged is None or judged.status != "True":
        return str(Reason.NOT_JUDGED)
    expires = _expires(record)
    if expires is not None and now >= expires:
        return str(Reason.APPROVAL_EXPIRED)
    if budget_exhausted(spec, receipts.spend_until(status.spend, now)):
        return str(Reason.BUDGET_SPENT)
    return None
