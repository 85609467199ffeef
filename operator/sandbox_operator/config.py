"""Operator configuration: what the operator needs to know beyond each session's spec."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from .api import Hardware


class OperatorConfig(BaseModel):
    """Settings shared by every session this operator deployment reconciles."""

    model_config = ConfigDict(frozen=True)

    hub_endpoint: str = Field(default="https://huggingface.co", description="Base URL of the Hub API.")
    hub_token: str = Field(default="", repr=False, description="Hub token the operator acts with.")
    default_owner: str = Field(default="", description="Hub namespace for Spaces whose session names none.")
    default_template: str = Field(default="", description="Space duplicated for sessions that name none.")
    cluster_id: str = Field(
        default="default",
        description="Written into every Space's ownership marker, to tell this cluster's Spaces apart.",
    )
    space_prefix: str = Field(default="ags", description="Prefix of Space names; the session UID follows it.")
    free_hardware: frozenset[str] = Field(
        default=frozenset({Hardware.CPU_BASIC.value}),
        description="Flavors that need no approval.",
    )
    poll_interval: float = Field(
        default=2.0, gt=0, description="Seconds between Hub polls while a Space starts."
    )
    backoff_base: float = Field(
        default=2.0, gt=0, description="First retry delay after a failure, in seconds."
    )
    backoff_max: float = Field(
        default=300.0, gt=0, description="Longest retry delay after failures, in seconds."
    )
    credentials_backoff_min: float = Field(
        default=60.0, ge=0, description="Shortest retry delay after the Hub rejects the operator's token."
    )
    health_path: str = Field(default="/health", description="Path of the sandbox health endpoint.")
    hub_concurrency: int = Field(default=8, ge=1, description="Hub calls in flight at once.")
    hub_timeout: float = Field(default=30.0, gt=0, description="Timeout of one Hub call, in seconds.")
