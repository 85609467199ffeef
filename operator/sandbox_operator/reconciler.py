"""The decision core: (session, what was observed) -> (next action, new status).

Nothing here does I/O. The controller gathers an `Observation`, calls `decide`, applies
the one action it returns and observes again, level-triggered like controller-runtime's
Reconcile and shaped like Crossplane's managed reconciler (observe, then create, update
or delete the external resource). Everything the operator does to a Space is decided here,
so it is all testable without a server.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from fnmatch import fnmatchcase

from .api import (
    AgentSessionSpec,
    AgentSessionStatus,
    Condition,
    DeletionPolicy,
    Hardware,
    HardwareStatus,
    PendingApproval,
    Phase,
    Spend,
)
from .config import OperatorConfig
from .policy import HOW_TO_FIX
from .pricing import FALLBACK_USD_PER_HOUR

# Condition types.
READY = "Ready"
HARDWARE_APPROVED = "HardwareApproved"
BUDGET_EXHAUSTED = "BudgetExhausted"
#: Whether agent pods can reach the sandbox with what the connection Secret holds.
AGENT_ACCESS = "AgentAccess"

# Hub stages, as huggingface_hub's SpaceStage names them.
STARTING_STAGES = frozenset({"BUILDING", "RUNNING_BUILDING", "APP_STARTING", "RUNNING_APP_STARTING"})
ERROR_STAGES = frozenset({"BUILD_ERROR", "RUNTIME_ERROR", "CONFIG_ERROR", "NO_APP_FILE"})
STOPPED_STAGES = frozenset({"PAUSED", "STOPPED"})
#: Asleep after its sleep time without requests: not a failure, the next request to the app wakes it.
SLEEPING = "SLEEPING"
#: Stages the Hub bills nothing for (asleep, paused or stopped).
UNBILLED_STAGES = STOPPED_STAGES | {SLEEPING}

# Space variables that mark a Space as this operator's (the ownership marker).
MARKER_SESSION_UID = "SANDBOX_OPERATOR_SESSION_UID"
MARKER_CLUSTER_ID = "SANDBOX_OPERATOR_CLUSTER_ID"
MARKER_SESSION = "SANDBOX_OPERATOR_SESSION"


class FailureKind(StrEnum):
    """Why a Hub call failed; each maps to a condition reason and a retry policy."""

    RATE_LIMITED = "HubRateLimited"
    UNAUTHORIZED = "HubUnauthorized"
    FORBIDDEN = "HubForbidden"
    UNAVAILABLE = "HubUnavailable"
    BAD_REQUEST = "HubBadRequest"
    TEMPLATE_NOT_FOUND = "TemplateNotFound"
    #: The Hub does not show the Space (404, or a 401 it answers for repos the token cannot see).
    NOT_FOUND = "SpaceNotFound"
    #: A Space is not found and the token cannot see its owner namespace: not proof it is gone.
    ACCESS_LOST = "HubAccessLost"


#: What the Hub answers for a fresh duplicate it does not show yet: within the duplicate window
#: these mean "not visible yet", never "gone" or "bad token".
NOT_VISIBLE_KINDS = frozenset({FailureKind.NOT_FOUND, FailureKind.UNAUTHORIZED})
#: Failures met outside the Hub; the shell reports them through `decide_failure`.
SECRET_INVALID = "SecretInvalid"
INTERNAL_ERROR = "InternalError"
#: While a session stays starting or unhealthy, the poll delay is this fraction of the time it has
#: not been Ready: polls thin out geometrically (x1.25 each), up to `waiting_poll_max`.
WAITING_BACKOFF_FRACTION = 0.25


#: Observation.policy_problem until the controller checked: nothing is trusted unchecked.
POLICY_NOT_CHECKED = "the approval policy was not checked yet"


@dataclass(frozen=True)
class HubFailure:
    kind: FailureKind
    message: str
    retry_after: float | None = None


@dataclass(frozen=True)
class SpaceView:
    """What the Hub reports about one Space."""

    space_id: str
    stage: str
    current_hardware: str | None
    requested_hardware: str | None
    private: bool | None = None
    url: str | None = None
    sandbox_url: str | None = None
    #: The ownership marker's session UID; None when the variables were not read this time.
    marker_uid: str | None = None
    #: Seconds of inactivity after which the Hub puts the Space to sleep (gcTimeout); None: never.
    sleep_time: int | None = None


@dataclass(frozen=True)
class HealthResult:
    ok: bool
    detail: str
    #: The HTTP status the sandbox answered; None when it could not be reached.
    status: int | None = None


@dataclass(frozen=True)
class Observation:
    """Everything the decision needs from the outside world, gathered by the controller."""

    space: SpaceView | None = None
    hub_failure: HubFailure | None = None
    #: The sandbox token held in the connection Secret, if that Secret exists.
    token: str | None = None
    #: The sandbox URL the connection Secret publishes.
    connection_url: str | None = None
    #: Health of the sandbox API; None when not checked (the Space was not running yet).
    health: HealthResult | None = None
    #: Why a `spec.secrets` reference cannot be resolved; None when all resolve or none were read.
    secrets_problem: str | None = None
    #: USD per hour per flavor (the Hub's catalog, or the fallback table).
    prices: Mapping[str, float] = field(default_factory=lambda: dict(FALLBACK_USD_PER_HOUR))
    #: Why the API server does not enforce the approval policy; None: it does. Unchecked counts as not.
    policy_problem: str | None = POLICY_NOT_CHECKED
    #: Whether a SubjectAccessReview says spec.approval's approver may approve it here; None: not asked.
    approver_authorized: bool | None = None
    #: Why the connection Secret cannot be written: a Secret of that name that this session does not own.
    connection_conflict: str | None = None
    #: The Hub read token agent pods get for a private Space's edge (the session's own, else the
    #: operator's configured one); None when there is none. Never the operator's own token.
    read_token: str | None = None
    #: Why the read token's Secret (the session's or the operator's) cannot be read; None when it can
    #: or none is configured.
    read_token_problem: str | None = None
    #: The Hub read token the connection Secret holds now ("" or None: none).
    connection_hub_token: str | None = None


@dataclass(frozen=True)
class Session:
    """The parts of an AgentSession object the decision reads."""

    name: str
    namespace: str
    uid: str
    generation: int
    spec: AgentSessionSpec
    status: AgentSessionStatus
    #: metadata.deletionTimestamp is set: the finalizer's turn (Crossplane's WasDeleted).
    deleting: bool = False


# Actions: each is one change to the outside world, applied by the controller.
@dataclass(frozen=True)
class RecordIntent:
    """Persist the Space id and a token before any Hub call, so a crash adopts instead of duplicating."""

    space_id: str
    connection_secret: str


@dataclass(frozen=True)
class CreateSpace:
    """Duplicate the template. `requested_time` goes into status.duplicateRequestedTime before the
    request is sent, and the request is dropped unless it leaves for the Hub by `send_by`."""

    space_id: str
    template: str
    private: bool
    requested_time: str
    send_by: datetime


@dataclass(frozen=True)
class RotateToken:
    """The Space exists but the token is lost (connection Secret deleted): issue a new one."""

    space_id: str


@dataclass(frozen=True)
class PublishConnection:
    """Write the sandbox URL into the connection Secret once the Hub reports it."""

    sandbox_url: str


@dataclass(frozen=True)
class PublishHubToken:
    """Write the Hub read token agent pods need for a private Space's edge ("" removes it)."""

    hub_token: str


