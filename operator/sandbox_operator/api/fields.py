"""Field types every kind shares: hardware flavors, names and patterns, limits, times, conditions,
and reading a spec field by field.

The pydantic models are the single source of the CRD schema, and the same models parse what the
operator reads from the API server, so the schema the API server enforces and the types the code
relies on cannot drift apart.
"""

from __future__ import annotations

import reprlib
from collections.abc import Mapping
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
)

from sandbox_operator.api.meta import SANDBOX_TOKEN_SECRET


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


def check_repo_id_rules(value: str) -> str:
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
    AfterValidator(check_repo_id_rules),
]


HubNamespace = Annotated[
    str,
    Field(
        pattern=NAMESPACE_PATTERN, max_length=96, json_schema_extra={"x-kubernetes-validations": _REPO_ID_CEL}
    ),
    AfterValidator(check_repo_id_rules),
]


def list_map(key: str) -> dict[str, JsonValue]:
    """Schema marks of a list the API server keeps as a map keyed by `key`: it refuses two entries
    with one key, naming the field, and server-side apply merges entries by key (each field manager
    owns its own) instead of replacing the whole list."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": [key]}


class ApiModel(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore", use_enum_values=True)


SpecT = TypeVar("SpecT", bound=ApiModel)


class SecretKeySelector(ApiModel):
    name: str = Field(
        description="Name of a Kubernetes Secret in the session's namespace.",
        pattern=K8S_NAME_PATTERN,
        max_length=253,
    )
    key: str = Field(
        description="Key within that Secret whose value is injected.", min_length=1, max_length=253
    )


class SpaceSecretSource(ApiModel):
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


def space_secrets_field(description: str) -> Any:
    """The `secrets` field a session and a pool share: Space secrets read from Secrets in the object's
    namespace, one per name (the API server refuses a repeated name)."""
    return Field(
        default_factory=list, description=description, max_length=64, json_schema_extra=list_map("name")
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


def at_most(ceiling: int) -> BeforeValidator:
    """Read a count above `ceiling` (admitted by a CRD older than the schema's maximum) as `ceiling`."""
    return BeforeValidator(
        lambda value: min(value, ceiling) if isinstance(value, int) and not isinstance(value, bool) else value
    )


# Counts in a spec, bounded in the schema (the bounds stay inside the type, before the validator, so
# that they become the schema's minimum and maximum); more than the maximum is read as the maximum.
#: Seconds, from 0.
Seconds = Annotated[int, Field(ge=0, le=MAX_DURATION_SECONDS), at_most(MAX_DURATION_SECONDS)]


#: Seconds, from 1.
PositiveSeconds = Annotated[int, Field(ge=1, le=MAX_DURATION_SECONDS), at_most(MAX_DURATION_SECONDS)]


#: A sleep time in seconds.
SleepSeconds = Annotated[
    int, Field(ge=MIN_SLEEP_TIME_SECONDS, le=MAX_DURATION_SECONDS), at_most(MAX_DURATION_SECONDS)
]


#: A pool's replicas.
Replicas = Annotated[int, Field(ge=0, le=MAX_POOL_REPLICAS), at_most(MAX_POOL_REPLICAS)]


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


TIME_SCHEMA: dict[str, JsonValue] = {"format": "date-time"}


def check_rfc3339(value: str) -> str:
    """Parse like the operator does, so Python refuses what the schema (pattern) should refuse."""
    parse_rfc3339(value)
    return value


#: An RFC 3339 time in the spec, kept as written (an approval's fingerprint digests it as is).
Timestamp = Annotated[
    str,
    Field(max_length=64, pattern=RFC3339_PATTERN, json_schema_extra=TIME_SCHEMA),
    AfterValidator(check_rfc3339),
]


#: An RFC 3339 time in the spec, read as a UTC datetime.
Moment = Annotated[
    datetime,
    BeforeValidator(lambda value: parse_rfc3339(value) if isinstance(value, str) else value),
    Field(json_schema_extra={"pattern": RFC3339_PATTERN, "maxLength": 64}),
]


def field_path(location: tuple[int | str, ...]) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in location)


def read_fields(model: type[SpecT], raw: Mapping[str, Any]) -> tuple[SpecT, str | None]:
    try:
        return model.model_validate(raw), None
    except ValidationError as error:
        problem = "; ".join(
            f"spec{field_path(detail['loc'])}: {detail['msg']} (got {reprlib.repr(detail['input'])})"
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


class Condition(ApiModel):
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
