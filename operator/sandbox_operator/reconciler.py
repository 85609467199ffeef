"""The decision core: (session, what was observed) -> (next action, new status).

Nothing here does I/O. The controller gathers an `Observation`, calls `decide`, applies
the one action it returns and observes again, level-triggered like controller-runtime's
Reconcile and shaped like Crossplane's managed reconciler (observe, then create, update
or delete the external resource). Everything the operator does to a Space is decided here,
so it is all testable without a server.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from .api import (
    AgentSessionSpec,
    AgentSessionStatus,
    Condition,
    DeletionPolicy,
    Hardware,
    HardwareStatus,
    Phase,
)
from .config import OperatorConfig

# Condition types.
READY = "Ready"
HARDWARE_APPROVED = "HardwareApproved"

# Hub stages, as huggingface_hub's SpaceStage names them.
STARTING_STAGES = frozenset({"BUILDING", "RUNNING_BUILDING", "APP_STARTING", "RUNNING_APP_STARTING"})
ERROR_STAGES = frozenset({"BUILD_ERROR", "RUNTIME_ERROR", "CONFIG_ERROR", "NO_APP_FILE"})
STOPPED_STAGES = frozenset({"PAUSED", "STOPPED"})

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


@dataclass(frozen=True)
class HealthResult:
    ok: bool
    detail: str


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


@dataclass(frozen=True)
class Session:
    """The parts of an AgentSession object the decision reads."""

    name: str
    namespace: str
    uid: str
    generation: int
    spec: AgentSessionSpec
    status: AgentSessionStatus


# Actions: each is one change to the outside world, applied by the controller.
@dataclass(frozen=True)
class RecordIntent:
    """Persist the Space id and a token before any Hub call, so a crash adopts instead of duplicating."""

    space_id: str
    connection_secret: str


@dataclass(frozen=True)
class CreateSpace:
    space_id: str
    template: str
    private: bool


@dataclass(frozen=True)
class RotateToken:
    """The Space exists but the token is lost (connection Secret deleted): issue a new one."""

    space_id: str


@dataclass(frozen=True)
class PublishConnection:
    """Write the sandbox URL into the connection Secret once the Hub reports it."""

    sandbox_url: str


@dataclass(frozen=True)
class RequestHardware:
    space_id: str
    flavor: str


@dataclass(frozen=True)
class RestartSpace:
    space_id: str


@dataclass(frozen=True)
class DeleteSpace:
    space_id: str


Action = (
    RecordIntent
    | CreateSpace
    | RotateToken
    | PublishConnection
    | RequestHardware
    | RestartSpace
    | DeleteSpace
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

    @property
    def converged(self) -> bool:
        return self.action is None and self.requeue_after is None


def space_id_for(session: Session, config: OperatorConfig) -> str:
    """Deterministic from the UID, so a recreated session (new UID) never reuses an old Space."""
    owner = session.spec.owner or config.default_owner
    return f"{owner}/{config.space_prefix}-{session.uid}"


def connection_secret_name(session: Session) -> str:
    return f"{session.name}-sandbox"


def is_free(flavor: str, config: OperatorConfig) -> bool:
    return flavor in config.free_hardware


def approved_hardware(spec: AgentSessionSpec) -> str | None:
    """The paid flavor the spec's approval covers, if any."""
    if spec.approval is None:
        return None
    return str(spec.approval.hardware)


def target_hardware(spec: AgentSessionSpec, space: SpaceView | None, config: OperatorConfig) -> str:
    """The flavor the Space should run on now: the request if free or approved; never unapproved paid."""
    wanted = str(spec.hardware)
    approved = approved_hardware(spec)
    if is_free(wanted, config) or approved == wanted:
        return wanted
    current = space.current_hardware if space else None
    if current is not None and (is_free(current, config) or current == approved):
        return current
    return Hardware.CPU_BASIC.value


def backoff_delay(failures: int, config: OperatorConfig, jitter: float) -> float:
    """Exponential backoff with +-20% jitter (jitter in [0, 1)), so many sessions do not retry in step."""
    base = min(config.backoff_max, config.backoff_base * (2.0 ** max(0, failures - 1)))
    return round(base * (0.8 + 0.4 * jitter), 3)


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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
    failed: bool = False

    def condition(self, type_: str, status: str, reason: str, message: str) -> None:
        self.status.conditions = set_condition(
            self.status.conditions, type_, status, reason, message, self.session.generation, self.now
        )

    def ready(self, status: str, reason: str, message: str) -> None:
        self.condition(READY, status, reason, message)


def _approval_condition(draft: _Draft, config: OperatorConfig) -> None:
    spec = draft.session.spec
    wanted = str(spec.hardware)
    if is_free(wanted, config):
        draft.condition(HARDWARE_APPROVED, "True", "FreeHardware", f"{wanted} needs no approval")
        return
    approval = spec.approval
    if approval is not None and str(approval.hardware) == wanted:
        by = f" by {approval.approved_by}" + (f": {approval.reason}" if approval.reason else "")
        draft.condition(HARDWARE_APPROVED, "True", "Approved", f"{wanted} approved{by}")
        return
    hint = (
        f"the approval names {approval.hardware}, not {wanted}; an approval is for one flavor"
        if approval is not None
        else "an approver must set spec.approval"
    )
    draft.condition(
        HARDWARE_APPROVED,
        "False",
        "AwaitingApproval",
        f"{wanted} is paid hardware and is not requested until approved ({hint})",
    )


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
    session: Session, observed: Observation, config: OperatorConfig, now: datetime, jitter: float = 0.5
) -> Plan:
    """The next action for a live (not deleting) session, and the status that describes it."""
    draft = _Draft(session, now, session.status.model_copy(deep=True))
    draft.status.observed_generation = session.generation
    _approval_condition(draft, config)
    action, requeue = _next_step(draft, observed, config, jitter)
    if not draft.failed:
        draft.status.failures = None
        draft.status.next_retry_time = None
    return Plan(action, draft.status, requeue, transition_events(session.status, draft.status))