@dataclass(frozen=True)
class RequestHardware:
    space_id: str
    flavor: str
    #: Sent with every paid flavor, since paid hardware never sleeps by default; None for free ones.
    sleep_time: int | None = None


@dataclass(frozen=True)
class SetSleepTime:
    """The Space runs on paid hardware with another sleep time than the session asks for."""

    space_id: str
    seconds: int


@dataclass(frozen=True)
class RestartSpace:
    space_id: str


@dataclass(frozen=True)
class DeleteSpace:
    space_id: str


@dataclass(frozen=True)
class ReleaseSpace:
    """Keep the Space but drop this cluster from its marker, so the orphan sweeper never takes it."""

    space_id: str


Action = (
    RecordIntent
    | CreateSpace
    | RotateToken
    | PublishConnection
    | PublishHubToken
    | RequestHardware
    | SetSleepTime
    | RestartSpace
    | DeleteSpace
    | ReleaseSpace
)


@dataclass(frozen=True)
class EventNote:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Plan:
    action: Action | None
    status: AgentSessionStatus
    requeue_after: float | None
    events: list[EventNote] = field(default_factory=list)
    #: The session is being deleted and nothing of it is left to do: the finalizer may go.
    done: bool = False

    @property
    def converged(self) -> bool:
        return self.action is None and self.requeue_after is None

    @property
    def failed(self) -> bool:
        """This plan reports a failure (not mere progress): it counts towards the retry backoff."""
        return self.status.failures is not None

    @property
    def reason(self) -> str:
        """The Ready condition's reason: what the session is doing or waiting for."""
        return self._ready.reason if self._ready else ""

    @property
    def message(self) -> str:
        return self._ready.message if self._ready else ""

    @property
    def _ready(self) -> Condition | None:
        return next((c for c in self.status.conditions if c.type == READY), None)


def sleep_time_for(spec: AgentSessionSpec, config: OperatorConfig) -> int:
    """The sleep time of paid hardware: the session's, else the operator's default, at most its maximum."""
    wanted = spec.sleep_time_seconds if spec.sleep_time_seconds is not None else config.sleep_time_default
    return min(wanted, config.sleep_time_max)


def space_id_for(session: Session, config: OperatorConfig) -> str:
    """Deterministic from the UID, so a recreated session (new UID) never reuses an old Space."""
    owner = session.spec.owner or config.default_owner
    return f"{owner}/{config.space_prefix}-{session.uid}"


def connection_secret_name(session: Session) -> str:
    return f"{session.name}-sandbox"


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
    reason: str
    message: str


def _usd(amount: float) -> str:
    return f"${amount:,.2f}"


