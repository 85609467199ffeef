"""The AgentSession API: pydantic models that are the single source of the CRD schema.

The same models parse what the operator reads from the API server, so the schema the
API server enforces and the types the code relies on cannot drift apart.
"""

from __future__ import annotations

import reprlib
from collections.abc import Mapping, MutableMapping
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    model_validator,
)

GROUP = "agents.sandbox-operator.dev"
VERSION = "v1alpha1"
KIND = "AgentSession"
PLURAL = "agentsessions"
SINGULAR = "agentsession"
SHORT_NAMES = ["ags"]
API_VERSION = f"{GROUP}/{VERSION}"
#: The warm pool kind: Spaces built ahead, claimed by sessions that name the pool (core/pool.py).
POOL_KIND = "AgentSessionPool"
POOL_PLURAL = "agentsessionpools"
#: The label naming the pool on what the operator makes for it; `status.selector` selects by it.
POOL_LABEL = f"{GROUP}/pool"
POOL_SINGULAR = "agentsessionpool"
POOL_SHORT_NAMES = ["agsp"]

#: The finalizer on every session and pool: the Space goes (or is released) before the object does.
FINALIZER = f"{GROUP}/finalizer"
#: Where kopf keeps its handlers' progress (the finalizer's retries and their outcome): the status stanza
#: of this name, which only the operator writes (the status subresource). In annotations, which anyone
#: who may edit a session writes, a forged "success" of the finalizer would skip the Space's deletion.
HANDLER_PROGRESS = "kopf"

#: What the operator (and kopf, for its finalizer, patches and Events) reads of a session's or pool's
#: metadata. The rest (annotations, labels, managedFields: as large as a tenant likes) is dropped from
#: kopf's copy of the object as each watch event arrives, so memory per object stays bounded.
READ_METADATA = frozenset(
    {"name", "namespace", "uid", "generation", "resourceVersion", "creationTimestamp", "deletionTimestamp",
     "finalizers"}
)  # fmt: skip


def keep_only_what_is_read(obj: Mapping[str, object]) -> None:
    """Drop, in place, the metadata the operator never reads from an object kopf keeps (its live body)."""
    meta = obj.get("metadata")
    if isinstance(meta, MutableMapping):  # the dict itself: kopf's views of the object read through it
        for key in [key for key in meta if key not in READ_METADATA]:
            del meta[key]


#: The Space secret that carries the sandbox's API token.
SANDBOX_TOKEN_SECRET = "SANDBOX_API_TOKEN"


class Hardware(StrEnum):
    """Every Space hardware flavor the Hub offers (huggingface_hub's SpaceHardware, pinned)."""

    CPU_BASIC = "cpu-basic"
    CPU_UPGRADE = "cpu-upgrade"
    ZERO_A10G = "zero-a10g"
    T4_SMALL = "t4-small"
    T4_MEDIUM = "t4-medium"
    L4X1 = "l4x1"
    L4X4 = "l4x4"
    L40SX1 = "l40sx1"
    L40SX4 = "l40sx4"
    L40SX8 = "l40sx8"
    A10G_SMALL = "a10g-small"
    A10G_LARGE = "a10g-large"
    A10G_LARGEX2 = "a10g-largex2"
    A10G_LARGEX4 = "a10g-largex4"
    A100_LARGE = "a100-large"
    A100X4 = "a100x4"
    A100X8 = "a100x8"
    RTX_PRO_6000 = "rtx-pro-6000"
    RTX_PRO_6000X2 = "rtx-pro-6000x2"
    RTX_PRO_6000X4 = "rtx-pro-6000x4"
    RTX_PRO_6000X8 = "rtx-pro-6000x8"


class DeletionPolicy(StrEnum):
    DELETE = "Delete"
    ORPHAN = "Orphan"


# The Hub's repo-id rule (huggingface_hub's validate_repo_id). The regex part is enforced by
# the schema `pattern`; the rest by CEL rules, since RE2 has no lookahead.
# A part starts and ends with a word character, as the `\b` anchors of the Hub's rule demand.
# Word characters are spelled out in ASCII: the API server's `\w` (Go's RE2) is ASCII, so this is what
# it enforces, and Unicode `\w` under pydantic's regex engine compiles the bounded repetitions into
# automata of about 10 MiB per part, resident for the operator's life.
_WORD = "[A-Za-z0-9_]"
_NAME_PART = rf"{_WORD}(?:[A-Za-z0-9_\-.]{{0,94}}{_WORD})?"
REPO_ID_PATTERN = rf"^{_NAME_PART}/{_NAME_PART}$"
NAMESPACE_PATTERN = rf"^{_NAME_PART}$"
_REPO_ID_CEL = [
    {"rule": "!self.contains('--') && !self.contains('..')", "message": "must not contain '--' or '..'"},
    {"rule": "!self.endsWith('.git')", "message": "must not end with '.git'"},
]
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
K8S_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"


