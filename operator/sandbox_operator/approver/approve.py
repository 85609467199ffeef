"""`sandbox-operator approve`: write spec.approval as the caller, with the caller's own identity.

The API server decides whether the caller may approve (the chart's ValidatingAdmissionPolicy);
this only saves approvers from typing their username and from approving the wrong flavor: it writes
the flavor the approver names (or confirms, shown with its price), never whatever the session asks
for by the time it runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from kubernetes import client

from sandbox_operator import api
from sandbox_operator.approver.approvals import (
    CommandError,
    Identity,
    current_identity,
    get_session,
    patch_spec,
)
from sandbox_operator.core.prices import FALLBACK_USD_PER_HOUR


@dataclass(frozen=True)
class ApprovalRequest:
    session: str
    namespace: str
    hardware: str | None
    max_usd_per_hour: float | None
    budget_usd: float | None
    reason: str | None
    #: RFC 3339; the command turns --expires-in into it.
    expires_at: str | None = None
    warn_at_usd: float | None = None


#: The flavors an approval may name: every one but the free cpu-basic.
PAID_FLAVORS = tuple(flavor.value for flavor in api.Hardware if flavor is not api.Hardware.CPU_BASIC)


def _check_expiry(expires_at: str, now: datetime) -> None:
    """A typed end of the approval must be a time, and a future one: a past one would approve nothing."""
    try:
        ends = api.parse_rfc3339(expires_at)
    except ValueError as error:
        raise CommandError(f"--expires-at {expires_at!r} is not an RFC 3339 time: {error}") from error
    if ends <= now:
        raise CommandError(f"--expires-at {expires_at} is in the past (now: {now:%Y-%m-%dT%H:%M:%SZ})")


def price_of(session: Mapping[str, Any], flavor: str) -> float | None:
    """The hourly price to show for `flavor`: the one the operator recorded from the Hub's catalog for the
    request waiting (status.pendingApproval), else the published price."""
    pending = (session.get("status") or {}).get("pendingApproval") or {}
    if pending.get("hardware") == flavor and pending.get("usdPerHour") is not None:
        return float(pending["usdPerHour"])
    return FALLBACK_USD_PER_HOUR.get(flavor)


def priced(flavor: str, price: float | None) -> str:
    """A flavor with its price, as the approver is shown it: `a10g-small ($1.00/h)`."""
    return f"{flavor} (${price:,.2f}/h)" if price is not None else f"{flavor} (price unknown)"


def build_approval(
    request: ApprovalRequest, spec: Mapping[str, Any], identity: Identity, now: datetime
) -> dict[str, Any]:
    """The full spec.approval to write; absent fields are null so a merge patch clears old ones. It names
    the flavor the approver named: the admission policy refuses it, and the operator ignores it, while
    the session asks for another."""
    requested = spec.get("hardware", api.Hardware.CPU_BASIC.value)
    where = f"{request.namespace}/{request.session}"
    hardware = request.hardware
    if hardware is None and request.max_usd_per_hour is None:
        raise CommandError(
            f"name the flavor you approve: {where} requests {requested} now; `approve {request.session} "
            f"--hardware {requested}` approves it (or --max-usd-per-hour grants a standing budget)"
        )
    if hardware is not None and hardware not in PAID_FLAVORS and hardware != requested:
        raise CommandError(f"{hardware!r} is not a paid flavor: approve one of {', '.join(PAID_FLAVORS)}")
    if hardware is not None and hardware != requested:
        instead = f"approve {requested}, or " if requested in PAID_FLAVORS else ""
        raise CommandError(
            f"{where} requests {requested}, not {hardware}: an approval is for the requested flavor; "
            f"{instead}have spec.hardware set to {hardware} first"
        )
    if hardware == api.Hardware.CPU_BASIC.value and request.max_usd_per_hour is None:
        raise CommandError(f"{where} requests free hardware: nothing to approve")
    if request.expires_at is not None:
        _check_expiry(request.expires_at, now)
    return {
        "hardware": hardware,
        "approvedBy": identity.username,
        # The admission policy admits only groups we are in; the operator asks with them whether we may
        # approve, so rights granted through a group count too.
        "approverGroups": identity.groups or None,
        "reason": request.reason,
        "maxUsdPerHour": request.max_usd_per_hour,
        "budgetUsd": request.budget_usd,
        "warnAtUsd": request.warn_at_usd,
        "expiresAt": request.expires_at,
    }


def approve(
    api_client: client.ApiClient,
    request: ApprovalRequest,
    confirm: Callable[[str], bool] | None = None,
) -> tuple[dict[str, Any], dict[str, Any], float | None]:
    """Patch the session's spec.approval as the caller (and lift a denial of that flavor); returns the
    approval written, the session as the API server stored it, and the flavor's price shown.

    Without a flavor (nor a standing budget) named, `confirm` (an interactive caller's) is asked
    whether to approve the flavor requested now, shown with its price; without it, the command fails."""
    session = get_session(api_client, request.namespace, request.session)
    spec = session.get("spec", {})
    requested = str(spec.get("hardware", api.Hardware.CPU_BASIC.value))
    if request.hardware is None and request.max_usd_per_hour is None and confirm is not None:
        shown = priced(requested, price_of(session, requested))
        question = f"{request.namespace}/{request.session} requests {shown}: approve it?"
        if not confirm(question):
            raise CommandError("not approved")
        request = replace(request, hardware=requested)
    approval = build_approval(request, spec, current_identity(api_client), datetime.now(UTC))
    patch: dict[str, Any] = {"approval": approval}
    denial = spec.get("denial") or {}
    if denial and denial.get("hardware") == approval["hardware"]:
        patch["denial"] = None
    stored = patch_spec(api_client, request.namespace, request.session, patch)
    price = price_of(session, approval["hardware"]) if approval["hardware"] else None
    return approval, stored, price