#: An approval that names the flavor but is not trusted (yet): re-checked every approval_recheck_interval.
UNTRUSTED_APPROVAL_REASONS = frozenset({"ApprovalNotEnforced", "ApproverNotAuthorized"})

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
        return HardwareVerdict(True, "FreeHardware", f"{wanted} needs no approval")
    price = prices.get(wanted)
    priced = f"{wanted} ({_usd(price)}/h)" if price is not None else wanted
    approval = spec.approval
    if approval is None:
        return HardwareVerdict(
            False,
            "AwaitingApproval",
            f"{priced} is paid hardware; it is requested once an approver sets spec.approval",
        )
    if approval.hardware is not None and str(approval.hardware) != wanted:
        return HardwareVerdict(
            False,
            "AwaitingApproval",
            f"the approval names {approval.hardware} but spec.hardware is {wanted}; an approval is for one "
            f"flavor: approve {wanted}, or set spec.hardware back to {approval.hardware}",
        )
    if approval.hardware is None:
        limit = approval.max_usd_per_hour or 0.0
        if price is None or price > limit:
            return HardwareVerdict(
                False,
                "AwaitingApproval",
                f"{priced} is above the approved maxUsdPerHour of {_usd(limit)}; approve it by name",
            )
    ceiling = config.max_usd_per_hour
    if ceiling is not None and ((price or 0.0) > ceiling or (approval.max_usd_per_hour or 0.0) > ceiling):
        return HardwareVerdict(
            False,
            "ApprovalExceedsLimit",
            f"this operator allows approvals up to {_usd(ceiling)}/h; {priced} exceeds it",
        )
    if config.max_budget_usd is not None and (approval.budget_usd or float("inf")) > config.max_budget_usd:
        return HardwareVerdict(
            False,
            "ApprovalExceedsLimit",
            f"this operator requires spec.approval.budgetUsd of at most {_usd(config.max_budget_usd)}",
        )
    insecure = config.insecure_trust_approvals
    if policy_problem is not None and not insecure:
        return HardwareVerdict(
            False,
            "ApprovalNotEnforced",
            f"{priced} is not requested: approvals cannot be trusted because {policy_problem}, so anyone "
            f"who may edit this session could have written spec.approval; {HOW_TO_FIX}",
        )
    if approver_authorized is not True and not insecure:
        scope = f"hardware/{approval.hardware}" if approval.hardware is not None else "every hardware flavor"
        groups = f" (groups {', '.join(approval.approver_groups)})" if approval.approver_groups else ""
        said = (
            "was not confirmed yet" if approver_authorized is None else "was denied by a SubjectAccessReview"
        )
        return HardwareVerdict(
            False,
            "ApproverNotAuthorized",
            f"{priced} is not requested: the approver {approval.approved_by}{groups} needs the verb "
            f'"approve" on {scope} in this namespace, and that {said} (a revoked role, or rights held '
            "through a group that spec.approval.approverGroups does not name); an approver must approve "
            "again",
        )
    reason = f": {approval.reason}" if approval.reason else ""
    budget = f", budget {_usd(approval.budget_usd)}" if approval.budget_usd is not None else ""
    warning = f"; WARNING: {INSECURE_TRUST_WARNING}" if insecure else ""
    return HardwareVerdict(
        True, "Approved", f"{priced} approved by {approval.approved_by}{budget}{reason}{warning}"
    )


def _allowed(value: str, patterns: frozenset[str], default: str) -> bool:
    return value == default or any(fnmatchcase(value, pattern) for pattern in patterns)


def _listed(default: str, patterns: frozenset[str]) -> str:
    return ", ".join([default, *sorted(patterns)])


@dataclass(frozen=True)
class Refusal:
    """Why the operator will not create a Space for this spec (no Hub call, no intent)."""

    reason: str
    message: str
    #: When to look again: the refusal may lift without a spec change (the policy gets installed).
    recheck_after: float | None = None


def creation_refusal(spec: AgentSessionSpec, observed: Observation, config: OperatorConfig) -> Refusal | None:
    """The operator's Hub token must not be lent: a session gets only templates, owners and
    visibility the operator's allow-lists permit, and Secrets only while the API server checks
    that the session's author may read them."""
    template = spec.template or config.default_template
    if not _allowed(template, config.allowed_templates, config.default_template):
        return Refusal(
            "TemplateNotAllowed",
            f"spec.template {template} is not a template this operator may duplicate (allowed: "
            f"{_listed(config.default_template, config.allowed_templates)}); spec.template cannot change, "
            "so recreate the session with an allowed template, or have the operator's --allowed-templates "
            "extended",
        )
    owner = spec.owner or config.default_owner
    if not _allowed(owner, config.allowed_owners, config.default_owner):
        return Refusal(
            "OwnerNotAllowed",
            f"spec.owner {owner} is not a Hub namespace this operator may create Spaces in (allowed: "
            f"{_listed(config.default_owner, config.allowed_owners)}); spec.owner cannot change, so recreate "
            "the session with an allowed owner, or have the operator's --allowed-owners extended",
        )
    if not spec.private and not config.allow_public_spaces:
        return Refusal(
            "PublicSpaceNotAllowed",
            "spec.private is false, but this operator creates only private Spaces (--allow-public-spaces is "
            "off); spec.private cannot change, so recreate the session without it",
        )
    if spec.secrets and observed.policy_problem is not None and not config.insecure_trust_approvals:
        return Refusal(
            "SecretsNotEnforced",
            f"spec.secrets is not read: {observed.policy_problem}, so the API server does not check that the "
            f"session's author may read the Secrets it names; {HOW_TO_FIX}",
            recheck_after=config.approval_recheck_interval,
        )
    return None


