"""The AgentSessionPool kind: warm Spaces kept ready for sessions to claim."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from pydantic import (
    ConfigDict,
    Field,
)

from sandbox_operator.api.fields import (
    ApiModel,
    Condition,
    HubNamespace,
    Replicas,
    RepoId,
    SleepSeconds,
    SpaceSecretSource,
    list_map,
    read_fields,
    space_secrets_field,
)
from sandbox_operator.api.meta import POOL_LABEL
from sandbox_operator.api.session import immutable


def read_pool_spec(raw: Mapping[str, Any]) -> tuple[AgentSessionPoolSpec, str | None]:
    """A pool's spec read as a session's is (`read_spec`): a pool whose spec cannot be read says so
    in its status (Stalled) instead of stopping its loop."""
    return read_fields(AgentSessionPoolSpec, raw)


class PooledSpaceState(StrEnum):
    CREATING = "Creating"
    READY = "Ready"
    NOT_READY = "NotReady"
    DELETING = "Deleting"


class PoolClaimant(ApiModel):
    name: str = Field(description="The claiming AgentSession's name.")
    uid: str = Field(description="The claiming AgentSession's UID.")


class PooledSpace(ApiModel):
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


class AgentSessionPoolSpec(ApiModel):
    model_config = ConfigDict(
        **ApiModel.model_config,
        json_schema_extra={
            "x-kubernetes-validations": [
                immutable("owner", "the pool's Spaces are created under it"),
                immutable("template", "the pool's Spaces are duplicated from it"),
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
    secrets: list[SpaceSecretSource] = space_secrets_field(
        "Space secrets every pooled Space gets, one per name, read from Secrets in the pool's "
        "namespace (checked by the same admission policy as a session's spec.secrets)."
    )
    sleep_time_seconds: SleepSeconds | None = Field(
        default=None,
        alias="sleepTimeSeconds",
        description="Seconds without requests after which an idle pooled Space sleeps, sent with its "
        "duplicate. The Hub fixes cpu-basic's at 48 h and ignores it there; a pooled Space found asleep is "
        "not handed out until it answers its health check again.",
    )


class AgentSessionPoolStatus(ApiModel):
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
