"""The AgentSession kind and its spec: hardware, approvals, lifetime, idle pause, secrets."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import (
    ConfigDict,
    Field,
    JsonValue,
    model_validator,
)

from sandbox_operator.api.fields import (
    K8S_NAME_PATTERN,
    MAX_APPROVAL_BUDGET_USD,
    MAX_APPROVAL_USD_PER_HOUR,
    ApiModel,
    DeletionPolicy,
    Hardware,
    HubNamespace,
    Moment,
    PositiveSeconds,
    RepoId,
    Seconds,
    SecretKeySelector,
    SleepSeconds,
    SpaceSecretSource,
    Timestamp,
    read_fields,
    space_secrets_field,
)

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


class Approval(ApiModel):
    model_config = ConfigDict(
        **ApiModel.model_config, json_schema_extra={"x-kubernetes-validations": _APPROVAL_RULES}
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


class Denial(ApiModel):
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


class Lifetime(ApiModel):
    """How long a session may live; paused time does not count unless the operator says so."""

    model_config = ConfigDict(
        **ApiModel.model_config, json_schema_extra={"x-kubernetes-validations": _LIFETIME_RULES}
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


class IdlePolicy(ApiModel):
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


def immutable(field: str, why: str) -> JsonValue:
    """A transition rule: the field keeps the value (or absence) it had when the session was created."""
    return {
        "rule": f"has(self.{field}) == has(oldSelf.{field}) && "
        f"(!has(self.{field}) || self.{field} == oldSelf.{field})",
        "message": f"spec.{field} is immutable: {why}; delete and recreate the session to change it",
        "fieldPath": f".{field}",
    }


_SPEC_RULES: list[JsonValue] = [
    immutable("owner", "the Space is created under it"),
    immutable("template", "the Space is duplicated from it"),
    immutable("private", "the Space is created with this visibility"),
    immutable("poolRef", "a Space is claimed from the pool once, when the session starts"),
]


class PoolRef(ApiModel):
    name: str = Field(
        description="Name of an AgentSessionPool in the session's namespace.",
        pattern=K8S_NAME_PATTERN,
        max_length=253,
    )


class AgentSessionSpec(ApiModel):
    model_config = ConfigDict(
        **ApiModel.model_config, json_schema_extra={"x-kubernetes-validations": _SPEC_RULES}
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
    secrets: list[SpaceSecretSource] = space_secrets_field(
        "Extra Space secrets, one per name, read from Secrets in the session's namespace at Space creation."
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


def read_spec(raw: Mapping[str, Any]) -> tuple[AgentSessionSpec, str | None]:
    """The spec as the operator reads it, and why it cannot when it cannot (each failing field named).
    A spec that does not parse (a CRD older than this schema admitted it) is then read field by field:
    what parses on its own is kept, the rest defaults, so the finalizer still knows the owner and the
    deletionPolicy; the operator acts on nothing else of it."""
    return read_fields(AgentSessionSpec, raw)
