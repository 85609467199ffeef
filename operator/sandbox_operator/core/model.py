"""What the core decides on and what it returns: the session, what was observed of its Space,
the actions (each one change to the outside world, applied by the controller), the `Plan`, and
the ownership marker every Space of ours carries (the Hub client writes and reads it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from sandbox_operator.api import AgentSessionSpec, AgentSessionStatus, Condition
from sandbox_operator.config.settings import OperatorConfig
from sandbox_operator.core.conditions import READY, EventNote, Reason
from sandbox_operator.core.prices import FALLBACK_USD_PER_HOUR

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


def previous_cluster(marker_cluster: str, config: OperatorConfig) -> bool:
    """A cluster id this installation wrote into markers before, not the current one: 0.1.0's default,
    or one the operator is told of (--previous-cluster-ids). Only a session's own Space (its marker
    names the session's UID, unique to this cluster) is re-marked from it; the sweeper never takes
    such a marker for this cluster's, since other clusters sharing the Hub owner may have written the
    same id."""
    return marker_cluster in config.earlier_cluster_ids()


def own_cluster(marker_cluster: str, config: OperatorConfig) -> bool:
    """The marker's cluster id is this installation's, now or before (see `previous_cluster`)."""
    return marker_cluster == config.cluster_id or previous_cluster(marker_cluster, config)


class FailureKind(StrEnum):
    """Why a Hub call failed; each maps to a condition reason and a retry policy."""

    RATE_LIMITED = Reason.HUB_RATE_LIMITED
    UNAUTHORIZED = Reason.HUB_UNAUTHORIZED
    FORBIDDEN = Reason.HUB_FORBIDDEN
    UNAVAILABLE = Reason.HUB_UNAVAILABLE
    BAD_REQUEST = Reason.HUB_BAD_REQUEST
    TEMPLATE_NOT_FOUND = Reason.TEMPLATE_NOT_FOUND
    #: The Hub does not show the Space (404, or a 401 it answers for repos the token cannot see).
    NOT_FOUND = Reason.SPACE_NOT_FOUND
    #: A Space is not found and the token cannot see its owner namespace: not proof it is gone.
    ACCESS_LOST = Reason.HUB_ACCESS_LOST

    @property
    def reason(self) -> Reason:
        """The condition reason this failure is reported with."""
        return Reason(self.value)


#: What the Hub answers for a fresh duplicate it does not show yet: within the duplicate window
#: these mean "not visible yet", never "gone" or "bad token".
NOT_VISIBLE_KINDS = frozenset({FailureKind.NOT_FOUND, FailureKind.UNAUTHORIZED})
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
    #: The ownership marker's cluster id ("" if absent); None when the variables were not read.
    marker_cluster: str | None = None
    #: Seconds of inactivity after which the Hub puts the Space to sleep (gcTimeout); None: never.
    sleep_time: int | None = None


@dataclass(frozen=True)
class HealthResult:
    ok: bool
    detail: str
    #: The HTTP status the sandbox answered; None when it could not be reached.
    status: int | None = None
    #: When the sandbox was last used, if its health answer says so (`lastActivityTime`).
    last_activity: datetime | None = None


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
    #: Since when a policy of that name and a binding enforcing it exist (RFC 3339; policy.enforced_since).
    policy_since: str | None = None
    #: Whether a SubjectAccessReview says spec.approval's approver may approve it here; None: not asked.
    approver_authorized: bool | None = None
    #: The same about the author of a spec.denial of the requested flavor; None: not asked.
    denier_authorized: bool | None = None
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
    #: Since when the connection Secret says the session is paused ("" or None: not paused).
    connection_paused_since: str | None = None
    #: status.duplicateRequestedTime was recorded by an earlier operator process: this one sent no
    #: duplicate for the session, so whether that one ever left (or died first) is unknown.
    create_record_inherited: bool = False


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
    #: metadata.creationTimestamp, where lifetimes count from; None: unknown (no lifetime applies).
    created: datetime | None = None
    #: Why the spec cannot be read (None: it can). Then `spec` holds only the fields that parse on their
    #: own (the rest default): enough for the finalizer (owner, deletionPolicy), never acted on otherwise.
    spec_problem: str | None = None


# Actions: each is one change to the outside world, applied by the controller.
@dataclass(frozen=True)
class RecordIntent:
    """Name the Space and choose its token before any Hub call: the Space id is persisted with the
    create record (CreateSpace), so a crash adopts instead of duplicating. The connection Secret (with
    the Hub read token agent pods need) is written once, whole, when the Hub reports the sandbox URL
    (PublishConnection); a token lost to a crash before then is replaced (RotateToken)."""

    space_id: str
    connection_secret: str
    #: The connection Secret's hubToken ("": none).
    hub_token: str = ""


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
class MigrateMarker:
    """Rewrite the cluster id in the marker of the session's own Space, which names one this
    installation used before, so the sweeper knows the Space as this cluster's again."""

    space_id: str
    cluster_id: str


@dataclass(frozen=True)
class RecordReceipt:
    """Write the plan's status now: it holds the receipt of paid hardware that is about to go."""


@dataclass(frozen=True)
class ReleaseSpace:
    """Keep the Space but drop this cluster from its marker, so the orphan sweeper never takes it."""

    space_id: str


@dataclass(frozen=True)
class PauseSpace:
    """Pause the Space on the Hub. `for_idle`: the operator pauses an idle session, so it first records
    the pause in status and sets spec.paused, which the user sets back to false to resume."""

    space_id: str
    for_idle: bool = False


@dataclass(frozen=True)
class PublishPause:
    """Tell agent pods, through the connection Secret, since when the session is paused and how to
    resume it ("" and "": it is not paused)."""

    paused_since: str
    resume: str


@dataclass(frozen=True)
class DeleteSession:
    """Delete the AgentSession object (its lifetime or retention ended): the finalizer then releases
    the Space with the session's deletionPolicy."""

    reason: str


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
    | PauseSpace
    | PublishPause
    | DeleteSession
    | RecordReceipt
    | MigrateMarker
)


@dataclass(frozen=True)
class Plan:
    """What the core decided for one step: at most one action, the status that describes the
    session after it, when to look again, and the Events to post. The same shape for a live
    session and for one being deleted."""

    action: Action | None
    status: AgentSessionStatus
    requeue_after: float | None
    events: list[EventNote] = field(default_factory=list)
    #: The session is being deleted and nothing of it is left to do: the finalizer may go.
    done: bool = False
    #: The latest time (seconds) to look again even while listings of the Space show nothing new: a
    #: budget, lifetime or approval clock, or a switch of paid hardware whose bill changes unseen.
    deadline: float | None = None

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


def space_id_for(session: Session, config: OperatorConfig) -> str:
    """Deterministic from the UID, so a recreated session (new UID) never reuses an old Space."""
    owner = session.spec.owner or config.default_owner
    return f"{owner}/{config.space_prefix}-{session.uid}"


def connection_secret_name(session: Session) -> str:
    return f"{session.name}-sandbox"


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
