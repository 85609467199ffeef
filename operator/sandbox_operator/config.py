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
    waiting_poll_max: float = Field(
        default=60.0,
        gt=0,
        description="Longest delay between polls of a session that stays starting or unhealthy; the "
        "delay grows from poll_interval with the time the session has not been Ready.",
    )
    token_rotation_interval: float = Field(
        default=600.0,
        ge=0,
        description="Shortest time between two rotations of a sandbox token the sandbox rejects (401).",
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
    max_usd_per_hour: float | None = Field(
        default=None, gt=0, description="Largest maxUsdPerHour (and flavor price) an approval may grant."
    )
    max_budget_usd: float | None = Field(
        default=None, gt=0, description="Largest budgetUsd an approval may grant."
    )
    spend_interval: float = Field(
        default=60.0, gt=0, description="Seconds between spend updates while a Space runs on paid hardware."
    )
    catalog_ttl: float = Field(default=3600.0, gt=0, description="Seconds the Hub's price catalog is cached.")
    resync_interval: float = Field(
        default=1800.0,
        ge=0,
        description="Seconds between checks of a converged session against the Hub (drift); 0: never.",
    )
    health_path: str = Field(default="/health", description="Path of the sandbox health endpoint.")
    hub_concurrency: int = Field(default=8, ge=1, description="Hub calls in flight at once.")
    hub_timeout: float = Field(default=30.0, gt=0, description="Timeout of one Hub call, in seconds.")
    hub_rate: float = Field(
        default=3.0,
        ge=0,
        description="Hub calls per second, sustained (0: unlimited); with hub_burst, 3/s stays under the "
        "free account's 1,000 calls per 5 minutes.",
    )
    hub_burst: int = Field(default=20, ge=1, description="Hub calls that may go at once after a quiet time.")
    hub_read_retries: int = Field(
        default=2, ge=0, description="In-call retries of idempotent Hub reads after a 5xx, timeout or reset."
    )
    hub_visibility_grace: float = Field(
        default=30.0,
        ge=0,
        description="Seconds after our own duplicate during which a 401/404 means 'not visible yet', "
        "not 'gone'.",
    )
    duplicate_send_deadline: float = Field(
        default=30.0,
        gt=0,
        description="Seconds after the operator records a duplicate request within which it must leave "
        "for the Hub; one still waiting at the Hub gate then is never sent, which bounds how long a "
        "Space may still appear after its session is deleted.",
    )
    sweep_interval: float = Field(
        default=600.0, ge=0, description="Seconds between orphan sweeper passes (0: no sweeper)."
    )
    sweep_grace: float = Field(
        default=600.0, ge=0, description="Orphaned Spaces younger than this are left for a later pass."
    )
    sweep_max_deletes: int = Field(default=10, ge=0, description="Spaces one sweeper pass deletes at most.")
    sweep_dry_run: bool = Field(default=False, description="The sweeper reports orphans but deletes none.")
    sweep_owners: frozenset[str] = Field(
        default=frozenset(),
        description="Hub namespaces swept besides the default owner and those sessions name.",
    )