def budget_exhausted(spec: AgentSessionSpec, spend: Spend | None) -> bool:
    budget = spec.approval.budget_usd if spec.approval else None
    return budget is not None and spend is not None and spend.estimated_usd >= budget


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
    asleep, paused or stopped is billed nothing, whatever hardware it holds.
    """
    current = space.current_hardware
    if current is None or is_free(current, config) or space.stage in UNBILLED_STAGES:
        rate = 0.0
    else:
        rate = prices.get(current, 0.0)
    spent = previous.estimated_usd if previous else 0.0
    if previous is not None and previous.last_observed_time is not None:
        elapsed = max(0.0, (now - _parse_rfc3339(previous.last_observed_time)).total_seconds())
        spent += previous.usd_per_hour * elapsed / 3600
    return Spend.model_validate(
        {
            "estimatedUsd": round(spent, 6),
            "usdPerHour": rate,
            "budgetUsd": budget,
            "lastObservedTime": _rfc3339(now, precise=True),
        }
    )


def spend_recheck_delay(spend: Spend, config: OperatorConfig) -> float | None:
    """While on paid hardware, come back to accrue spend, and exactly when the budget runs out."""
    if spend.usd_per_hour <= 0:
        return None
    delay = config.spend_interval
    if spend.budget_usd is not None:
        remaining = max(0.0, spend.budget_usd - spend.estimated_usd)
        delay = min(delay, remaining / spend.usd_per_hour * 3600)
    return max(delay, 0.5)


def backoff_delay(failures: int, config: OperatorConfig, jitter: float) -> float:
    """Exponential backoff with +-20% jitter (jitter in [0, 1)), so many sessions do not retry in step."""
    base = min(config.backoff_max, config.backoff_base * (2.0 ** max(0, failures - 1)))
    return round(base * (0.8 + 0.4 * jitter), 3)


def waiting_delay(status: AgentSessionStatus, config: OperatorConfig, now: datetime) -> float:
    """The next poll of a session that is starting or unhealthy: a share of the time it has not been
    Ready (the Ready condition's lastTransitionTime), so a stuck session does not eat the Hub budget."""
    ready = _condition(status, READY)
    held = 0.0
    if ready is not None and ready.status != "True":
        held = max(0.0, (now - _parse_rfc3339(ready.last_transition_time)).total_seconds())
    return max(config.poll_interval, min(config.waiting_poll_max, held * WAITING_BACKOFF_FRACTION))


def duplicate_window_end(status: AgentSessionStatus, config: OperatorConfig) -> datetime | None:
    """Until when a duplicate the operator asked for may still make the Space appear.

    The request leaves by the send deadline or never (the Hub gate drops it), the Hub answers
    within the Hub timeout, and shows the new Space within the visibility grace.
    """
    if status.duplicate_requested_time is None:
        return None
    window = config.duplicate_send_deadline + config.hub_timeout + config.hub_visibility_grace
    return _parse_rfc3339(status.duplicate_requested_time) + timedelta(seconds=window)


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
        and _parse_rfc3339(confirmed) >= _parse_rfc3339(requested)
    )
    return not landed


def space_may_exist(status: AgentSessionStatus) -> bool:
    """Whether this session ever asked for its Space (and was not refused) or saw it."""
    return status.duplicate_requested_time is not None or status.space_confirmed_time is not None


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


def _rfc3339(moment: datetime, precise: bool = False) -> str:
    """Seconds for conditions (as Kubernetes writes them); microseconds where spend is computed from it."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if precise else "%Y-%m-%dT%H:%M:%SZ")


def _parse_rfc3339(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def set_condition(
    conditions: list[Condition],
    type_: str,
    status: str,
    reason: str,
    message: str,
    generation: int,
    now: datetime,
) -> list[Condition]:
    """Upsert one condition; lastTransitionTime moves only when the status changes."""
    previous = next((c for c in conditions if c.type == type_), None)
    transition = (
        previous.last_transition_time if previous is not None and previous.status == status else _rfc3339(now)
    )
    updated = Condition.model_validate(
        {
            "type": type_,
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": transition,
            "observedGeneration": generation,
        }
    )
    return [c for c in conditions if c.type != type_] + [updated]


def _condition(status: AgentSessionStatus, type_: str) -> Condition | None:
    return next((c for c in status.conditions if c.type == type_), None)


_WARNING_REASONS = frozenset(
    {kind.value for kind in FailureKind}
    | {"BuildError", "RuntimeError", "SecretNotFound", "SpaceNotOwned", "HealthCheckFailing", "SpaceLost"}
    | {"BudgetSpent", "ApprovalExceedsLimit", "ApprovalNotEnforced", "ApproverNotAuthorized"}
    | {"TemplateNotAllowed", "OwnerNotAllowed", "PublicSpaceNotAllowed", "SecretsNotEnforced"}
    | {"ConnectionSecretConflict"}
    | {"NoReadToken", "ReadTokenSecretNotFound"}
    | {SECRET_INVALID, INTERNAL_ERROR}
)


def transition_events(old: AgentSessionStatus, new: AgentSessionStatus) -> list[EventNote]:
    """One Event for each condition whose status or reason changed."""
    events = []
    for condition in new.conditions:
        before = _condition(old, condition.type)
        if before is not None and (before.status, before.reason) == (condition.status, condition.reason):
            continue
        kind = "Warning" if condition.reason in _WARNING_REASONS else "Normal"
        events.append(
            EventNote(kind, condition.reason, f"{condition.type}={condition.status}: {condition.message}")
        )
    return events


@dataclass
class _Draft:
    """A status under construction for one decision."""

    session: Session
    now: datetime
    status: AgentSessionStatus
    verdict: HardwareVerdict
    failed: bool = False
    exhausted: bool = False

    def condition(self, type_: str, status: str, reason: str, message: str) -> None:
        self.status.conditions = set_condition(
            self.status.conditions, type_, status, reason, message, self.session.generation, self.now
        )

    def ready(self, status: str, reason: str, message: str) -> None:
        self.condition(READY, status, reason, message)


def _failure(
    draft: _Draft, reason: str, message: str, config: OperatorConfig, jitter: float, minimum: float = 0.0
) -> float:
    """Record a failed reconcile; returns the delay before the next try."""
    failures = (draft.status.failures or 0) + 1
    delay = max(minimum, backoff_delay(failures, config, jitter))
    draft.failed = True
    retry_at = draft.now + timedelta(seconds=delay)
    draft.status.failures = failures
    draft.status.next_retry_time = _rfc3339(retry_at)
    draft.ready(
        "False", reason, f"{message} (attempt {failures}; next try in {delay:.0f}s at {_rfc3339(retry_at)})"
    )
    return delay


def _hub_failure_delay(failure: HubFailure, config: OperatorConfig) -> float:
    if failure.kind is FailureKind.RATE_LIMITED and failure.retry_after is not None:
        return float(failure.retry_after)
    if failure.kind in (FailureKind.UNAUTHORIZED, FailureKind.FORBIDDEN):
        return config.credentials_backoff_min
    return 0.0


def _report_space(draft: _Draft, space: SpaceView) -> None:
    draft.status.stage = space.stage
    draft.status.hardware = HardwareStatus(current=space.current_hardware, requested=space.requested_hardware)
    if space.url:
        draft.status.url = space.url
    if space.sandbox_url:
        draft.status.sandbox_url = space.sandbox_url


def decide(
    session: Session,
    observed: Observation | DeletionObservation,
    config: OperatorConfig,
    now: datetime,
    jitter: float = 0.5,
) -> Plan:
    """The next action for a session, and the status that describes it: one entry for its whole
    life, branching on deletion as Crossplane's Reconcile does on WasDeleted. The controller
    observes a deleting session's Space as a `DeletionObservation`."""
    if isinstance(observed, DeletionObservation):
        return decide_deletion(session, observed, config, jitter, now=now)
    return decide_live(session, observed, config, now, jitter)


