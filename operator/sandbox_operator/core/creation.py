"""Before and around a create: the allow-list checks that refuse a spec (the operator's Hub token is
not lent), and the record of a duplicate in flight, so "not found" is not taken for "gone".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from fnmatch import fnmatchcase

from sandbox_operator.api import AgentSessionSpec, AgentSessionStatus, parse_rfc3339
from sandbox_operator.config.settings import OperatorConfig
from sandbox_operator.core.conditions import Reason
from sandbox_operator.core.fixes import HOW_TO_FIX
from sandbox_operator.core.model import CreateSpace, FailureKind, HubFailure, Observation, previous_cluster


def _allowed(value: str, patterns: frozenset[str], default: str) -> bool:
    return value == default or any(fnmatchcase(value, pattern) for pattern in patterns)


def owner_allowed(owner: str, config: OperatorConfig) -> bool:
    """May a session's Space live under this Hub namespace (the default owner, or one the allow-list
    matches)? The sweeper asks too: it lists no owner a session could not create Spaces in."""
    return _allowed(owner, config.allowed_owners, config.default_owner)


def template_of(named: str | None, config: OperatorConfig) -> str:
    """The Space a session or a pool duplicates: the one its spec names, else the operator's default."""
    return named or config.default_template


def _listed(default: str, patterns: frozenset[str]) -> str:
    return ", ".join([default, *sorted(patterns)])


@dataclass(frozen=True)
class Refusal:
    """Why the operator will not create a Space for this spec (no Hub call, no intent)."""

    reason: Reason
    message: str
    #: When to look again: the refusal may lift without a spec change (the policy gets installed).
    recheck_after: float | None = None


def creation_refusal(spec: AgentSessionSpec, observed: Observation, config: OperatorConfig) -> Refusal | None:
    """The operator's Hub token must not be lent: a session gets only templates, owners and
    visibility the operator's allow-lists permit, and Secrets only while the API server checks
    that the session's author may read them."""
    template = template_of(spec.template, config)
    if not _allowed(template, config.allowed_templates, config.default_template):
        return Refusal(
            Reason.TEMPLATE_NOT_ALLOWED,
            f"spec.template {template} is not a template this operator may duplicate (allowed: "
            f"{_listed(config.default_template, config.allowed_templates)}); spec.template cannot change, "
            "so recreate the session with an allowed template, or have the operator's --allowed-templates "
            "extended",
        )
    owner = spec.owner or config.default_owner
    if not owner_allowed(owner, config):
        return Refusal(
            Reason.OWNER_NOT_ALLOWED,
            f"spec.owner {owner} is not a Hub namespace this operator may create Spaces in (allowed: "
            f"{_listed(config.default_owner, config.allowed_owners)}); spec.owner cannot change, so recreate "
            "the session with an allowed owner, or have the operator's --allowed-owners extended",
        )
    if not spec.private and not config.allow_public_spaces:
        return Refusal(
            Reason.PUBLIC_SPACE_NOT_ALLOWED,
            "spec.private is false, but this operator creates only private Spaces (--allow-public-spaces is "
            "off); spec.private cannot change, so recreate the session without it",
        )
    if spec.secrets and observed.policy_problem is not None and not config.insecure_trust_approvals:
        return Refusal(
            Reason.SECRETS_NOT_ENFORCED,
            f"spec.secrets is not read: {observed.policy_problem}, so the API server does not check that the "
            f"session's author may read the Secrets it names; {HOW_TO_FIX}",
            recheck_after=config.approval_recheck_interval,
        )
    return None


def duplicate_window_end(status: AgentSessionStatus, config: OperatorConfig) -> datetime | None:
    """Until when a duplicate the operator asked for may still make the Space appear.

    The request leaves by the send deadline or never (the Hub gate drops it), the Hub answers
    within the Hub timeout, and shows the new Space within the visibility grace.
    """
    if status.duplicate_requested_time is None:
        return None
    window = config.duplicate_send_deadline + config.hub_timeout + config.hub_visibility_grace
    return parse_rfc3339(status.duplicate_requested_time) + timedelta(seconds=window)