def _check_repo_id_rules(value: str) -> str:
    """Mirror of the CEL rules, so parsing in Python rejects what the API server rejects."""
    if "--" in value or ".." in value:
        raise ValueError("must not contain '--' or '..'")
    if value.endswith(".git"):
        raise ValueError("must not end with '.git'")
    return value


RepoId = Annotated[
    str,
    Field(
        pattern=REPO_ID_PATTERN, max_length=193, json_schema_extra={"x-kubernetes-validations": _REPO_ID_CEL}
    ),
    AfterValidator(_check_repo_id_rules),
]
HubNamespace = Annotated[
    str,
    Field(
        pattern=NAMESPACE_PATTERN, max_length=96, json_schema_extra={"x-kubernetes-validations": _REPO_ID_CEL}
    ),
    AfterValidator(_check_repo_id_rules),
]


def list_map(key: str) -> dict[str, JsonValue]:
    """Schema marks of a list the API server keeps as a map keyed by `key`: it refuses two entries
    with one key, naming the field, and server-side apply merges entries by key (each field manager
    owns its own) instead of replacing the whole list."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": [key]}


class _Model(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore", use_enum_values=True)


_SpecT = TypeVar("_SpecT", bound=_Model)


class SecretKeySelector(_Model):
    name: str = Field(
        description="Name of a Kubernetes Secret in the session's namespace.",
        pattern=K8S_NAME_PATTERN,
        max_length=253,
    )
    key: str = Field(
        description="Key within that Secret whose value is injected.", min_length=1, max_length=253
    )


class SpaceSecretSource(_Model):
    name: str = Field(
        description=(
            "Name of the Space secret (an environment variable in the sandbox). "
            f"{SANDBOX_TOKEN_SECRET} is reserved for the sandbox API token."
        ),
        pattern=ENV_NAME_PATTERN,
        max_length=128,
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": f"self != '{SANDBOX_TOKEN_SECRET}'",
                    "message": f"{SANDBOX_TOKEN_SECRET} is reserved for the sandbox API token",
                }
            ]
        },
    )
    secret_key_ref: SecretKeySelector = Field(
        alias="secretKeyRef", description="The Kubernetes Secret key whose value becomes this Space secret."
    )


#: Shortest sleep time a session may ask for: shorter would put a sandbox to sleep between an agent's
#: steps (every wake-up restarts the app).
MIN_SLEEP_TIME_SECONDS = 60

#: Upper bounds that catch typos (an extra zero) at admission; operators set tighter limits in config.
MAX_APPROVAL_USD_PER_HOUR = 1000.0
MAX_APPROVAL_BUDGET_USD = 100000.0
#: The longest span of time any spec field or operator option may name (ten years): the schema's maximum
#: of every duration in seconds, and the bound of the operator's options of the same kind, so the API
#: server refuses what the operator would otherwise cut down, and no deadline leaves datetime's range.
MAX_DURATION_SECONDS = 10 * 365 * 24 * 3600
#: The most unclaimed Spaces a pool may ask for, and the bound of the operator's --pool-max-replicas.
MAX_POOL_REPLICAS = 10000


def _at_most(ceiling: int) -> BeforeValidator:
    """Read a count above `ceiling` (admitted by a CRD older than the schema's maximum) as `ceiling`."""
    return BeforeValidator(
        lambda value: min(value, ceiling) if isinstance(value, int) and not isinstance(value, bool) else value
    )


# Counts in a spec, bounded in the schema (the bounds stay inside the type, before the validator, so
# that they become the schema's minimum and maximum); more than the maximum is read as the maximum.
#: Seconds, from 0.
Seconds = Annotated[int, Field(ge=0, le=MAX_DURATION_SECONDS), _at_most(MAX_DURATION_SECONDS)]
#: Seconds, from 1.
PositiveSeconds = Annotated[int, Field(ge=1, le=MAX_DURATION_SECONDS), _at_most(MAX_DURATION_SECONDS)]
#: A sleep time in seconds.
SleepSeconds = Annotated[
    int, Field(ge=MIN_SLEEP_TIME_SECONDS, le=MAX_DURATION_SECONDS), _at_most(MAX_DURATION_SECONDS)
]
#: A pool's replicas.
Replicas = Annotated[int, Field(ge=0, le=MAX_POOL_REPLICAS), _at_most(MAX_POOL_REPLICAS)]

#: The first and last moments the operator can represent: a time beyond them is read as them, and
#: date arithmetic that would leave the range stops at them instead of raising.
EARLIEST = datetime.min.replace(tzinfo=UTC)
LATEST = datetime.max.replace(tzinfo=UTC)


def parse_rfc3339(value: str) -> datetime:
    """An RFC 3339 time as an aware UTC datetime (one without an offset is read as UTC). A time whose
    offset takes it past datetime's range (year 9999 behind UTC, year 1 ahead of it) is read as the
    last or first representable moment rather than failing every pass that compares it."""
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        return LATEST if moment.year > 1 else EARLIEST


def shifted(moment: datetime, seconds: float) -> datetime:
    """`moment` plus `seconds`, saturating at the representable range instead of overflowing."""
    try:
        return moment + timedelta(seconds=seconds)
    except OverflowError:
        return LATEST if seconds > 0 else EARLIEST


#: RFC 3339 as the operator reads it: a year from 0001, real month, day, hour, minute and second
#: ranges, and an offset within +-23:59. The API server's `date-time` format alone admits offsets such
#: as +24:00 and the year 0, which no datetime can hold.
RFC3339_PATTERN = (
    r"^([0-9]{3}[1-9]|[0-9]{2}[1-9][0-9]|[0-9][1-9][0-9]{2}|[1-9][0-9]{3})-(0[1-9]|1[0-2])-"
    r"(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?"
    r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)
_TIME_SCHEMA: dict[str, JsonValue] = {"format": "date-time"}


def _check_rfc3339(value: str) -> str:
    """Parse like the operator does, so Python refuses what the schema (pattern) should refuse."""
    parse_rfc3339(value)
    return value


#: An RFC 3339 time in the spec, kept as written (an approval's fingerprint digests it as is).
Timestamp = Annotated[
    str,
    Field(max_length=64, pattern=RFC3339_PATTERN, json_schema_extra=_TIME_SCHEMA),
    AfterValidator(_check_rfc3339),
]
#: An RFC 3339 time in the spec, read as a UTC datetime.
Moment = Annotated[
    datetime,
    BeforeValidator(lambda value: parse_rfc3339(value) if isinstance(value, str) else value),
    Field(json_schema_extra={"pattern": RFC3339_PATTERN, "maxLength": 64}),
]

_APPROVAL_RULES: list[JsonValue] = [
    {
        "rule": "has(self.hardware) || has(self.maxUsdPerHour)",
        "message": "an approval names a hardware flavor or grants a maxUsdPerHour budget",
    },
    {
        "rule": "!has(self.warnAtUsd) || !has(self.budgetUsd) || self.warnAtUsd < self.budgetUsd",
        "message": "warnAtUsd must be below budgetUsd: it warns before the budget is spent",
        "fieldPath": ".warnAtUsd",
    },
]


class Approval(_Model):
    model_config = ConfigDict(
        **_Model.model_config, json_schema_extra={"x-kubernetes-validations": _APPROVAL_RULES}
    )

    hardware: Hardware | None = Field(
        default=None,
        description=(
            "The paid flavor approved; it must equal spec.hardware to take effect. Omit it to grant a "
            "standing budget with maxUsdPerHour instead."
        ),
    )
    approved_by: str = Field(
        alias="approvedBy",
        description="Kubernetes username of the approver; the API server checks it is the requesting user.",
        min_length=1,
        max_length=253,
    )
    approver_groups: list[Annotated[str, Field(min_length=1, max_length=253)]] | None = Field(
        default=None,
        alias="approverGroups",
        description=(
            "Groups of the approver whose rights count (e.g. a role bound to a group); the API server admits "
            "only groups the approving user is in, and the operator checks the approver's rights with them. "
            "`sandbox-operator approve` fills it in."
        ),
        max_length=64,
    )
    reason: str | None = Field(default=None, description="Why the upgrade was approved.", max_length=1024)
    max_usd_per_hour: float | None = Field(
        default=None,
        alias="maxUsdPerHour",
        description="Standing approval of any flavor costing at most this much per hour (USD).",
        gt=0,
        le=MAX_APPROVAL_USD_PER_HOUR,
    )
    budget_usd: float | None = Field(
        default=None,
        alias="budgetUsd",
        description=(
            "Total estimated spend (USD) allowed on paid hardware; once reached, the Space goes back to "
            "cpu-basic and BudgetExhausted becomes True."
        ),
        gt=0,
        le=MAX_APPROVAL_BUDGET_USD,
    )
    warn_at_usd: float | None = Field(
        default=None,
        alias="warnAtUsd",
        description=(
            "Estimated spend (USD) at which the session raises BudgetWarning=True and an Event, before "
            "the budget is spent."
        ),
        gt=0,
        le=MAX_APPROVAL_BUDGET_USD,
    )
    expires_at: Timestamp | None = Field(
        default=None,
        alias="expiresAt",
        description=(
            "When the approval ends (RFC 3339); the Space then returns to free hardware and the session "
            "waits for an approval again. The operator's maximum approval duration may end it sooner."
        ),
    )


class Denial(_Model):
    """An approver's refusal of one paid flavor; the admission policy checks it like an approval."""

    hardware: Hardware = Field(
        description="The paid flavor refused; the session does not ask again while spec.hardware names it."
    )
    denied_by: str = Field(
        alias="deniedBy",
        description="Kubernetes username of the approver who denied; the API server checks it is theirs.",
        min_length=1,
        max_length=253,
    )
    approver_groups: list[Annotated[str, Field(min_length=1, max_length=253)]] | None = Field(
        default=None,
        alias="approverGroups",
        description="Groups of the denier whose rights count, as for an approval.",
        max_length=64,
    )
    reason: str = Field(description="Why it was denied, shown to the session's users.", min_length=1,
                        max_length=1024)  # fmt: skip
    denied_at: Timestamp | None = Field(default=None, alias="deniedAt", description="When (RFC 3339).")


_LIFETIME_ONE_OF = "set exactly one of ttlSeconds (seconds from creation) or expiresAt (an RFC 3339 time)"
_LIFETIME_RULES: list[JsonValue] = [
    {"rule": "has(self.ttlSeconds) != has(self.expiresAt)", "message": _LIFETIME_ONE_OF}
]


class Lifetime(_Model):
    """How long a session may live; paused time does not count unless the operator says so."""

    model_config = ConfigDict(
        **_Model.model_config, json_schema_extra={"x-kubernetes-validations": _LIFETIME_RULES}
    )

    ttl_seconds: PositiveSeconds | None = Field(
        default=None,
        alias="ttlSeconds",
        description="Seconds from the session's creation after which it is deleted (deletionPolicy applies).",
    )
    expires_at: Moment | None = Field(
        default=None,
        alias="expiresAt",
        description=(
            "When the session is deleted (RFC 3339), read as the lifetime from its creation to this time: "
            "time paused extends it unless the operator counts paused time."
        ),
    )

    @model_validator(mode="after")
    def _one_of(self) -> Lifetime:
        """Mirror of the CEL rule, so parsing in Python rejects what the API server rejects."""
        if (self.ttl_seconds is None) == (self.expires_at is None):
            raise ValueError(_LIFETIME_ONE_OF)
        return self


class IdlePolicy(_Model):
    pause_after_seconds: Seconds | None = Field(
        default=None,
        alias="pauseAfterSeconds",
        description=(
            "Pause the session once its sandbox has not been used for this long (its Space asleep, or "
            "the activity its health endpoint reports); 0: never. Empty: the operator's default."
        ),
    )
    retention_seconds: Seconds | None = Field(
        default=None,
        alias="retentionSeconds",
        description=(
            "Delete the session once it has been paused (by spec.paused or by idleness) for this long; "
            "0: never. Empty: the operator's default."
        ),
    )


def _immutable(field: str, why: str) -> JsonValue:
    """A transition rule: the field keeps the value (or absence) it had when the session was created."""
    return {
        "rule": f"has(self.{field}) == has(oldSelf.{field}) && "
        f"(!has(self.{field}) || self.{field} == oldSelf.{field})",
        "message": f"spec.{field} is immutable: {why}; delete and recreate the session to change it",
        "fieldPath": f".{field}",
    }


_SPEC_RULES: list[JsonValue] = [
    _immutable("owner", "the Space is created under it"),
    _immutable("template", "the Space is duplicated from it"),
    _immutable("private", "the Space is created with this visibility"),
    _immutable("poolRef", "a Space is claimed from the pool once, when the session starts"),
]


class PoolRef(_Model):
    name: str = Field(
        description="Name of an AgentSessionPool in the session's namespace.",
        pattern=K8S_NAME_PATTERN,
        max_length=253,
    )


class LaunchType(StrEnum):
    """How a session got its Space: claimed from a warm pool, or created (duplicated) for it."""

    WARM = "warm"
    COLD = "cold"


class AgentSessionSpec(_Model):
    model_config = ConfigDict(
        **_Model.model_config, json_schema_extra={"x-kubernetes-validations": _SPEC_RULES}
    )

    owner: HubNamespace | None = Field(
        default=None,
        description="Hub user or organization that owns the Space. Empty: the operator's default owner.",
    )
    template: RepoId | None = Field(
        default=None,
        description="Space to duplicate, as 'namespace/name'. Empty: the operator's default template.",
    )
    hardware: Hardware = Field(
        default=Hardware.CPU_BASIC,
        description=(
            "Hardware flavor for the Space. The Space always starts on cpu-basic; a paid flavor is "
            "requested only once spec.approval approves it."
        ),
    )
    private: bool = Field(default=True, description="Whether the Space is private to its owner.")
    secrets: list[SpaceSecretSource] = Field(
        default_factory=list,
        description="Extra Space secrets, one per name, read from Secrets in the session's namespace at "
        "Space creation.",
        max_length=64,
        json_schema_extra=list_map("name"),
    )
    deletion_policy: DeletionPolicy = Field(
        default=DeletionPolicy.DELETE,
        alias="deletionPolicy",
        description=(
            "Delete: the Space is deleted with the session. Orphan: the Space is kept, back on free "
            "hardware (cpu-basic is requested before it is released), and no longer managed by the operator."
        ),
    )
    approval: Approval | None = Field(
        default=None, description="Approval of a paid hardware flavor by someone entitled to grant it."
    )
    denial: Denial | None = Field(
        default=None,
        description="Denial of the requested paid flavor by someone entitled to approve it; it wins over "
        "an approval of that flavor.",
    )
    requested_by: str | None = Field(
        default=None,
        alias="requestedBy",
        description=(
            "Who asks for spec.hardware (optional, shown to approvers); the API server admits it only as "
            "the username of whoever sets it or changes spec.hardware beside it."
        ),
        min_length=1,
        max_length=253,
    )
    sleep_time_seconds: SleepSeconds | None = Field(
        default=None,
        alias="sleepTimeSeconds",
        description=(
            "Seconds without requests after which the Hub puts the Space to sleep on paid hardware (it is "
            "billed nothing while asleep and wakes on the next request). Empty: the operator's default; "
            "capped at the operator's maximum. Paid hardware never sleeps unless a sleep time is set, so "
            "one is always sent. cpu-basic's sleep time is fixed by the Hub (48 h) and not set here."
        ),
    )
    lifetime: Lifetime | None = Field(
        default=None,
        description=(
            "How long the session lives before it is deleted (ttlSeconds or expiresAt). Empty: the "
            "operator's default; never beyond the operator's maximum age."
        ),
    )
    paused: bool = Field(
        default=False,
        description=(
            "Pause the Space on the Hub (nothing is billed, the sandbox does not answer); false resumes "
            "it. The operator sets it when it pauses an idle session."
        ),
    )
    idle: IdlePolicy | None = Field(
        default=None, description="When an unused session is paused, and a paused one deleted."
    )
    hub_token_secret_ref: SecretKeySelector | None = Field(
        default=None,
        alias="hubTokenSecretRef",
        description=(
            "A Secret key in the session's namespace holding a Hub token that may read the private Space "
            "(e.g. a fine-grained read-only token); published to agent pods as the connection Secret's "
            "hubToken instead of the operator's configured read token."
        ),
    )
    pool_ref: PoolRef | None = Field(
        default=None,
        alias="poolRef",
        description=(
            "Claim a ready Space from this warm pool instead of creating one: the session is Ready as soon "
            "as the claim is recorded, with a sandbox token of its own. With no ready Space (or a spec the "
            "pool's Spaces do not match: another owner or template, other spec.secrets than the pool's, a "
            "public Space) the Space is created as usual, and status.launchType says which happened."
        ),
    )


def _field_path(location: tuple[int | str, ...]) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in location)