def _next_step(
    draft: _Draft, observed: Observation, config: OperatorConfig, jitter: float
) -> tuple[Action | None, float | None]:
    session = draft.session
    status = draft.status
    if status.space_id is None:
        return _record_intent(draft, space_id_for(session, config)), 0.0
    space_id = status.space_id

    if observed.hub_failure is not None:
        draft.status.phase = Phase.FAILED
        failure = observed.hub_failure
        return None, _failure(
            draft, failure.kind.value, failure.message, config, jitter, _hub_failure_delay(failure, config)
        )

    space = observed.space
    if space is None:
        if observed.secrets_problem is not None:
            draft.status.phase = Phase.FAILED
            return None, _failure(draft, "SecretNotFound", observed.secrets_problem, config, jitter)
        if observed.token is None:
            # The connection Secret is gone too: record the intent (and a new token) again first.
            return _record_intent(draft, space_id), 0.0
        lost = status.url is not None
        draft.status.phase = Phase.CREATING
        draft.status.stage = None
        draft.status.hardware = None
        template = session.spec.template or config.default_template
        if lost:
            draft.ready("False", "SpaceLost", f"Space {space_id} disappeared from the Hub; creating it again")
        else:
            draft.ready("False", "Creating", f"duplicating {template} into {space_id}")
        return CreateSpace(space_id, template, session.spec.private), config.poll_interval

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
    if observed.token is None:
        draft.status.phase = Phase.STARTING
        draft.ready("False", "RotatingToken", "the connection Secret was lost; issuing a new sandbox token")
        return RotateToken(space_id), 0.0
    if space.sandbox_url and observed.connection_url != space.sandbox_url:
        return PublishConnection(space.sandbox_url), 0.0

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
    if space.stage in STOPPED_STAGES:
        draft.status.phase = Phase.STARTING
        draft.ready("False", "Restarting", f"the Space is {space.stage}; restarting it")
        return RestartSpace(space_id), config.poll_interval
    if space.stage in STARTING_STAGES or space.stage != "RUNNING":
        switching = space.requested_hardware not in (None, space.current_hardware) and space.current_hardware
        draft.status.phase = Phase.UPGRADING if switching else Phase.STARTING
        reason = "Building" if "BUILDING" in space.stage else "Starting"
        draft.ready("False", reason, f"the Hub reports stage {space.stage}")
        return None, config.poll_interval

    target = target_hardware(session.spec, space, config)
    if space.requested_hardware != target and space.current_hardware != target:
        draft.status.phase = Phase.UPGRADING
        draft.ready("False", "HardwareSwitching", f"requesting {target} (now on {space.current_hardware})")
        return RequestHardware(space_id, target), config.poll_interval
    if space.current_hardware != target:
        draft.status.phase = Phase.UPGRADING
        draft.ready("False", "HardwareSwitching", f"waiting for the Hub to move the Space to {target}")
        return None, config.poll_interval

    health = observed.health
    if health is None or not health.ok:
        draft.status.phase = Phase.STARTING
        detail = health.detail if health else "not checked yet"
        draft.ready(
            "False", "HealthCheckFailing", f"the sandbox API does not answer its health check: {detail}"
        )
        return None, config.poll_interval

    draft.status.phase = Phase.READY
    draft.ready(
        "True", "SandboxReady", f"Space {space_id} is running on {target} and answers its health check"
    )
    return None, None


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
class FinalizeObservation:
    """What the Hub reports about the Space of a session being deleted."""

    #: The Space's ownership marker (session UID, "" if unmarked); None when the Space is gone.
    marker: str | None = None
    hub_failure: HubFailure | None = None


@dataclass(frozen=True)
class FinalizePlan:
    action: DeleteSpace | None
    done: bool
    reason: str
    message: str
    requeue_after: float | None = None


def finalize_space_id(session: Session, config: OperatorConfig) -> str:
    return session.status.space_id or space_id_for(session, config)


def decide_finalize(
    session: Session, observed: FinalizeObservation, config: OperatorConfig, jitter: float = 0.5
) -> FinalizePlan:
    """Whether the finalizer may go: only once the Space is gone, kept by policy, or not ours.

    A session whose status lost its spaceId is still checked under the derived name, so a
    status wiped by hand or restored from an old backup cannot leak a Space.
    """
    space_id = finalize_space_id(session, config)
    if session.spec.deletion_policy == DeletionPolicy.ORPHAN:
        return FinalizePlan(
            None, True, "SpaceOrphaned", f"deletionPolicy is Orphan; Space {space_id} is kept"
        )
    if observed.hub_failure is not None:
        failure = observed.hub_failure
        failures = (session.status.failures or 0) + 1
        delay = max(_hub_failure_delay(failure, config), backoff_delay(failures, config, jitter))
        return FinalizePlan(
            None,
            False,
            failure.kind.value,
            f"cannot delete Space {space_id} yet: {failure.message}; next try in {delay:.0f}s",
            delay,
        )
    if observed.marker is None:
        return FinalizePlan(None, True, "SpaceDeleted", f"Space {space_id} is deleted")
    if observed.marker != session.uid:
        return FinalizePlan(
            None,
            True,
            "SpaceNotOwned",
            f"Space {space_id} does not carry this session's ownership marker; it is left untouched",
        )
    return FinalizePlan(DeleteSpace(space_id), False, "DeletingSpace", f"deleting Space {space_id}", 0.0)