def duplicate_may_land(status: AgentSessionStatus, config: OperatorConfig, now: datetime) -> bool:
    """True while a "not found" for the Space may mean "not visible yet" rather than "gone".

    Once the Space was seen after the request, the create has landed: a new duplicate is asked
    for only after the previous one's window, so no other create can be in flight.
    """
    end = duplicate_window_end(status, config)
    if end is None or now >= end:
        return False
    confirmed = status.space_confirmed_time
    requested = status.duplicate_requested_time
    landed = (
        confirmed is not None
        and requested is not None
        and parse_rfc3339(confirmed) >= parse_rfc3339(requested)
    )
    return not landed


def space_may_be_hidden(status: AgentSessionStatus, config: OperatorConfig, now: datetime) -> bool:
    """True until the duplicate's window ends, whether or not the Space was seen since: a listing may
    show a fresh private duplicate while its own routes, its marker included, still answer "not
    found" (docs/hub-fidelity.md F32). The finalizer waits this out before it takes a not-found for
    gone; a live session need not (its new duplicate would answer 409 and adopt the Space)."""
    end = duplicate_window_end(status, config)
    return end is not None and now < end


def space_may_exist(status: AgentSessionStatus) -> bool:
    """Whether this session ever asked for its Space (and was not refused) or saw it. A status that
    0.1.0 wrote records neither time, but its `url` says it saw the Space: it is read, not duplicated
    again (which would answer 409) with a Creating transition for every session at the upgrade."""
    return (
        status.duplicate_requested_time is not None
        or status.space_confirmed_time is not None
        or status.url is not None
    )


def marker_unread(status: AgentSessionStatus, config: OperatorConfig) -> bool:
    """Whether a pass reads the Space's ownership marker: until the Space was seen carrying the
    session's, and again while the cluster id it carries is unknown or one this installation used
    before (to be rewritten). Otherwise the owner's listing, which shows no variables, serves."""
    if status.space_confirmed_time is None:
        return True
    seen = status.marker_cluster_id
    return seen is None or previous_cluster(seen, config)


def space_unrequested(status: AgentSessionStatus) -> bool:
    """The session named its Space but never sent a duplicate for it (or the Hub refused it), never
    saw it and claimed none from a pool: there is nothing of its own to read on the Hub. Should a
    Space of that name exist anyway, the duplicate answers 409 and it is adopted after its marker
    is checked."""
    return status.space_id is not None and not space_may_exist(status) and status.claimed_time is None


#: Answers to a duplicate after which nothing was created: no create is in flight.
CREATE_REFUSED_KINDS = frozenset(
    {
        FailureKind.RATE_LIMITED,
        FailureKind.UNAUTHORIZED,
        FailureKind.FORBIDDEN,
        FailureKind.BAD_REQUEST,
        FailureKind.TEMPLATE_NOT_FOUND,
    }
)


def create_record(
    status: AgentSessionStatus, action: CreateSpace, sent: bool, failure: HubFailure | None
) -> str | None:
    """status.duplicateRequestedTime after a create attempt: unchanged if the request was never
    sent, cleared if the Hub refused it outright, else the time it was asked for (it may land)."""
    if not sent:
        return status.duplicate_requested_time
    if failure is not None and failure.kind in CREATE_REFUSED_KINDS:
        return None
    return action.requested_time


def create_failure(status: AgentSessionStatus, sent: bool, failure: HubFailure | None) -> str | None:
    """status.duplicateFailure after a create attempt: what the Hub answered a duplicate that was sent
    and failed, cleared by one that did not fail, unchanged if none was sent."""
    if not sent:
        return status.duplicate_failure
    return failure.message if failure is not None else None
