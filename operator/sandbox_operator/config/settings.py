"""Operator configuration, each option defined once: its type, default, constraints, description and
environment variable are here; `run`'s flags and `--help` are generated from it (config/options.py) and a
test checks that the chart's Deployment sets every option (tests/chart/test_chart_options.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.fields import FieldInfo

from sandbox_operator.api import (
    MAX_APPROVAL_BUDGET_USD,
    MAX_APPROVAL_USD_PER_HOUR,
    MAX_DURATION_SECONDS,
    MAX_POOL_REPLICAS,
    MIN_SLEEP_TIME_SECONDS,
    Hardware,
)
from sandbox_operator.config.sandbox_url import DEFAULT_TEMPLATE, check_template

#: The operator's namespace outside a pod: the install namespace of docs/operations.md, so a hand-run operator
#: finds the Lease (and the read token Secret) of the chart's Deployment.
DEFAULT_OPERATOR_NAMESPACE = "sandbox-operator"
#: The leader Lease's name unless configured; the chart's `leaderElection.leaseName` defaults to it
#: too, so a hand-run `sandbox-operator run` and the chart's Deployment contend for the same Lease.
DEFAULT_LEASE_NAME = "sandbox-operator"
#: Prefix of the environment variable of every option that names none of its own.
ENV_PREFIX = "SANDBOX_OPERATOR_"
#: The cluster id sandbox-operator 0.1.0 wrote into every ownership marker unless told otherwise (its
#: default): always one of an installation's previous cluster ids, whose markers are rewritten.
LEGACY_CLUSTER_ID = "default"


@dataclass(frozen=True)
class Option:
    """Marks a settings field as an operator option: a flag of `run` and an environment variable the
    chart's Deployment sets. Fields without it are tuning constants, not options.

    `env`: the variable's name if not ENV_PREFIX + the field's name in capitals; None: a flag only.
    `flags`: the flag names if not `--field-name`. `in_chart`: False for what a cluster must never
    set (development switches); the chart test checks both directions.
    """

    env: str | None = ""
    flags: tuple[str, ...] = ()
    in_chart: bool = True


#: The usual option: `--field-name`, SANDBOX_OPERATOR_FIELD_NAME, set by the chart.
OPTION = Option()


@dataclass(frozen=True)
class OptionSpec:
    """One option as the CLI and the chart see it, with its names resolved."""

    name: str
    field: FieldInfo
    env: str | None
    flags: tuple[str, ...]
    in_chart: bool


def options_of(model: type[BaseModel]) -> list[OptionSpec]:
    """The fields of `model` that are options, in definition order."""
    specs = []
    for name, field in model.model_fields.items():
        marks = [mark for mark in field.metadata if isinstance(mark, Option)]
        if not marks:
            continue
        (mark,) = marks
        env = ENV_PREFIX + name.upper() if mark.env == "" else mark.env
        flags = mark.flags or ("--" + name.replace("_", "-"),)
        specs.append(OptionSpec(name, field, env, flags, mark.in_chart))
    return specs


class OperatorConfig(BaseModel):
    """Settings shared by every session this operator deployment reconciles."""

    model_config = ConfigDict(frozen=True)

    hub_endpoint: Annotated[str, Option(env="HF_ENDPOINT")] = Field(
        default="https://huggingface.co", description="Base URL of the Hub API."
    )
    sandbox_url_template: Annotated[str, OPTION] = Field(
        default=DEFAULT_TEMPLATE,
        description="Where a Space's app answers, from the subdomain the Hub reports for it ({subdomain} "
        "once; the Hub: https://{subdomain}.hf.space); an emulator serves the apps elsewhere.",
    )
    hub_token: Annotated[str, Option(env="HF_TOKEN")] = Field(
        default="", repr=False, description="Hub token the operator acts with."
    )
    default_owner: Annotated[str, OPTION] = Field(
        default="",
        description="Hub namespace for Spaces of sessions that name none; empty: the token's user "
        "(asked once, before the operator starts).",
    )
    default_template: Annotated[str, OPTION] = Field(
        default="", description="Space duplicated for sessions that name none (required by `run`)."
    )
    cluster_id: Annotated[str, OPTION] = Field(
        default="",
        description="Written into every Space's ownership marker, to tell this cluster's Spaces apart; "
        "empty: the kube-system namespace's UID, read before the operator starts (unique per cluster).",
    )
    previous_cluster_ids: Annotated[frozenset[str], OPTION] = Field(
        default=frozenset(),
        description="Cluster ids this installation wrote into ownership markers before (besides "
        f"{LEGACY_CLUSTER_ID!r}, 0.1.0's default, always counted): a session's own Space marked with one is "
        "re-marked with the current cluster id. Never swept as this cluster's: other clusters sharing the "
        "Hub owner may have used the same id.",
    )
    allowed_templates: Annotated[frozenset[str], OPTION] = Field(
        default=frozenset(),
        description="Glob patterns of templates sessions may name besides the default template.",
    )
    allowed_owners: Annotated[frozenset[str], OPTION] = Field(
        default=frozenset(),
        description="Glob patterns of Hub namespaces sessions may name besides the default owner "
        "(literal entries are also swept for orphans).",
    )
    allow_public_spaces: Annotated[bool, OPTION] = Field(
        default=False,
        description="Let sessions ask for a public Space (spec.private: false); off: only private Spaces.",
    )
    insecure_trust_approvals: Annotated[bool, Option(env=None, in_chart=False)] = Field(
        default=False,
        description="DEVELOPMENT ONLY: act on approvals without checking that the admission policy is "
        "enforced or that the approver may approve (a flag only: no environment variable, no chart value).",
    )
    approval_recheck_interval: Annotated[float, OPTION] = Field(
        default=60.0,
        gt=0,
        description="Seconds the check that the approval admission policy is installed and enforcing is "
        "trusted before it is made again (a SubjectAccessReview answer about an approver: at most 10 s).",
    )
    space_prefix: str = Field(default="ags", description="Prefix of Space names; the session UID follows it.")
    free_hardware: Annotated[frozenset[str], OPTION] = Field(
        default=frozenset({Hardware.CPU_BASIC.value}),
        description="Flavors that need no approval.",
    )
    poll_interval: Annotated[float, OPTION] = Field(
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
    max_usd_per_hour: Annotated[float | None, OPTION] = Field(
        default=None,
        gt=0,
        le=MAX_APPROVAL_USD_PER_HOUR,
        description="Largest hourly price (USD) an approval may grant (maxUsdPerHour and the flavor's "
        "price); unset: no limit.",
    )
    max_budget_usd: Annotated[float | None, OPTION] = Field(
        default=None,
        gt=0,
        le=MAX_APPROVAL_BUDGET_USD,
        description="Largest budgetUsd an approval may grant; when set, approvals must carry a budget.",
    )
    max_approval_duration: Annotated[float | None, OPTION] = Field(
        default=None,
        gt=0,
        le=MAX_DURATION_SECONDS,
        description="Longest time (seconds) an approval lasts from when the operator first sees it; an "
        "approval with a later expiresAt (or none) ends then; unset: approvals last until their expiresAt.",
    )
    approval_expiry_notice: Annotated[float, OPTION] = Field(
        default=600.0,
        ge=0,
        le=MAX_DURATION_SECONDS,
        description="Seconds before an approval expires at which the session posts an Event "
        "(ApprovalExpiring) announcing the return to free hardware.",
    )
    spend_interval: Annotated[float, OPTION] = Field(
        default=60.0, gt=0, description="Seconds between spend updates while a Space runs on paid hardware."
    )
    catalog_ttl: float = Field(default=3600.0, gt=0, description="Seconds the Hub's price catalog is cached.")
    resync_interval: Annotated[float, OPTION] = Field(
        default=1800.0,
        ge=0,
        description="Seconds between checks of a converged session against the Hub (drift); 0: never.",
    )
    observe_interval: Annotated[float, OPTION] = Field(
        default=30.0,
        ge=0,
        description="Seconds between listings of each owner's Spaces with their runtime (one paginated "
        "call per owner), which every session reads instead of polling its own Space while it builds, "
        "starts or sits converged: a Space deleted, paused or moved behind the operator's back is "
        "noticed within about this time; 0: each session polls its own Space.",
    )
    edge_probe_rate: Annotated[float, OPTION] = Field(
        default=600.0,
        ge=0,
        description="Most health probes a second of building Spaces' apps at the Hub's edge, for the whole "
        "operator (no Hub API call; each costs CPU; an edge answering 429 halves it for a while): a session "
        "is Ready about a second after its app first answers, not at the next listing; 0: none.",
    )
    edge_probe_cadence: float = Field(
        default=0.5,
        gt=0,
        description="Seconds between probes of one building Space's app once its build may have ended.",
    )
    secret_cache_ttl: float = Field(
        default=10.0,
        ge=0,
        description="Seconds a read of the Hub read token's Secret is shared by every session's pass.",
    )
    health_path: str = Field(default="/health", description="Path of the sandbox health endpoint.")
    operator_namespace: Annotated[str, OPTION] = Field(
        default="",
        description="The operator's own namespace (its leader Lease, the read token Secret); empty: the "
        f"pod's namespace, or {DEFAULT_OPERATOR_NAMESPACE!r} (the chart's install namespace) outside a "
        "cluster, found before the operator starts.",
    )
    hub_read_token_secret: Annotated[str, OPTION] = Field(
        default="",
        description="Secret in the operator's namespace with a Hub token that may read the owners' private "
        "Spaces (e.g. a fine-grained read-only token), published to agent pods as hubToken to pass the "
        "Hub's edge; empty: none.",
    )
    hub_read_token_namespace_secret: Annotated[str, OPTION] = Field(
        default="",
        description="For platforms that give each namespace (team) its own Hub read token: the name of a "
        "Secret in each session's namespace holding it (key: hub_read_token_key), published to that "
        "namespace's agent pods instead of the shared one; a namespace without it gets none. Empty: the "
        "shared hub_read_token_secret for every namespace.",
    )
    hub_read_token_key: Annotated[str, OPTION] = Field(
        default="token", description="Key of the read token in that Secret (or in each namespace's)."
    )
    sleep_time_default: Annotated[int, OPTION] = Field(
        default=3600,
        ge=MIN_SLEEP_TIME_SECONDS,
        le=MAX_DURATION_SECONDS,
        description="Sleep time (seconds without requests) sent with every paid hardware request of a "
        "session that sets none.",
    )
    sleep_time_max: Annotated[int, OPTION] = Field(
        default=86400,
        ge=MIN_SLEEP_TIME_SECONDS,
        le=MAX_DURATION_SECONDS,
        description="Longest sleep time (seconds) a session may ask for on paid hardware.",
    )
    lifetime_default: Annotated[int, OPTION] = Field(
        default=86400,
        ge=0,
        le=MAX_DURATION_SECONDS,
        description="Lifetime (seconds of unpaused time) of a session that sets no spec.lifetime, from its "
        "status.lifetimeStartTime (its creation; the upgrade for a session 0.1.0 managed); 0: none.",
    )
    lifetime_max: Annotated[int, OPTION] = Field(
        default=604800,
        ge=0,
        le=MAX_DURATION_SECONDS,
        description="Oldest a session may get (seconds since its status.lifetimeStartTime, paused or not) "
        "before it is deleted, whatever its spec.lifetime; 0: no limit.",
    )
    lifetime_warning: Annotated[float, OPTION] = Field(
        default=600.0,
        ge=0,
        le=MAX_DURATION_SECONDS,
        description="Seconds before a session is deleted (end of its lifetime or retention) that a Warning "
        "Event (and the condition Expiring=True) says so.",
    )
    lifetime_counts_paused: Annotated[bool, OPTION] = Field(
        default=False, description="Count time paused against a session's lifetime; off: pausing extends it."
    )
    idle_pause_after: Annotated[int, OPTION] = Field(
        default=0,
        ge=0,
        le=MAX_DURATION_SECONDS,
        description="Pause a session whose sandbox has not been used for this many seconds, unless its "
        "spec.idle.pauseAfterSeconds says otherwise; 0: never.",
    )
    idle_retention: Annotated[int, OPTION] = Field(
        default=259200,
        ge=0,
        le=MAX_DURATION_SECONDS,
        description="Delete a session paused (by the user or for idleness) for this many seconds, unless its "
        "spec.idle.retentionSeconds says otherwise; 0: never.",
    )
    hub_concurrency: int = Field(default=8, ge=1, description="Hub calls in flight at once.")
    kube_connections: Annotated[int, OPTION] = Field(
        default=64,
        ge=1,
        le=1024,
        description="Kubernetes API calls of the session loops in flight at once; more wait in fair order "
        "(namespaces in turn, the oldest session first): docs/performance.md.",
    )
    hub_timeout: Annotated[float, OPTION] = Field(
        default=20.0,
        gt=0,
        description="Timeout of one Hub call, in seconds; must fit in the leader Lease's renew deadline.",
    )
    hub_rate: Annotated[float, OPTION] = Field(
        default=3.0,
        ge=0,
        description="Hub calls per second, sustained, for the whole operator (0: unlimited); with "
        "hub_burst, 3/s stays under the free account's 1,000 calls per 5 minutes.",
    )
    hub_burst: Annotated[int, OPTION] = Field(
        default=20, ge=1, description="Hub calls that may go at once after a quiet time."
    )
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
    sweep_interval: Annotated[float, OPTION] = Field(
        default=600.0, ge=0, description="Seconds between orphan sweeper passes; 0 disables the sweeper."
    )
    sweep_grace: Annotated[float, OPTION] = Field(
        default=600.0, ge=0, description="Orphaned Spaces younger than this (seconds) are left alone."
    )
    sweep_max_deletes: Annotated[int, OPTION] = Field(
        default=10, ge=0, description="Spaces one sweeper pass deletes at most."
    )
    sweep_dry_run: Annotated[bool, OPTION] = Field(
        default=False,
        description="The sweeper reports orphaned Spaces (log, Events, metrics) but deletes none.",
    )
    pool_max_replicas: Annotated[int, OPTION] = Field(
        default=200,
        ge=0,
        le=MAX_POOL_REPLICAS,
        description="Most unclaimed Spaces one AgentSessionPool keeps, whatever its spec.replicas says.",
    )
    sweep_owners: Annotated[frozenset[str], OPTION] = Field(
        default=frozenset(),
        description="Hub namespaces swept besides the default owner and the allowed owners sessions name.",
    )

    @field_validator("hub_endpoint")
    @classmethod
    def _no_trailing_slash(cls, endpoint: str) -> str:
        return endpoint.rstrip("/")

    @field_validator("sandbox_url_template")
    @classmethod
    def _a_url_with_the_subdomain(cls, template: str) -> str:
        return check_template(template)

    @model_validator(mode="after")
    def _sleep_default_within_max(self) -> OperatorConfig:
        if self.sleep_time_default > self.sleep_time_max:
            raise ValueError("sleep_time_default must not exceed sleep_time_max")
        return self

    def earlier_cluster_ids(self) -> frozenset[str]:
        """The cluster ids this installation wrote into ownership markers before, never the current one."""
        return (self.previous_cluster_ids | {LEGACY_CLUSTER_ID}) - {self.cluster_id}

    @model_validator(mode="after")
    def _lifetime_default_within_max(self) -> OperatorConfig:
        if self.lifetime_max and self.lifetime_default > self.lifetime_max:
            raise ValueError("lifetime_default must not exceed lifetime_max")
        return self


class RunSettings(BaseModel):
    """How the `run` process runs (what it watches, where it serves, its Lease), beside the
    OperatorConfig its handlers share."""

    model_config = ConfigDict(frozen=True)

    namespaces: Annotated[tuple[str, ...], OPTION] = Field(
        default=(),
        description="Namespaces to watch, by name; empty: the whole cluster. Deployments sharding a "
        "cluster each name their own (disjoint).",
    )

    @field_validator("namespaces")
    @classmethod
    def _namespace_names(cls, namespaces: tuple[str, ...]) -> tuple[str, ...]:
        """Names only: kopf's namespace globs need namespace scanning, which the operator keeps off
        (no cluster-wide list), and the sweeper tells a shard's Spaces apart by exact namespace."""
        for name in namespaces:
            if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", name):
                raise ValueError(f"{name!r} is not a namespace name (globs and negations are not supported)")
        return namespaces

    metrics_port: Annotated[int, OPTION] = Field(
        default=9090, ge=0, le=65535, description="Port of the Prometheus /metrics endpoint; 0 disables it."
    )
    lease_name: Annotated[str, OPTION] = Field(
        default=DEFAULT_LEASE_NAME,
        description="Lease for leader election (only its holder acts); empty disables leader election.",
    )
    lease_namespace: Annotated[str, OPTION] = Field(
        default="", description="Namespace of the Lease; empty: the operator's namespace."
    )
    lease_duration: Annotated[float, Option(env=None, in_chart=False)] = Field(
        default=30.0,
        ge=3.0,
        description="Seconds a Lease lasts unrenewed (its renew deadline and retry period scale alike); "
        "short ones for tests only.",
    )
    identity: Annotated[str, OPTION] = Field(
        default="",
        description="This process: its name in the leader Lease, to kopf, and as the instance its Events "
        "are reported from (the chart passes the pod's name); empty: hostname-pid (stable across "
        "container restarts).",
    )
    liveness: Annotated[str, OPTION] = Field(
        default="http://0.0.0.0:8080/healthz", description="Liveness endpoint URL; empty to disable."
    )
    readiness: Annotated[str, OPTION] = Field(
        default="http://0.0.0.0:8081/readyz",
        description="Readiness endpoint URL (200: the leader with its watches synced, or a standby waiting "
        "soundly for the Lease; 503 otherwise); empty to disable.",
    )
    log_format: Annotated[Literal["plain", "full", "json"], OPTION] = Field(
        default="full", description="Log line format."
    )
    verbose: Annotated[bool, Option(env=None, flags=("-v", "--verbose"), in_chart=False)] = Field(
        default=False, description="Debug logging."
    )
