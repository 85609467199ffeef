"""The `sandbox-operator` command: run the operator, sweep, print the CRD and policy, approve."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from . import __version__
from .api import MIN_SLEEP_TIME_SECONDS
from .config import DEFAULT_LEASE_NAME, DEFAULT_OPERATOR_NAMESPACE

F = TypeVar("F", bound=Callable[..., Any])


def _csv(value: str | None) -> list[str]:
    return [item.strip() for item in (value or "").split(",") if item.strip()]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="sandbox-operator")
def main() -> None:
    """Gives every AgentSession its own Hugging Face Space sandbox."""


_CONNECTION = [
    click.option(
        "--hub-endpoint",
        envvar="HF_ENDPOINT",
        default="https://huggingface.co",
        show_default=True,
        help="Hub API base URL (env HF_ENDPOINT).",
    ),
    click.option(
        "--hub-token",
        envvar="HF_TOKEN",
        default="",
        show_default=False,
        help="Hub token the operator acts with (env HF_TOKEN).",
    ),
    click.option(
        "--default-owner",
        envvar="SANDBOX_OPERATOR_DEFAULT_OWNER",
        default="",
        help="Hub namespace for Spaces of sessions that name none; empty: the token's user.",
    ),
    click.option(
        "--namespaces",
        envvar="SANDBOX_OPERATOR_NAMESPACES",
        default="",
        help="Comma-separated namespaces to watch; empty: the whole cluster.",
    ),
    click.option(
        "--cluster-id",
        envvar="SANDBOX_OPERATOR_CLUSTER_ID",
        default="",
        help="Written into each Space's ownership marker; empty: the kube-system namespace's UID "
        "(unique per cluster).",
    ),
    click.option(
        "--allowed-owners",
        envvar="SANDBOX_OPERATOR_ALLOWED_OWNERS",
        default="",
        help="Comma-separated glob patterns of Hub namespaces sessions may name besides the default owner "
        "(literal entries are also swept for orphans).",
    ),
]


def _connection_options(fn: F) -> F:
    """Where the Hub and the sessions are: the same flags (and env) for `run` and `sweep`."""
    for option in reversed(_CONNECTION):
        fn = option(fn)
    return fn


def _sweep_grace(flag: str) -> Callable[[F], F]:
    return click.option(
        flag,
        "sweep_grace",
        envvar="SANDBOX_OPERATOR_SWEEP_GRACE",
        type=float,
        default=600.0,
        show_default=True,
        help="Orphaned Spaces younger than this (seconds) are left alone.",
    )


def _sweep_max_deletes(flag: str) -> Callable[[F], F]:
    return click.option(
        flag,
        "sweep_max_deletes",
        envvar="SANDBOX_OPERATOR_SWEEP_MAX_DELETES",
        type=click.IntRange(min=0),
        default=10,
        show_default=True,
        help="Spaces deleted per sweeper pass at most.",
    )


def _sweep_owners(flag: str) -> Callable[[F], F]:
    return click.option(
        flag,
        "sweep_owners",
        envvar="SANDBOX_OPERATOR_SWEEP_OWNERS",
        default="",
        help="Comma-separated Hub namespaces to sweep besides the default owner and those sessions name.",
    )


@main.command()
@_connection_options
@click.option(
    "--default-template",
    envvar="SANDBOX_OPERATOR_DEFAULT_TEMPLATE",
    default="",
    help="Space duplicated for sessions that name none.",
)
@click.option(
    "--allowed-templates",
    envvar="SANDBOX_OPERATOR_ALLOWED_TEMPLATES",
    default="",
    help="Comma-separated glob patterns of templates sessions may name besides the default template.",
)
@click.option(
    "--allow-public-spaces",
    envvar="SANDBOX_OPERATOR_ALLOW_PUBLIC_SPACES",
    is_flag=True,
    help="Let sessions ask for a public Space (spec.private: false); off: only private Spaces.",
)
@click.option(
    "--insecure-trust-approvals",
    is_flag=True,
    help="DEVELOPMENT ONLY: act on approvals without checking that the admission policy is enforced "
    "or that the approver may approve (a flag only: no environment variable, no chart value).",
)
@click.option(
    "--approval-recheck-interval",
    envvar="SANDBOX_OPERATOR_APPROVAL_RECHECK_INTERVAL",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="Seconds between checks that the approval admission policy is installed and enforcing.",
)
@click.option(
    "--free-hardware",
    envvar="SANDBOX_OPERATOR_FREE_HARDWARE",
    default="cpu-basic",
    show_default=True,
    help="Comma-separated flavors that need no approval.",
)
@click.option(
    "--poll-interval",
    envvar="SANDBOX_OPERATOR_POLL_INTERVAL",
    type=float,
    default=2.0,
    show_default=True,
    help="Seconds between Hub polls while a Space starts.",
)
@click.option(
    "--max-usd-per-hour",
    envvar="SANDBOX_OPERATOR_MAX_USD_PER_HOUR",
    type=float,
    default=None,
    help="Largest hourly price (USD) an approval may grant; unset: no limit.",
)
@click.option(
    "--max-budget-usd",
    envvar="SANDBOX_OPERATOR_MAX_BUDGET_USD",
    type=float,
    default=None,
    help="Largest budgetUsd an approval may grant; when set, approvals must carry a budget.",
)
@click.option(
    "--resync-interval",
    envvar="SANDBOX_OPERATOR_RESYNC_INTERVAL",
    type=float,
    default=1800.0,
    show_default=True,
    help="Seconds between Hub checks of a converged session (drift); 0: never.",
)
@click.option(
    "--spend-interval",
    envvar="SANDBOX_OPERATOR_SPEND_INTERVAL",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds between spend updates while a Space runs on paid hardware.",
)
@click.option(
    "--hub-rate",
    envvar="SANDBOX_OPERATOR_HUB_RATE",
    type=click.FloatRange(min=0),
    default=3.0,
    show_default=True,
    help="Hub calls per second, sustained, for the whole operator (0: unlimited).",
)
@click.option(
    "--hub-burst",
    envvar="SANDBOX_OPERATOR_HUB_BURST",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Hub calls that may go at once after a quiet time (3/s + 20 stays under 1,000 per 5 min).",
)
@click.option(
    "--hub-timeout",
    envvar="SANDBOX_OPERATOR_HUB_TIMEOUT",
    type=click.FloatRange(min=0, min_open=True),
    default=20.0,
    show_default=True,
    help="Timeout of one Hub request (seconds); must fit in the leader Lease's renew deadline.",
)
@click.option(
    "--hub-read-token-secret",
    envvar="SANDBOX_OPERATOR_HUB_READ_TOKEN_SECRET",
    default="",
    help="Secret in the operator's namespace with a Hub token that may read the owners' private Spaces "
    "(e.g. a fine-grained read-only token), published to agent pods as hubToken; empty: none.",
)
@click.option(
    "--hub-read-token-key",
    envvar="SANDBOX_OPERATOR_HUB_READ_TOKEN_KEY",
    default="token",
    show_default=True,
    help="Key of the read token in that Secret.",
)
@click.option(
    "--sleep-time-default",
    envvar="SANDBOX_OPERATOR_SLEEP_TIME_DEFAULT",
    type=click.IntRange(min=MIN_SLEEP_TIME_SECONDS),
    default=3600,
    show_default=True,
    help="Sleep time (seconds without requests) sent with paid hardware for sessions that set none.",
)
@click.option(
    "--sleep-time-max",
    envvar="SANDBOX_OPERATOR_SLEEP_TIME_MAX",
    type=click.IntRange(min=MIN_SLEEP_TIME_SECONDS),
    default=86400,
    show_default=True,
    help="Longest sleep time (seconds) a session may ask for on paid hardware.",
)
@click.option(
    "--sweep-interval",
    envvar="SANDBOX_OPERATOR_SWEEP_INTERVAL",
    type=click.FloatRange(min=0),
    default=600.0,
    show_default=True,
    help="Seconds between orphan sweeper passes; 0 disables the sweeper.",
)
@_sweep_grace("--sweep-grace")
@_sweep_max_deletes("--sweep-max-deletes")
@_sweep_owners("--sweep-owners")
@click.option(
    "--sweep-dry-run",
    envvar="SANDBOX_OPERATOR_SWEEP_DRY_RUN",
    is_flag=True,
    help="The sweeper reports orphaned Spaces (log, Events, metrics) but deletes none.",
)
@click.option(
    "--metrics-port",
    envvar="SANDBOX_OPERATOR_METRICS_PORT",
    type=click.IntRange(0, 65535),
    default=9090,
    show_default=True,
    help="Port of the Prometheus /metrics endpoint; 0 disables it.",
)
@click.option(
    "--operator-namespace",
    envvar="SANDBOX_OPERATOR_OPERATOR_NAMESPACE",
    default="",
    help=f"The operator's own namespace (its Lease, the read token Secret); empty: the pod's namespace, "
    f"or {DEFAULT_OPERATOR_NAMESPACE!r} (the chart's install namespace) outside a cluster.",
)
@click.option(
    "--lease-name",
    envvar="SANDBOX_OPERATOR_LEASE_NAME",
    default=DEFAULT_LEASE_NAME,
    show_default=True,
    help="Lease for leader election (only its holder acts); empty disables leader election.",
)
@click.option(
    "--lease-namespace",
    envvar="SANDBOX_OPERATOR_LEASE_NAMESPACE",
    default="",
    help="Namespace of the Lease; empty: the operator's namespace.",
)
@click.option(
    "--lease-identity",
    envvar="SANDBOX_OPERATOR_LEASE_IDENTITY",
    default="",
    help="This process in the Lease; empty: hostname-pid (stable across container restarts).",
)
@click.option(
    "--liveness",
    envvar="SANDBOX_OPERATOR_LIVENESS",
    default="http://0.0.0.0:8080/healthz",
    show_default=True,
    help="Liveness endpoint URL; empty to disable.",
)
@click.option(
    "--log-format",
    type=click.Choice(["plain", "full", "json"]),
    default="full",
    show_default=True,
    envvar="SANDBOX_OPERATOR_LOG_FORMAT",
    help="Log line format.",
)
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def run(
    hub_endpoint: str,
    hub_token: str,
    default_owner: str,
    default_template: str,
    namespaces: str,
    cluster_id: str,
    allowed_owners: str,
    allowed_templates: str,
    allow_public_spaces: bool,
    insecure_trust_approvals: bool,
    approval_recheck_interval: float,
    free_hardware: str,
    poll_interval: float,
    max_usd_per_hour: float | None,
    max_budget_usd: float | None,
    spend_interval: float,
    resync_interval: float,
    hub_rate: float,
    hub_burst: int,
    hub_timeout: float,
    hub_read_token_secret: str,
    hub_read_token_key: str,
    sleep_time_default: int,
    sleep_time_max: int,
    sweep_interval: float,
    sweep_grace: float,
    sweep_max_deletes: int,
    sweep_owners: str,
    sweep_dry_run: bool,
    metrics_port: int,
    operator_namespace: str,
    lease_name: str,
    lease_namespace: str,
    lease_identity: str,
    liveness: str,
    log_format: str,
    verbose: bool,
) -> None:
    """Run the operator until SIGINT or SIGTERM."""
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    from .config import OperatorConfig
    from .controller import run_operator
    from .lease import LeaseNamespaceMissing, LeaseSettings, default_identity, default_namespace

    if not default_template:
        raise click.UsageError("--default-template (or SANDBOX_OPERATOR_DEFAULT_TEMPLATE) is required")
    if sleep_time_default > sleep_time_max:
        raise click.UsageError("--sleep-time-default must not exceed --sleep-time-max")
    operator_namespace = operator_namespace or default_namespace()
    config = OperatorConfig(
        hub_endpoint=hub_endpoint.rstrip("/"),
        hub_token=hub_token,
        default_owner=default_owner,
        default_template=default_template,
        cluster_id=cluster_id,
        allowed_templates=frozenset(_csv(allowed_templates)),
        allowed_owners=frozenset(_csv(allowed_owners)),
        allow_public_spaces=allow_public_spaces,
        insecure_trust_approvals=insecure_trust_approvals,
        approval_recheck_interval=approval_recheck_interval,
        free_hardware=frozenset(_csv(free_hardware)),
        poll_interval=poll_interval,
        max_usd_per_hour=max_usd_per_hour,
        max_budget_usd=max_budget_usd,
        spend_interval=spend_interval,
        resync_interval=resync_interval,
        hub_rate=hub_rate,
        hub_burst=hub_burst,
        hub_timeout=hub_timeout,
        operator_namespace=operator_namespace,
        hub_read_token_secret=hub_read_token_secret,
        hub_read_token_key=hub_read_token_key,
        sleep_time_default=sleep_time_default,
        sleep_time_max=sleep_time_max,
        sweep_interval=sweep_interval,
        sweep_grace=sweep_grace,
        sweep_max_deletes=sweep_max_deletes,
        sweep_owners=frozenset(_csv(sweep_owners)),
        sweep_dry_run=sweep_dry_run,
    )
    import kopf

    lease = LeaseSettings(
        name=lease_name,
        namespace=lease_namespace or operator_namespace,
        identity=lease_identity or default_identity(),
    )
    if lease_name:
        try:
            lease.check_hub_timeout(config.hub_timeout)
        except ValueError as error:
            raise click.UsageError(str(error)) from None
    try:
        run_operator(
            config,
            namespaces=_csv(namespaces),
            liveness_endpoint=liveness or None,
            verbose=verbose,
            log_format=kopf.LogFormat[log_format.upper()],
            metrics_port=metrics_port,
            lease=lease if lease_name else None,
        )
    except LeaseNamespaceMissing as error:
        raise click.ClickException(str(error)) from None


@main.command()
@_connection_options
@click.option("--dry-run", is_flag=True, help="Print what would be deleted; delete nothing.")
@_sweep_max_deletes("--max-deletes")
@_sweep_grace("--grace")
@_sweep_owners("--owners")
def sweep(
    hub_endpoint: str,
    hub_token: str,
    default_owner: str,
    namespaces: str,
    cluster_id: str,
    allowed_owners: str,
    dry_run: bool,
    sweep_max_deletes: int,
    sweep_grace: float,
    sweep_owners: str,
) -> None:
    """Run one orphan sweeper pass now, printing one line per decision about a Space."""
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    import asyncio

    from kubernetes.client.exceptions import ApiException

    from .config import OperatorConfig
    from .hub import HubError
    from .sweeper import ORPHAN_VERDICTS, sweep_once

    config = OperatorConfig(
        hub_endpoint=hub_endpoint.rstrip("/"),
        hub_token=hub_token,
        default_owner=default_owner,
        cluster_id=cluster_id,
        allowed_owners=frozenset(_csv(allowed_owners)),
        sweep_grace=sweep_grace,
        sweep_max_deletes=sweep_max_deletes,
        sweep_owners=frozenset(_csv(sweep_owners)),
        sweep_dry_run=dry_run,
    )
    try:
        decisions = asyncio.run(sweep_once(config, _csv(namespaces)))
    except (HubError, ApiException) as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(1)
    for decision in decisions:
        click.echo(decision.line())
    orphans = sum(d.verdict in ORPHAN_VERDICTS for d in decisions)
    click.echo(f"{orphans} orphaned of {len(decisions)} Spaces checked", err=True)


@main.command()
def crd() -> None:
    """Print the AgentSession CustomResourceDefinition (what crds/agentsessions.yaml holds)."""
    from .crd import render_crd

    click.echo(render_crd(), nl=False)


@main.command("approval-policy")
def approval_policy() -> None:
    """Print the approval admission policy and its binding (what deploy/approval-policy.yaml holds)."""
    from .policy import render_policy

    click.echo(render_policy(), nl=False)


@main.command()
@click.argument("session")
@click.option("-n", "--namespace", default=None, help="The session's namespace (default: the kubeconfig's).")
@click.option(
    "--hardware", default=None, help="The flavor to approve (default: the one the session requests)."
)
@click.option(
    "--max-usd-per-hour", type=float, default=None, help="Grant a standing budget up to this hourly price."
)
@click.option("--budget-usd", type=float, default=None, help="Cap the total estimated spend.")
@click.option("--reason", default=None, help="Why, for the record.")
def approve(
    session: str,
    namespace: str | None,
    hardware: str | None,
    max_usd_per_hour: float | None,
    budget_usd: float | None,
    reason: str | None,
) -> None:
    """Approve paid hardware for SESSION as yourself (approvedBy is your Kubernetes username)."""
    from .approval import ApprovalError, ApprovalRequest, default_namespace
    from .approval import approve as write_approval

    namespace = namespace or default_namespace()
    request = ApprovalRequest(session, namespace, hardware, max_usd_per_hour, budget_usd, reason)
    try:
        written = write_approval(request)
    except ApprovalError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(1)
    what = written["hardware"] or f"any flavor up to ${written['maxUsdPerHour']}/h"
    budget = f" within ${written['budgetUsd']}" if written["budgetUsd"] else ""
    click.echo(f"approved {what}{budget} for {namespace}/{session} as {written['approvedBy']}")
