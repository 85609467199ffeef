"""Money: whether paid hardware is approved (`judge_hardware`), the flavor the Space should run on,
the spend estimate and budget, and the sleep time of paid hardware.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sandbox_operator.api import AgentSessionSpec, Approval, Hardware, Spend, parse_rfc3339
from sandbox_operator.config.settings import OperatorConfig
from sandbox_operator.core.conditions import Reason, rfc3339
from sandbox_operator.core.fixes import HOW_TO_FIX
from sandbox_operator.core.model import UNBILLED_STAGES, SpaceView


def sleep_time_for(spec: AgentSessionSpec, config: OperatorConfig) -> int:
    """The sleep time of paid hardware: the session's, else the operator's default, at most its maximum."""
    wanted = spec.sleep_time_seconds if spec.sleep_time_seconds is not None else config.sleep_time_default
    return min(wanted, config.sleep_time_max)


def is_free(flavor: str, config: OperatorConfig) -> bool:
    return flavor in config.free_hardware


def free_flavor(current: str | None, config: OperatorConfig) -> str:
    """The free flavor to fall back to: the current one if it is free, else cpu-basic."""
    if current is not None and is_free(current, config):
        return current
    return Hardware.CPU_BASIC.value


@dataclass(frozen=True)
class HardwareVerdict:
    """Whether spec.hardware may be requested from the Hub, and why, for the HardwareApproved condition."""

    approved: bool
    reason: Reason
    message: str


def usd(amount: float) -> str:
    """Dollars and cents, and below a dollar the fractions of a cent that tell small amounts apart
    (a $0.0133 spend is past a $0.01 budget, not equal to it)."""
    finer = f"{amount:.4f}".rstrip("0")
    if abs(amount) >= 1 or len(finer.split(".")[1]) <= 2:
        return f"${amount:,.2f}"
    return f"${finer}"


#: An approval that names the flavor but is not trusted (yet): re-checked every approval_recheck_interval.
UNTRUSTED_APPROVAL_REASONS = frozenset({Reason.APPROVAL_NOT_ENFORCED, Reason.APPROVER_NOT_AUTHORIZED})
#: Said in logs and conditions whenever approvals are trusted without the admission policy.
INSECURE_TRUST_WARNING = (
    "approvals are trusted without checking the admission policy or the approver "
    "(--insecure-trust-approvals): any session editor can approve paid hardware; never use this in production"
)


def judge_hardware(
    spec: AgentSessionSpec,
    config: OperatorConfig,
    prices: Mapping[str, float],
    *,
    policy_problem: str | None,
    approver_authorized: bool | None,
) -> HardwareVerdict:
    """Free flavors pass; a paid one needs an approval naming it, or a standing budget covering its
    price, within the operator's limits. Nothing else can make the operator spend money.

    An approval counts only while the API server enforces the approval policy (`policy_problem`
    None: else `approvedBy` is free text) and a SubjectAccessReview confirms the approver may
    still approve it here (`approver_authorized`), unless the operator runs with
    `insecure_trust_approvals` (development only)."""
    wanted = str(spec.hardware)
    if is_free(wanted, config):
        return HardwareVerdict(True, Reason.FREE_HARDWARE, f"{wanted} needs no approval")
    price = prices.get(wanted)
    priced = f"{wanted} ({usd(price)}/h)" if price is not None else wanted
    approval = spec.approval
    if approval is None:
        return HardwareVerdict(
            False,
            Reason.AWAITING_APPROVAL,
            f"{priced} is paid hardware; it is requested once an approver sets spec.approval",
        )
    refusal = (
        _not_covered(approval, wanted, price, priced)
        or _over_limits(approval, price, priced, config)
        or _not_trusted(approval, priced, config, policy_problem, approver_authorized)
    )
    if refusal is not None:
        return refusal
    reason = f": {approval.reason}" if approval.reason else ""
    budget = f", budget {usd(approval.budget_usd)}" if approval.budget_usd is not None else ""
    warning = f"; WARNING: {INSECURE_TRUST_WARNING}" if config.insecure_trust_approvals else ""
    return HardwareVerdict(
        True, Reason.APPROVED, f"{priced} approved by {approval.approved_by}{budget}{reason}{warning}"
    )


def _not_covered(approval: Approval, wanted: str, price: float | None, priced: str) -> HardwareVerdict | None:
    """An approval covers the flavor it names, or one whose price its maxUsdPerHour covers."""
    if approval.hardware is not None and str(approval.hardware) != wanted:
        return HardwareVerdict(
            False,
            Reason.AWAITING_APPROVAL,
            f"the approval names {approval.hardware} but spec.hardware is {wanted}; an approval is for one "
            f"flavor: approve {wanted}, or set spec.hardware back to {approval.hardware}",
        )
    limit = approval.max_usd_per_hour or 0.0
    if approval.hardware is None and (price is None or price > limit):
        return HardwareVerdict(
            False,
            Reason.AWAITING_APPROVAL,
            f"{priced} is above the approved maxUsdPerHour of {usd(limit)}; approve it by name",
        )
    return None


def _over_limits(
    approval: Approval, price: float | None, priced: str, config: OperatorConfig
) -> HardwareVerdict | None:
    """The operator's own ceilings on an hourly price and on a budget bind every approval."""
    ceiling = config.max_usd_per_hour
    if ceiling is not None and ((price or 0.0) > ceiling or (approval.max_usd_per_hour or 0.0) > ceiling):
        return HardwareVerdict(
            False,
            Reason.APPROVAL_EXCEEDS_LIMIT,
            f"this operator allows approvals up to {usd(ceiling)}/h; {priced} exceeds it",
        )
    if config.max_budget_usd is not None and (approval.budget_usd or float("inf")) > config.max_budget_usd:
        return HardwareVerdict(
            False,
            Reason.APPROVAL_EXCEEDS_LIMIT,
            f"this operator requires spec.approval.budgetUsd of at most {usd(config.max_budget_usd)}",
        )
    return None