def decide_live(
    session: Session, observed: Observation, config: OperatorConfig, now: datetime, jitter: float = 0.5
) -> Plan:
    """The next action for a live (not deleting) session, and the status that describes it."""
    verdict = judge_hardware(
        session.spec,
        config,
        observed.prices,
        policy_problem=observed.policy_problem,
        approver_authorized=observed.approver_authorized,
    )
    draft = _Draft(session, now, session.status.model_copy(deep=True), verdict)
    draft.status.observed_generation = session.generation
    _money(draft, observed, config)
    _agent_access(draft, observed)
    action, requeue = _next_step(draft, observed, config, jitter)
    if draft.status.spend is not None:
        recheck = spend_recheck_delay(draft.status.spend, config)
        if recheck is not None:
            requeue = recheck if requeue is None else min(requeue, recheck)
    if verdict.reason in UNTRUSTED_APPROVAL_REASONS:
        # Lifts without a spec change (the policy installed, a role granted): look again.
        recheck = config.approval_recheck_interval
        requeue = recheck if requeue is None else min(requeue, recheck)
    if not draft.failed:
        draft.status.failures = None
        draft.status.next_retry_time = None
    return Plan(action, draft.status, requeue, transition_events(session.status, draft.status))


def decide_failure(
    session: Session, reason: str, message: str, config: OperatorConfig, now: datetime, jitter: float = 0.5
) -> Plan:
    """A failure met outside the Hub (a Secret that is not text, a bug): reported like a Hub failure,
    as a condition and an Event, and retried with backoff instead of crash-restarting the loop."""
    unjudged = HardwareVerdict(False, "NotJudged", "no hardware decision is made after this failure")
    draft = _Draft(session, now, session.status.model_copy(deep=True), unjudged)
    draft.status.phase = Phase.DELETING if session.deleting else Phase.FAILED
    delay = _failure(draft, reason, message, config, jitter)
    if session.deleting:
        return _deletion_plan(draft, None, reason, message, delay)
    return Plan(None, draft.status, delay, transition_events(session.status, draft.status))


def _money(draft: _Draft, observed: Observation, config: OperatorConfig) -> None:
    """Approval, spend and budget: conditions and status fields, before any hardware decision."""
    spec = draft.session.spec
    verdict = draft.verdict
    wanted = str(spec.hardware)
    draft.condition(
        HARDWARE_APPROVED, "True" if verdict.approved else "False", verdict.reason, verdict.message
    )
    paid = not is_free(wanted, config)
    draft.status.approved_by = (
        spec.approval.approved_by if spec.approval and verdict.approved and paid else None
    )
    draft.status.pending_approval = (
        PendingApproval.model_validate({"hardware": wanted, "usdPerHour": observed.prices.get(wanted)})
        if paid and not verdict.approved
        else None
    )
    budget = spec.approval.budget_usd if spec.approval else None
    if observed.space is not None:
        draft.status.spend = accrue_spend(
            draft.status.spend, observed.space, config, observed.prices, budget, draft.now
        )
    elif draft.status.spend is not None:
        draft.status.spend.budget_usd = budget
    draft.exhausted = budget_exhausted(spec, draft.status.spend)
    if budget is None:
        draft.status.conditions = [c for c in draft.status.conditions if c.type != BUDGET_EXHAUSTED]
        return
    spent = draft.status.spend.estimated_usd if draft.status.spend else 0.0
    if draft.exhausted:
        draft.condition(
            BUDGET_EXHAUSTED,
            "True",
            "BudgetSpent",
            f"estimated spend {_usd(spent)} reached the budget of {_usd(budget)}; the Space is back on "
            f"{Hardware.CPU_BASIC.value} until an approver raises spec.approval.budgetUsd",
        )
    else:
        draft.condition(
            BUDGET_EXHAUSTED, "False", "WithinBudget", f"estimated spend {_usd(spent)} of {_usd(budget)}"
        )


