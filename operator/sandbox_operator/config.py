"""Operator configuration: what the operator needs to know beyond each session's spec."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from .api import MIN_SLEEP_TIME_SECONDS, Hardware

#: The operator's namespace outside a pod: the README's install namespace, so a hand-run operator
#: finds the Lease (and the read token Secret) of the chart's Deployment.
DEFAULT_OPERATOR_NAMESPACE = "sandbox-operator"
#: The leader Lease's name unless configured; the chart's `leaderElection.leaseName` defaults to it
#: too, so a hand-run `sandbox-operator run` and the chart's Deployment contend for the same Lease.
DEFAULT_LEASE_NAME = "sandbox-operator"


class OperatorConfig(BaseModel):
    """Settings shared by every session this operator deployment reconciles."""

    model_config = ConfigDict(frozen=True)

    hub_endpoint: str = Field(default="https://huggingface.co", description="Base URL of the Hub API.")
    hub_token: str = Field(default="", repr=False, description="Hub token the operator acts with.")
    default_owner: str = Field(default="", description="Hub namespace for Spaces whose session names none.")
    default_template: str = Field(default="", description="Space duplicated for sessions that name none.")
    cluster_id: str = Field(
        default="",
        description="Written into every Space's ownership marker, to tell this cluster's Spaces apart; "
        "empty: derived from the kube-system namespace's UID when the operator starts (unique per cluster).",
    )
    allowed_templates: frozenset[str] = Field(
        default=frozenset(),
        description="Glob patterns of templates sessions may name besides the default template.",
    )
    allowed_owners: frozenset[str] = Field(
        default=frozenset(),
        description="Glob patterns of Hub namespaces sessions may name besides the default owner.",
    )
    allow_public_spaces: bool = Field(
        default=False, description="Whether sessions may ask for a public Space (spec.private: false)."
    )
    insecure_trust_approvals: bool = Field(
        default=False,
        description="Development only: act on approvals without checking the admission policy or approver.",
    )
    approval_recheck_interval: float = Field(
        default=60.0,
        gt=0,
        description="Seconds the approval policy check is trusted before it is asked again (a "
        "SubjectAccessReview answer about an approver: at most 10 s).",
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
    operator_namespace: str = Field(
        default=DEFAULT_OPERATOR_NAMESPACE,
        description="The operator's own namespace: where its leader Lease and the read token Secret are.",
    )
    hub_read_token_secret: str = Field(
        default="",
        description="Secret in the operator's namespace with a Hub token that may read the owners' private "
        "Spaces, published to agent pods (hubToken) to pass the Hub's edge; empty: none.",
    )
    hub_read_token_key: str = Field(default="token", description="Key of the read token in that Secret.")
    sleep_time_default: int = Field(
        default=3600,
        ge=MIN_SLEEP_TIME_SECONDS,
        description="Sleep time (seconds) sent with every paid hardware request of a session that sets none.",
    )
    sleep_time_max: int = Field(
        default=86400,
        ge=MIN_SLEEP_TIME_SECONDS,
        description="Longest sleep time (seconds) a session may ask for on paid hardware.",
    )
    hub_concurrency: int = Field(default=8, ge=1, description="Hub calls in flight at once.")
    hub_timeout: float = Field(
        default=20.0,
        gt=0,
        description="Timeout of one Hub call, in seconds; must fit in the leader Lease's renew deadline.",
    )
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