def read_spec(raw: Mapping[str, Any]) -> tuple[AgentSessionSpec, str | None]:
    """The spec as the operator reads it, and why it cannot when it cannot (each failing field named).
    A spec that does not parse (a CRD older than this schema admitted it) is then read field by field:
    what parses on its own is kept, the rest defaults, so the finalizer still knows the owner and the
    deletionPolicy; the operator acts on nothing else of it."""
    return _read_fields(AgentSessionSpec, raw)


def read_pool_spec(raw: Mapping[str, Any]) -> tuple[AgentSessionPoolSpec, str | None]:
    """A pool's spec read as a session's is (`read_spec`): a pool whose spec cannot be read says so
    in its status (Stalled) instead of stopping its loop."""
    return _read_fields(AgentSessionPoolSpec, raw)


def _read_fields(model: type[_SpecT], raw: Mapping[str, Any]) -> tuple[_SpecT, str | None]:
    try:
        return model.model_validate(raw), None
    except ValidationError as error:
        problem = "; ".join(
            f"spec{_field_path(detail['loc'])}: {detail['msg']} (got {reprlib.repr(detail['input'])})"
            for detail in error.errors()
        )
    readable = {}
    for name, field in model.model_fields.items():
        key = field.alias or name
        if key not in raw:
            continue
        try:
            model.model_validate({key: raw[key]})
        except ValidationError:
            continue
        readable[key] = raw[key]
    return model.model_validate(readable), problem


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(_Model):
    type: str = Field(description="Type of condition, e.g. Ready.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(description="One-word CamelCase reason for the last transition.")
    message: str = Field(default="", description="Human-readable details.")
    last_transition_time: str = Field(
        alias="lastTransitionTime", description="When the status last changed (RFC 3339)."
    )
    observed_generation: int | None = Field(
        default=None, alias="observedGeneration", description="The metadata.generation this was based on."
    )


class HardwareStatus(_Model):
    current: str | None = Field(
        default=None, description="Hardware the Space runs on, as the Hub reports it."
    )
    requested: str | None = Field(default=None, description="Hardware requested from the Hub.")


class PendingApproval(_Model):
    hardware: str = Field(description="The requested paid flavor.")
    usd_per_hour: float | None = Field(
        default=None, alias="usdPerHour", description="Its price per hour from the Hub's hardware catalog."
    )
    requested_by: str | None = Field(
        default=None, alias="requestedBy", description="Who asked (spec.requestedBy), where known."
    )
    requested_time: str | None = Field(
        default=None,
        alias="requestedTime",
        description="When the session started waiting for an approval of this flavor (RFC 3339).",
    )


class ApprovalRecord(_Model):
    """The approval the operator is acting on, as first seen: the clock of its expiry."""

    approved_by: str = Field(alias="approvedBy", description="spec.approval.approvedBy.")
    fingerprint: str = Field(description="Digest of spec.approval; another digest is another approval.")
    seen_time: str = Field(alias="seenTime", description="When the operator first saw it (RFC 3339).")
    expires_at: str | None = Field(
        default=None,
        alias="expiresAt",
        description="When it ends: spec.approval.expiresAt, or sooner by the operator's maximum duration.",
    )
    notice_time: str | None = Field(
        default=None, alias="noticeTime", description="When the Event announcing its expiry was posted."
    )
    inherited_hardware: str | None = Field(
        default=None,
        alias="inheritedHardware",
        description="Set for an approval the previous operator version (0.1.0, which recorded no "
        "approverGroups) acted on after the admission policy was installed: the flavor it was acted on "
        "for. It stays trusted for that flavor, "
        "without a SubjectAccessReview of the approver's groups, until spec.approval or spec.hardware "
        "changes; re-approving (`sandbox-operator approve`) puts it under the full check.",
    )


class PaidPeriod(_Model):
    """Paid hardware the Space runs on now, from when, under whose approval: a receipt once it ends."""

    hardware: str = Field(description="The paid flavor.")
    approved_by: str | None = Field(default=None, alias="approvedBy", description="Who approved it.")
    start_time: str = Field(alias="startTime", description="When the Hub first showed it (RFC 3339).")
    start_usd: float = Field(alias="startUsd", description="status.spend.estimatedUsd at that time.")


#: Receipts a session keeps in status (the oldest go first); each is also an Event.
MAX_RECEIPTS = 20


class Receipt(_Model):
    """What one stretch of paid hardware cost, kept after the Space is gone."""

    hardware: str = Field(description="The paid flavor.")
    approved_by: str | None = Field(default=None, alias="approvedBy", description="Who approved it.")
    start_time: str = Field(alias="startTime", description="When it began (RFC 3339).")
    end_time: str = Field(alias="endTime", description="When it ended (RFC 3339).")
    hours: float = Field(description="Billed hours (estimated USD over the hourly price).")
    estimated_usd: float = Field(alias="estimatedUsd", description="Estimated spend over that stretch.")
    ended_by: str = Field(
        alias="endedBy",
        description="Why it ended: Downgraded, BudgetSpent, ApprovalExpired, Denied, ApprovalWithdrawn, "
        "HardwareChanged, Paused (spec.paused, by a user or idle pause), SessionDeleted, SpecInvalid (a "
        "spec the operator cannot read), NotJudged (an "
        "approval changed during a failed pass), or the HardwareApproved reason that ended it (e.g. "
        "ApproverNotAuthorized).",
    )


class Spend(_Model):
    estimated_usd: float = Field(
        default=0.0,
        alias="estimatedUsd",
        description="Estimated spend so far, from observed time on paid hardware.",
    )
    usd_per_hour: float = Field(default=0.0, alias="usdPerHour", description="Price of the hardware in use.")
    budget_usd: float | None = Field(
        default=None, alias="budgetUsd", description="The approved budget, if any."
    )
    last_observed_time: str | None = Field(
        default=None,
        alias="lastObservedTime",
        description="When spend was last brought up to date (RFC 3339).",
    )


class Phase(StrEnum):
    CREATING = "Creating"
    STARTING = "Starting"
    READY = "Ready"
    UPGRADING = "Upgrading"
    #: Going back to free hardware (a downgrade, a spent budget, an ended approval).
    DOWNGRADING = "Downgrading"
    SLEEPING = "Sleeping"
    PAUSED = "Paused"
    FAILED = "Failed"
    DELETING = "Deleting"


class PausedBy(StrEnum):
    USER = "User"
    IDLE = "Idle"


class AgentSessionStatus(_Model):
    observed_generation: int | None = Field(
        default=None, alias="observedGeneration", description="The metadata.generation last reconciled."
    )
    phase: Phase | None = Field(default=None, description="Coarse lifecycle phase, for people.")
    space_id: str | None = Field(
        default=None, alias="spaceId", description="The Space of this session, recorded before it is created."
    )
    duplicate_requested_time: str | None = Field(
        default=None,
        alias="duplicateRequestedTime",
        description=(
            "When the operator last asked the Hub to duplicate the template into spaceId (RFC 3339), "
            "recorded before the request is sent. A request not sent within the operator's send deadline "
            "is dropped, so a 'not found' until this time plus that deadline, the Hub timeout and the "
            "visibility grace may mean 'not visible yet', not 'gone'."
        ),
    )
    duplicate_failure: str | None = Field(
        default=None,
        alias="duplicateFailure",
        description=(
            "The Hub's error answer to the last duplicate, until one is sent again: then a 'not found' is "
            "not waited out as 'not visible yet', the duplicate is sent again after the backoff (a Space "
            "that landed anyway answers 409 and is adopted)."
        ),
    )
    space_confirmed_time: str | None = Field(
        default=None,
        alias="spaceConfirmedTime",
        description=(
            "When the Hub first showed spaceId carrying this session's ownership marker (RFC 3339); "
            "after that a 'not found' means the Space was lost, once the token's access is confirmed."
        ),
    )
    marker_cluster_id: str | None = Field(
        default=None,
        alias="markerClusterId",
        description=(
            "The cluster id the Space's ownership marker was last seen with (or written): one of this "
            "installation's previous cluster ids (the operator's --previous-cluster-ids, and 0.1.0's "
            "'default') is rewritten to the current one."
        ),
    )
    token_rotated_time: str | None = Field(
        default=None,
        alias="tokenRotatedTime",
        description="When the sandbox token was last replaced (RFC 3339); a rejected token is "
        "replaced at most once per the operator's rotation interval.",
    )
    url: str | None = Field(default=None, description="The Space's page on the Hub.")
    sandbox_url: str | None = Field(
        default=None, alias="sandboxUrl", description="Base URL of the sandbox API."
    )
    hardware: HardwareStatus | None = Field(default=None, description="Hardware as the Hub reports it.")
    stage: str | None = Field(default=None, description="The Space's stage as the Hub reports it.")
    connection_secret: str | None = Field(
        default=None,
        alias="connectionSecret",
        description=(
            "Secret with the Space id, sandbox URL, sandbox API token and Hub read token, for agent pods "
            "to mount."
        ),
    )
    approved_by: str | None = Field(
        default=None, alias="approvedBy", description="Who approved the paid hardware in use or requested."
    )
    pending_approval: PendingApproval | None = Field(
        default=None,
        alias="pendingApproval",
        description="The paid flavor waiting for an approval, with its price.",
    )
    spend: Spend | None = Field(default=None, description="Estimated spend on paid hardware.")
    expires_at: str | None = Field(
        default=None,
        alias="expiresAt",
        description=(
            "When the operator deletes the session if nothing changes (RFC 3339): the end of its lifetime, "
            "its maximum age, or, while paused, the end of its retention; recomputed as paused time accrues."
        ),
    )
    paused_since: str | None = Field(
        default=None,
        alias="pausedSince",
        description="When the current pause began (RFC 3339); empty while not paused.",
    )
    paused_by: PausedBy | None = Field(
        default=None, alias="pausedBy", description="Who paused the session: User (spec.paused) or Idle."
    )
    paused_seconds: float | None = Field(
        default=None,
        alias="pausedSeconds",
        description="Seconds spent paused in earlier pauses, which do not count against the lifetime.",
        ge=0,
    )
    lifetime_start_time: str | None = Field(
        default=None,
        alias="lifetimeStartTime",
        description=(
            "Where the operator's default lifetime and its maximum age count from (RFC 3339), recorded "
            "once: the session's creation, or, for a session an operator version without lifetimes "
            "(0.1.0) already managed, when this version first saw it (the upgrade)."
        ),
    )
    idle_since: str | None = Field(
        default=None,
        alias="idleSince",
        description=(
            "Since when the sandbox has not been used (RFC 3339), as far as the operator can tell (the "
            "Space asleep, or the activity its health endpoint reports); empty when unknown."
        ),
    )
    approval: ApprovalRecord | None = Field(
        default=None, description="The approval acted on, as first seen (its expiry clock)."
    )
    paid_period: PaidPeriod | None = Field(
        default=None, alias="paidPeriod", description="The stretch of paid hardware in progress."
    )
    receipts: list[Receipt] | None = Field(
        default=None,
        description=f"What each ended stretch of paid hardware cost, newest last (the last {MAX_RECEIPTS}).",
        max_length=MAX_RECEIPTS,
    )
    template: str | None = Field(
        default=None,
        description="The Space the session's Space was duplicated from: spec.template, or the operator's "
        "default template when the Space was made (recorded with the duplicate request, or the claim).",
    )
    launch_type: LaunchType | None = Field(
        default=None,
        alias="launchType",
        description="warm: the Space was claimed from spec.poolRef's pool; cold: it was created for this "
        "session (a session with a poolRef falls back to cold when the pool had no ready Space).",
    )
    claimed_time: str | None = Field(
        default=None,
        alias="claimedTime",
        description="When the Space was claimed from the pool (RFC 3339), recorded with spaceId.",
    )
    failures: int | None = Field(
        default=None, description="Consecutive failed reconciles; drives the retry backoff.", ge=0
    )
    next_retry_time: str | None = Field(
        default=None,
        alias="nextRetryTime",
        description="When the operator retries after a failure (RFC 3339).",
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Latest observations of the session.",
        json_schema_extra=list_map("type"),
    )


class AgentSession(_Model):
    """A parsed AgentSession object, as the operator reads it."""

    api_version: str = Field(default=API_VERSION, alias="apiVersion")
    kind: str = KIND
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: AgentSessionSpec = Field(default_factory=AgentSessionSpec)
    status: AgentSessionStatus = Field(default_factory=AgentSessionStatus)


class PooledSpaceState(StrEnum):
    CREATING = "Creating"
    READY = "Ready"
    NOT_READY = "NotReady"
    DELETING = "Deleting"


class PoolClaimant(_Model):
    name: str = Field(description="The claiming AgentSession's name.")
    uid: str = Field(description="The claiming AgentSession's UID.")


class PooledSpace(_Model):
    """One Space of a pool, as the pool's status records it (before it exists, and until its claimant
    is gone), so a restart never creates it twice nor hands it to two sessions."""

    space_id: str = Field(alias="spaceId", description="The Space, recorded before it is created.")
    state: PooledSpaceState = Field(description="Creating, Ready (may be claimed), NotReady or Deleting.")
    requested_time: str = Field(
        alias="requestedTime", description="When its duplicate was asked for (RFC 3339), recorded first."
    )
    sandbox_url: str | None = Field(default=None, alias="sandboxUrl", description="Base URL of its sandbox.")
    url: str | None = Field(default=None, description="Its page on the Hub.")
    message: str | None = Field(default=None, description="Why it is not Ready.")
    claimed_by: PoolClaimant | None = Field(
        default=None,
        alias="claimedBy",
        description="The session it was handed to; written with the pool's resourceVersion, so one "
        "Space is never handed to two sessions.",
    )
    claimed_time: str | None = Field(default=None, alias="claimedTime", description="When it was claimed.")
    spec_hash: str | None = Field(
        default=None,
        alias="specHash",
        description="Digest of the pool's spec it was built for (owner, template, hardware, privacy, "
        "secrets, sleep time): a Space built for another spec is never claimed, and is replaced.",
        max_length=64,
    )


class AgentSessionPoolSpec(_Model):
    model_config = ConfigDict(
        **_Model.model_config,
        json_schema_extra={
            "x-kubernetes-validations": [
                _immutable("owner", "the pool's Spaces are created under it"),
                _immutable("template", "the pool's Spaces are duplicated from it"),
            ]
        },
    )

    replicas: Replicas = Field(
        default=1,
        description="Unclaimed Spaces kept built, running on cpu-basic and healthy (the scale subresource: "
        "`kubectl scale agsp/<name> --replicas=N`); capped by the operator's --pool-max-replicas.",
    )
    owner: HubNamespace | None = Field(
        default=None, description="Hub user or organization that owns the Spaces. Empty: the default owner."
    )
    template: RepoId | None = Field(
        default=None, description="Space to duplicate, as 'namespace/name'. Empty: the default template."
    )
    secrets: list[SpaceSecretSource] = Field(
        default_factory=list,
        description="Space secrets every pooled Space gets, one per name, read from Secrets in the pool's "
        "namespace (checked by the same admission policy as a session's spec.secrets).",
        max_length=64,
        json_schema_extra=list_map("name"),
    )
    sleep_time_seconds: SleepSeconds | None = Field(
        default=None,
        alias="sleepTimeSeconds",
        description="Seconds without requests after which an idle pooled Space sleeps, sent with its "
        "duplicate. The Hub fixes cpu-basic's at 48 h and ignores it there; a pooled Space found asleep is "
        "not handed out until it answers its health check again.",
    )


class AgentSessionPoolStatus(_Model):
    observed_generation: int | None = Field(
        default=None, alias="observedGeneration", description="The metadata.generation last reconciled."
    )
    replicas: int = Field(default=0, description="Unclaimed Spaces the pool holds (any state).")
    ready: int = Field(default=0, description="Unclaimed Spaces ready to be claimed.")
    claimed: int = Field(default=0, description="Spaces handed to sessions that still exist.")
    selector: str | None = Field(
        default=None,
        description=f"The scale subresource's label selector ({POOL_LABEL}=<name>), so a "
        "HorizontalPodAutoscaler can drive spec.replicas; a pool has no pods, so scale it on "
        "Object or External metrics (e.g. the pool's ready or claimed count).",
    )
    spaces: list[PooledSpace] = Field(
        default_factory=list, description="Every Space of the pool and its claimant, if any."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Latest observations of the pool.",
        json_schema_extra=list_map("type"),
    )


class AgentSessionPool(_Model):
    """A parsed AgentSessionPool object, as the operator reads it."""

    api_version: str = Field(default=API_VERSION, alias="apiVersion")
    kind: str = POOL_KIND
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: AgentSessionPoolSpec = Field(default_factory=AgentSessionPoolSpec)
    status: AgentSessionPoolStatus = Field(default_factory=AgentSessionPoolStatus)