def _agent_access(draft: _Draft, observed: Observation) -> None:
    """Say whether agent pods can pass the Hub's edge with the connection Secret (not part of Ready:
    the sandbox itself may be fine)."""
    if not draft.session.spec.private:
        draft.condition(
            AGENT_ACCESS, "True", "PublicSpace", "the Space is public: the sandbox token alone reaches it"
        )
    elif observed.read_token_problem is not None:
        draft.condition(AGENT_ACCESS, "False", "ReadTokenSecretNotFound", observed.read_token_problem)
    elif not observed.read_token:
        draft.condition(
            AGENT_ACCESS,
            "False",
            "NoReadToken",
            "no Hub read token is configured (the operator's --hub-read-token-secret or "
            "spec.hubTokenSecretRef): agent pods will not pass the Hub's edge of this private Space",
        )
    else:
        draft.condition(
            AGENT_ACCESS,
            "True",
            "ReadTokenPublished",
            "the connection Secret holds hubToken (Authorization, for the Hub's edge) and token "
            "(X-Sandbox-Authorization, for the sandbox)",
        )


def _published_hub_token(session: Session, observed: Observation) -> str:
    """What the connection Secret's hubToken should be: the read token for a private Space, else none."""
    return (observed.read_token or "") if session.spec.private else ""