def _not_trusted(
    approval: Approval,
    priced: str,
    config: OperatorConfig,
    policy_problem: str | None,
    approver_authorized: bool | None,
) -> HardwareVerdict | None:
    """An approval is trusted only while the policy is enforced and its approver's right is confirmed."""
    if config.insecure_trust_approvals:
        return None
    if policy_problem is not None:
        return HardwareVerdict(
            False,
            Reason.APPROVAL_NOT_ENFORCED,
            f"{priced} is not requested: approvals cannot be trusted because {policy_problem}, so anyone "
            f"who may edit this session could have written spec.approval; {HOW_TO_FIX}",
        )
    if approver_authorized is True:
        return None
    scope = f"hardware/{approval.hardware}" if approval.hardware is not None else "every hardware flavor"
    groups = f" (groups {', '.join(approval.approver_groups)})" if approval.approver_groups else ""
    said = "was not confirmed yet" if approver_authorized is None else "was denied by a SubjectAccessReview"
    return HardwareVerdict(
        False,
        Reason.APPROVER_NOT_AUTHORIZED,
        f"{priced} is not requested: the approver {approval.approved_by}{groups} needs the verb "
        f'"approve" on {scope} in this namespace, and that {said} (a revoked role, or rights held '
        "through a group that spec.approval.approverGroups does not name); an approver must approve "
        "again",
    )


def budget_exhausted(spec: AgentSessionSpec, spend: Spend | None) -> bool:
    """Whether the budget is spent, counting what the switch back to free hardware will still bill."""
    budget = spec.approval.budget_usd if spec.approval else None
    return budget is not None and spend is not None and spend.estimated_usd + spend.switch_back_usd >= budget


def target_hardware(
    spec: AgentSessionSpec,
    space: SpaceView | None,
    config: OperatorConfig,
    verdict: HardwareVerdict,
    exhausted: bool,
) -> str:
    """The flavor the Space should run on now: the request if free or approved and within budget;
    otherwise the free flavor (or the current one if it is free). Never unapproved paid hardware."""
    wanted = str(spec.hardware)
    if is_free(wanted, config) or (verdict.approved and not exhausted):
        return wanted
    return free_flavor(space.current_hardware if space else None, config)


def accrue_spend(
    previous: Spend | None,
    space: SpaceView,
    config: OperatorConfig,
    prices: Mapping[str, float],
    budget: float | None,
    now: datetime,
) -> Spend:
    """Add the time since the last observation at the rate then observed; start the new rate now.

    Time the operator was down is charged too, since the Space kept running meanwhile. A Space
    asleep, paused or stopped is billed nothing, whatever hardware it holds. While nothing is billed
    and nothing changes, the spend stays as it was (its time too): a free session's status is not
    written again on every observation for a figure that cannot move.
    """
    current = space.current_hardware
    if current is None or is_free(current, config) or space.stage in UNBILLED_STAGES:
        rate = 0.0
    else:
        rate = prices.get(current, 0.0)
    switching = _switching_onto_paid(space, config)
    if (
        previous is not None
        and previous.usd_per_hour == rate == 0.0
        and previous.budget_usd == budget
        and (previous.switch_start_time is not None) == switching
    ):
        return previous
    spent = previous.estimated_usd if previous else 0.0
    if previous is not None and previous.last_observed_time is not None:
        elapsed = max(0.0, (now - parse_rfc3339(previous.last_observed_time)).total_seconds())
        spent += previous.usd_per_hour * elapsed / 3600
    started = previous.switch_start_time if previous else None
    switch_back = previous.switch_back_usd if previous else 0.0
    if started is not None and not switching and rate > 0:
        # From our look at the switch under way to this one: the Hub's switch and our delay in seeing
        # it end (unbilled by this estimate, billed by the Hub), both of which a switch back costs; to
        # the second above, for the moments between a request and the look after it.
        took = math.ceil((now - parse_rfc3339(started)).total_seconds())
        switch_back = round(rate * took / 3600, 6)
    return Spend.model_validate(
        {
            "estimatedUsd": round(spent, 6),
            "usdPerHour": rate,
            "budgetUsd": budget,
            "lastObservedTime": rfc3339(now, precise=True),
            "switchStartTime": (started or rfc3339(now, precise=True)) if switching else None,
            "switchBackUsd": switch_back,
        }
    )


def _switching_onto_paid(space: SpaceView, config: OperatorConfig) -> bool:
    """The Hub is moving the Space onto paid hardware: its bill starts when the switch completes."""
    requested = space.requested_hardware
    return requested is not None and requested != space.current_hardware and not is_free(requested, config)


def switch_back_note(spend: Spend | None) -> str:
    """What the spend counts besides the estimate so far, said beside it."""
    if spend is None or not spend.switch_back_usd:
        return ""
    return f" plus {usd(spend.switch_back_usd)} for the switch back to free hardware"


def spend_recheck_delay(spend: Spend, config: OperatorConfig) -> float | None:
    """While on paid hardware, come back to accrue spend, and exactly when the budget runs out (the
    switch back's bill counted)."""
    if spend.usd_per_hour <= 0:
        return None
    delay = config.spend_interval
    if spend.budget_usd is not None:
        remaining = max(0.0, spend.budget_usd - spend.estimated_usd - spend.switch_back_usd)
        delay = min(delay, remaining / spend.usd_per_hour * 3600)
    return max(delay, 0.5)
