"""Conditions and Events: condition types, every reason (one enum that knows its severity),
setting a condition, and the Events its transitions post. Also the RFC 3339 timestamps they carry.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from sandbox_operator.api import AgentSessionStatus, Condition

# Condition types.
READY = "Ready"
HARDWARE_APPROVED = "HardwareApproved"
BUDGET_EXHAUSTED = "BudgetExhausted"
#: Estimated spend reached spec.approval.warnAtUsd (a soft threshold before the budget).
BUDGET_WARNING = "BudgetWarning"
#: Whether agent pods can reach the sandbox with what the connection Secret holds.
AGENT_ACCESS = "AgentAccess"
#: kstatus' abnormal-true conditions: the operator works toward the spec / cannot reach it without a
#: change to the spec.
RECONCILING = "Reconciling"
STALLED = "Stalled"
#: The session is about to be deleted (end of its lifetime or retention): present, True, only from the
#: warning lead time before its deadline on.
EXPIRING = "Expiring"


class Severity(StrEnum):
    """The type of the Event a reason is posted with."""

    NORMAL = "Normal"
    WARNING = "Warning"


class Reason(StrEnum):
    """Every reason the core writes into a condition or an Event, with its severity: a new reason is
    one line here, and its Events are Warnings exactly when it says so."""

    severity: Severity

    def __new__(cls, value: str, severity: Severity = Severity.NORMAL) -> Reason:
        member = str.__new__(cls, value)
        member._value_ = value
        member.severity = severity
        return member

    # Progress and healthy states.
    PENDING = "Pending"
    FREE_HARDWARE = "FreeHardware"
    AWAITING_APPROVAL = "AwaitingApproval"
    APPROVED = "Approved"
    NOT_JUDGED = "NotJudged"
    WITHIN_BUDGET = "WithinBudget"
    PUBLIC_SPACE = "PublicSpace"
    READ_TOKEN_PUBLISHED = "ReadTokenPublished"
    #: No connection Secret yet (none is written before the Space is asked for): nothing to mount.
    NO_CONNECTION_SECRET = "NoConnectionSecret"
    CREATING = "Creating"
    PROVISIONING = "Provisioning"
    ROTATING_TOKEN = "RotatingToken"
    SANDBOX_SLEEPING = "SandboxSleeping"
    RESTARTING = "Restarting"
    BUILDING = "Building"
    STARTING = "Starting"
    HARDWARE_SWITCHING = "HardwareSwitching"
    SANDBOX_READY = "SandboxReady"
    SPACE_DELETED = "SpaceDeleted"
    WAITING_FOR_HUB = "WaitingForHub"
    FREEING_HARDWARE = "FreeingHardware"
    RELEASING_SPACE = "ReleasingSpace"
    DELETING_SPACE = "DeletingSpace"
    SPACE_ORPHANED = "SpaceOrphaned"
    # Lifetimes, pause and idle (core/lifetime.py): planned, so Normal, except the warnings before a deletion.
    PAUSING = "Pausing"
    PAUSED = "Paused"
    IDLE_PAUSED = "IdlePaused"
    LIFETIME_EXPIRED = "LifetimeExpired"
    RETENTION_EXPIRED = "RetentionExpired"
    LIFETIME_ENDING = "LifetimeEnding", Severity.WARNING
    #: spec.lifetime asks for longer than the operator's maximum age: the maximum is used (Expiring=False).
    LIFETIME_CAPPED = "LifetimeCapped", Severity.WARNING
    RETENTION_ENDING = "RetentionEnding", Severity.WARNING
    APPROVAL_REQUESTED = "ApprovalRequested"
    HARDWARE_RECEIPT = "HardwareReceipt"
    BELOW_WARNING = "BelowWarning"
    # Warm pools (core/pool/).
    WARM_SPACE_CLAIMED = "WarmSpaceClaimed"
    NO_WARM_SPACE = "NoWarmSpace"
    POOL_READY = "PoolReady"
    POOL_FILLING = "PoolFilling"
    POOL_NOT_FOUND = "PoolNotFound", Severity.WARNING
    POOL_MISMATCH = "PoolMismatch", Severity.WARNING
    #: spec.replicas asks for more than the operator's --pool-max-replicas: the maximum is used.
    REPLICAS_CAPPED = "ReplicasCapped", Severity.WARNING
    # Hub failures (FailureKind): retried with backoff.
    HUB_RATE_LIMITED = "HubRateLimited", Severity.WARNING
    HUB_UNAUTHORIZED = "HubUnauthorized", Severity.WARNING
    HUB_FORBIDDEN = "HubForbidden", Severity.WARNING
    HUB_UNAVAILABLE = "HubUnavailable", Severity.WARNING
    HUB_BAD_REQUEST = "HubBadRequest", Severity.WARNING
    TEMPLATE_NOT_FOUND = "TemplateNotFound", Severity.WARNING
    SPACE_NOT_FOUND = "SpaceNotFound", Severity.WARNING
    HUB_ACCESS_LOST = "HubAccessLost", Severity.WARNING
    # Problems someone has to look at: the Space, the spec, money, access, or the operator itself.
    BUILD_ERROR = "BuildError", Severity.WARNING
    RUNTIME_ERROR = "RuntimeError", Severity.WARNING
    SECRET_NOT_FOUND = "SecretNotFound", Severity.WARNING
    SPACE_NOT_OWNED = "SpaceNotOwned", Severity.WARNING
    HEALTH_CHECK_FAILING = "HealthCheckFailing", Severity.WARNING
    #: The operator's finalizer is not on the session yet: no Space is asked for until it is.
    FINALIZER_MISSING = "FinalizerMissing", Severity.WARNING
    SPACE_LOST = "SpaceLost", Severity.WARNING
    BUDGET_SPENT = "BudgetSpent", Severity.WARNING
    BUDGET_NEARLY_SPENT = "BudgetNearlySpent", Severity.WARNING
    DENIED = "Denied", Severity.WARNING
    APPROVAL_EXPIRED = "ApprovalExpired", Severity.WARNING
    APPROVAL_EXPIRING = "ApprovalExpiring", Severity.WARNING
    APPROVAL_EXCEEDS_LIMIT = "ApprovalExceedsLimit", Severity.WARNING
    APPROVAL_NOT_ENFORCED = "ApprovalNotEnforced", Severity.WARNING
    APPROVER_NOT_AUTHORIZED = "ApproverNotAuthorized", Severity.WARNING
    TEMPLATE_NOT_ALLOWED = "TemplateNotAllowed", Severity.WARNING
    OWNER_NOT_ALLOWED = "OwnerNotAllowed", Severity.WARNING
    PUBLIC_SPACE_NOT_ALLOWED = "PublicSpaceNotAllowed", Severity.WARNING
    SECRETS_NOT_ENFORCED = "SecretsNotEnforced", Severity.WARNING
    CONNECTION_SECRET_CONFLICT = "ConnectionSecretConflict", Severity.WARNING
    NO_READ_TOKEN = "NoReadToken", Severity.WARNING
    READ_TOKEN_SECRET_NOT_FOUND = "ReadTokenSecretNotFound", Severity.WARNING
    SECRET_INVALID = "SecretInvalid", Severity.WARNING
    INTERNAL_ERROR = "InternalError", Severity.WARNING
    #: The spec does not parse (a CRD older than the operator admitted it): nothing in it is acted on.
    SPEC_INVALID = "SpecInvalid", Severity.WARNING


@dataclass(frozen=True)
class EventNote:
    type: str  # Normal | Warning
    reason: str
    message: str
    #: The condition whose change the Event tells, if it tells one (transition_events).
    condition: str | None = None


def rfc3339(moment: datetime, precise: bool = False) -> str:
    """Seconds for conditions (as Kubernetes writes them); microseconds where spend is computed from it."""
    moment = moment.astimezone(UTC)  # isoformat, not strftime: that writes the year 1 as "1"
    return moment.isoformat(timespec="microseconds" if precise else "seconds").replace("+00:00", "Z")


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
        previous.last_transition_time if previous is not None and previous.status == status else rfc3339(now)
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


def condition_of(status: AgentSessionStatus, type_: str) -> Condition | None:
    return next((c for c in status.conditions if c.type == type_), None)


#: The Normal reasons a user acts on, posted as Events besides every Warning: the sandbox is ready
#: (or asleep), an approval is awaited or given, the budget, a new sandbox token for agent pods.
#: Other Normal transitions are progress only (creating, building, starting): the conditions and
#: the log show them, and a thousand sessions do not write thousands of Events for them.
NOTIFIED_REASONS = frozenset(
    {
        Reason.SANDBOX_READY,
        Reason.SANDBOX_SLEEPING,
        Reason.AWAITING_APPROVAL,
        Reason.APPROVED,
        Reason.WITHIN_BUDGET,
        Reason.ROTATING_TOKEN,
        Reason.PAUSED,
        Reason.IDLE_PAUSED,
        Reason.LIFETIME_EXPIRED,
        Reason.RETENTION_EXPIRED,
    }
)


#: Conditions derived from the others (core/progress.py): those others post the Events.
DERIVED_CONDITIONS = frozenset({RECONCILING, STALLED})


def transition_events(old: AgentSessionStatus, new: AgentSessionStatus) -> list[EventNote]:
    """One Event for each condition whose status or reason changed to one a user acts on: every
    Warning, and the Normal reasons in NOTIFIED_REASONS."""
    events = []
    for condition in new.conditions:
        if condition.type in DERIVED_CONDITIONS:
            continue
        before = condition_of(old, condition.type)
        if before is not None and (before.status, before.reason) == (condition.status, condition.reason):
            continue
        kind = Reason(condition.reason).severity
        if kind is Severity.NORMAL and condition.reason not in NOTIFIED_REASONS:
            continue
        events.append(
            EventNote(
                kind,
                condition.reason,
                f"{condition.type}={condition.status}: {condition.message}",
                condition=condition.type,
            )
        )
    return events