def _next_step(
    draft: _Draft, observed: Observation, config: OperatorConfig, jitter: float
) -> tuple[Action | None, float | None]:
    session = draft.session
    status = draft.status
    now = draft.now
    if status.space_id is None:
        refusal = creation_refusal(session.spec, observed, config)
        if refusal is not None:
            return None, _refuse(draft, refusal)
    if observed.connection_conflict is not None:
        draft.status.phase = Phase.FAILED
        return None, _failure(draft, "ConnectionSecretConflict", observed.connection_conflict, config, jitter)
    if status.space_id is None:
        return _record_intent(draft, space_id_for(session, config)), 0.0
    space_id = status.space_id

    failure = observed.hub_failure
    if failure is not None and failure.kind in NOT_VISIBLE_KINDS and duplicate_may_land(status, config, now):
        return _await_visibility(draft, space_id, failure.message, config)
    if failure is not None:
        draft.status.phase = Phase.FAILED
        return None, _failure(
            draft, failure.kind.value, failure.message, config, jitter, _hub_failure_delay(failure, config)
        )

    space = observed.space
    if space is None:
        if duplicate_may_land(status, config, now):
            return _await_visibility(draft, space_id, "not found", config)
        if observed.secrets_problem is not None:
            draft.status.phase = Phase.FAILED
            return None, _failure(draft, "SecretNotFound", observed.secrets_problem, config, jitter)
        if observed.token is None:
            # The connection Secret is gone too: record the intent (and a new token) again first.
            return _record_intent(draft, space_id), 0.0
        refusal = creation_refusal(session.spec, observed, config)
        if refusal is not None:
            return None, _refuse(draft, refusal)
        lost = status.space_confirmed_time is not None
        draft.status.phase = Phase.CREATING
        draft.status.stage = None
        draft.status.hardware = None
        draft.status.space_confirmed_time = None
        template = session.spec.template or config.default_template
        if lost:
            draft.ready("False", "SpaceLost", f"Space {space_id} disappeared from the Hub; creating it again")
        else:
            draft.ready("False", "Creating", f"duplicating {template} into {space_id}")
        requested = _rfc3339(now, precise=True)
        draft.status.duplicate_requested_time = requested
        send_by = now + timedelta(seconds=config.duplicate_send_deadline)
        return CreateSpace(space_id, template, session.spec.private, requested, send_by), config.poll_interval

    _report_space(draft, space)
    if space.marker_uid is not None and space.marker_uid != session.uid:
        draft.status.phase = Phase.FAILED
        return None, _failure(
            draft,
            "SpaceNotOwned",
            f"Space {space_id} exists but belongs to session UID {space.marker_uid}; it is left untouched",
            config,
            jitter,
            minimum=config.backoff_max,
        )
    if space.marker_uid == session.uid and status.space_confirmed_time is None:
        draft.status.space_confirmed_time = _rfc3339(now, precise=True)

    # Money first, whatever the stage: paid hardware that is not allowed now is given up before
    # anything else is done to the Space (a restart, a new token), never left to a later stage.
    target = target_hardware(session.spec, space, config, draft.verdict, draft.exhausted)
    sleep_time = sleep_time_for(session.spec, config) if not is_free(target, config) else None
    held = space.requested_hardware or space.current_hardware
    if held is not None and not is_free(held, config) and held != target:
        draft.status.phase = Phase.UPGRADING
        draft.ready(
            "False",
            "HardwareSwitching",
            f"{held} is not allowed now; requesting {target} (the Hub reports stage {space.stage})",
        )
        return RequestHardware(space_id, target, sleep_time), config.poll_interval

    if observed.token is None:
        draft.status.phase = Phase.STARTING
        draft.status.token_rotated_time = _rfc3339(now)
        draft.ready("False", "RotatingToken", "the connection Secret was lost; issuing a new sandbox token")
        return RotateToken(space_id), 0.0
    if space.sandbox_url and observed.connection_url != space.sandbox_url:
        return PublishConnection(space.sandbox_url), 0.0
    hub_token = _published_hub_token(session, observed)
    if (observed.connection_hub_token or "") != hub_token:
        return PublishHubToken(hub_token), 0.0

    if space.stage in ERROR_STAGES:
        draft.status.phase = Phase.FAILED
        reason = (
            "BuildError" if space.stage in ("BUILD_ERROR", "CONFIG_ERROR", "NO_APP_FILE") else "RuntimeError"
        )
        already_failing = (status.failures or 0) > 0 and _ready_reason(session.status) == reason
        delay = _failure(
            draft, reason, f"the Hub reports stage {space.stage}; restarting the Space", config, jitter
        )
        return (RestartSpace(space_id) if already_failing else None), delay
    if space.stage == SLEEPING:
        # Waking it (a health check, a restart) would bill it again: the first request of an agent does.
        draft.status.phase = Phase.SLEEPING
        draft.ready(
            "True",
            "SandboxSleeping",
            f"Space {space_id} is asleep after its sleep time without requests; the first request wakes it",
        )
        asleep_on = space.requested_hardware
        paid = asleep_on is not None and not is_free(asleep_on, config)
        # Woken by an agent, it bills again: look again as often as spend is accrued.
        return None, config.spend_interval if paid else None
    if space.stage in STOPPED_STAGES:
        draft.status.phase = Phase.STARTING
        draft.ready("False", "Restarting", f"the Space is {space.stage}; restarting it")
        return RestartSpace(space_id), config.poll_interval
    if space.stage in STARTING_STAGES or space.stage != "RUNNING":
        switching = space.requested_hardware not in (None, space.current_hardware) and space.current_hardware
        draft.status.phase = Phase.UPGRADING if switching else Phase.STARTING
        reason = "Building" if "BUILDING" in space.stage else "Starting"
        draft.ready("False", reason, f"the Hub reports stage {space.stage}")
        return None, waiting_delay(draft.status, config, now)

    if space.requested_hardware != target and space.current_hardware != target:
        draft.status.phase = Phase.UPGRADING
        draft.ready("False", "HardwareSwitching", f"requesting {target} (now on {space.current_hardware})")
        return RequestHardware(space_id, target, sleep_time), config.poll_interval
    if space.current_hardware != target:
        draft.status.phase = Phase.UPGRADING
        draft.ready("False", "HardwareSwitching", f"waiting for the Hub to move the Space to {target}")
        return None, waiting_delay(draft.status, config, now)

    if sleep_time is not None and space.sleep_time != sleep_time:
        return SetSleepTime(space_id, sleep_time), 0.0

    health = observed.health
    if health is None or not health.ok:
        if health is not None and health.status == 401 and _may_rotate_token(status, config, now):
            draft.status.phase = Phase.STARTING
            draft.status.token_rotated_time = _rfc3339(now)
            draft.ready(
                "False",
                "RotatingToken",
                f"the sandbox rejects its token ({health.detail}); issuing a new one",
            )
            return RotateToken(space_id), 0.0
        draft.status.phase = Phase.STARTING
        detail = health.detail if health else "not checked yet"
        draft.ready(
            "False", "HealthCheckFailing", f"the sandbox API does not answer its health check: {detail}"
        )
        return None, waiting_delay(draft.status, config, now)

    draft.status.phase = Phase.READY
    draft.ready(
        "True", "SandboxReady", f"Space {space_id} is running on {target} and answers its health check"
    )
    return None, None


def _refuse(draft: _Draft, refusal: Refusal) -> float | None:
    """No Space for this spec: say why; look again only if the refusal can lift by itself."""
    draft.status.phase = Phase.FAILED
    draft.ready("False", refusal.reason, refusal.message)
    return refusal.recheck_after


def _await_visibility(
    draft: _Draft, space_id: str, detail: str, config: OperatorConfig
) -> tuple[Action | None, float | None]:
    """Right after our own duplicate the Hub may not show the Space yet: wait, never create it again."""
    end = duplicate_window_end(draft.status, config)
    until = f" until {_rfc3339(end)}" if end is not None else ""
    draft.status.phase = Phase.CREATING
    draft.ready(
        "False",
        "Creating",
        f"the Hub does not show {space_id} yet after its duplicate ({detail}); waiting{until}",
    )
    return None, config.poll_interval


def _may_rotate_token(status: AgentSessionStatus, config: OperatorConfig, now: datetime) -> bool:
    """A token the sandbox rejects is replaced at most once per interval, so a rejection that a new
    token does not cure cannot become a loop of rotations."""
    last = status.token_rotated_time
    return last is None or (now - _parse_rfc3339(last)).total_seconds() >= config.token_rotation_interval


def _record_intent(draft: _Draft, space_id: str) -> RecordIntent:
    """The status after RecordIntent names the Space, so later steps (and a restart) adopt it."""
    secret = connection_secret_name(draft.session)
    draft.status.space_id = space_id
    draft.status.connection_secret = secret
    draft.status.phase = Phase.CREATING
    draft.ready("False", "Provisioning", f"creating Space {space_id}")
    return RecordIntent(space_id, secret)


def _ready_reason(status: AgentSessionStatus) -> str | None:
    condition = _condition(status, READY)
    return condition.reason if condition else None


# Deletion ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeletionObservation:
    """What the Hub reports about the Space of a session being deleted."""

    #: The Space's ownership marker (session UID, "" if unmarked); None when the Space is gone.
    marker: str | None = None
    #: The cluster id in the marker; "" if absent (e.g. released when its session was deleted).
    marker_cluster: str = ""
    #: The Space's hardware, read only when it is to be kept (deletionPolicy Orphan).
    current_hardware: str | None = None
    requested_hardware: str | None = None
    hub_failure: HubFailure | None = None
    #: The Space carrying this session's marker has just been deleted (by the previous step).
    deleted: bool = False


def deletion_space_id(session: Session, config: OperatorConfig) -> str:
    """The Space a deleting session answers for: the recorded one, else the derived name."""
    return session.status.space_id or space_id_for(session, config)


def _deletion_plan(
    draft: _Draft,
    action: ReleaseSpace | RequestHardware | DeleteSpace | None,
    reason: str,
    message: str,
    requeue_after: float | None = None,
    *,
    done: bool = False,
) -> Plan:
    """A deleting session's plan: its Ready condition says why the finalizer stays or goes, and
    every decision without an action is also an Event (each try of a stuck deletion is visible)."""
    if not draft.failed:
        draft.ready("False", reason, message)
        draft.status.failures = None
        draft.status.next_retry_time = None
    condition = _condition(draft.status, READY)
    assert condition is not None
    events = []
    if action is None:
        kind = "Normal" if done else "Warning"
        events.append(EventNote(kind, condition.reason, condition.message))
    return Plan(action, draft.status, requeue_after, events, done=done)


def decide_deletion(
    session: Session,
    observed: DeletionObservation,
    config: OperatorConfig,
    jitter: float = 0.5,
    *,
    now: datetime,
) -> Plan:
    """Whether the finalizer may go: only once the Space is gone, released by policy, or not ours.

    A session whose status lost its spaceId is still checked under the derived name, so a
    status wiped by hand or restored from an old backup cannot leak a Space. While a duplicate
    the operator asked for may still land, "not found" is not "gone": the finalizer waits. A
    Space kept by `deletionPolicy: Orphan` is first brought back to free hardware (no one is
    accountable for it afterwards), then released: the orphan sweeper must not delete it later.
    """
    unjudged = HardwareVerdict(False, "NotJudged", "no hardware decision is made while deleting")
    draft = _Draft(session, now, session.status.model_copy(deep=True), unjudged)
    draft.status.phase = Phase.DELETING
    space_id = deletion_space_id(session, config)
    orphan = session.spec.deletion_policy == DeletionPolicy.ORPHAN
    if observed.deleted:
        return _deletion_plan(draft, None, "SpaceDeleted", f"Space {space_id} is deleted", done=True)
    failure = observed.hub_failure
    if (
        failure is not None
        and failure.kind is FailureKind.ACCESS_LOST
        and not space_may_exist(session.status)
    ):
        return _deletion_plan(draft, None, "SpaceDeleted", f"no Space {space_id} was ever created", done=True)
    landing = duplicate_may_land(session.status, config, now)
    if (failure is not None and failure.kind in NOT_VISIBLE_KINDS and landing) or (
        failure is None and observed.marker is None and landing
    ):
        end = duplicate_window_end(session.status, config)
        return _deletion_plan(
            draft,
            None,
            "WaitingForHub",
            f"Space {space_id} was just created and the Hub does not show it yet; checking again "
            f"until {_rfc3339(end or now)}",
            config.poll_interval,
        )
    if failure is not None:
        delay = _failure(
            draft,
            failure.kind.value,
            f"cannot {'release' if orphan else 'delete'} Space {space_id} yet: {failure.message}",
            config,
            jitter,
            _hub_failure_delay(failure, config),
        )
        return _deletion_plan(draft, None, failure.kind.value, "", delay)
    if orphan and (observed.marker != session.uid or observed.marker_cluster != config.cluster_id):
        return _deletion_plan(
            draft, None, "SpaceOrphaned", f"deletionPolicy is Orphan; Space {space_id} is kept", done=True
        )
    if orphan:
        held = observed.requested_hardware or observed.current_hardware
        if held is not None and not is_free(held, config):
            free = free_flavor(observed.current_hardware, config)
            plan = _deletion_plan(
                draft,
                RequestHardware(space_id, free),
                "FreeingHardware",
                f"requesting {free} for Space {space_id} (now {held}) before it is kept "
                "(deletionPolicy Orphan): a kept Space must not hold paid hardware",
                0.0,
            )
            # The kept Space changes under its user's eyes: say so, not only that it is kept.
            return replace(plan, events=[EventNote("Normal", plan.reason, plan.message)])
        return _deletion_plan(
            draft,
            ReleaseSpace(space_id),
            "ReleasingSpace",
            f"keeping Space {space_id} (deletionPolicy Orphan)",
        )
    if observed.marker is None:
        return _deletion_plan(draft, None, "SpaceDeleted", f"Space {space_id} is deleted", done=True)
    if observed.marker != session.uid:
        return _deletion_plan(
            draft,
            None,
            "SpaceNotOwned",
            f"Space {space_id} does not carry this session's ownership marker; it is left untouched",
            done=True,
        )
    return _deletion_plan(draft, DeleteSpace(space_id), "DeletingSpace", f"deleting Space {space_id}", 0.0)
