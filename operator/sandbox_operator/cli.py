"""The `sandbox-operator` command: run the operator, print the CRD, serve the emulator, dev mode."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from pydantic import BaseModel, ValidationError

from . import __version__
from .config import OperatorConfig, RunSettings
from .options import model_options, option_values

F = TypeVar("F", bound=Callable[..., Any])
M = TypeVar("M", bound=BaseModel)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="sandbox-operator")
def main() -> None:
    """Gives every AgentSession its own Hugging Face Space sandbox."""


#: The options `sweep` shares with `run` (the same environment variables), some under shorter flags.
_SWEEP_CONFIG = {"hub_endpoint", "hub_token", "default_owner", "cluster_id", "allowed_owners"}
_SWEEP_FLAGS = {
    "sweep_dry_run": ("--dry-run",),
    "sweep_max_deletes": ("--max-deletes",),
    "sweep_grace": ("--grace",),
    "sweep_owners": ("--owners",),
}


def _settings(model: type[M], values: dict[str, Any]) -> M:
    """Build a settings model from a command's parameters; a value it refuses is a usage error."""
    try:
        return model.model_validate(option_values(model, values))
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise click.UsageError(problems) from None


@main.command()
@model_options(OperatorConfig)
@model_options(RunSettings)
def run(**values: Any) -> None:
    """Run the operator until SIGINT or SIGTERM."""
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    from .controller import run_operator
    from .lease import LeaseNamespaceMissing
    from .startup import lease_settings

    config = _settings(OperatorConfig, values)
    settings = _settings(RunSettings, values)
    if not config.default_template:
        raise click.UsageError("--default-template (or SANDBOX_OPERATOR_DEFAULT_TEMPLATE) is required")
    lease = lease_settings(settings, config)
    if lease is not None:
        try:
            lease.check_hub_timeout(config.hub_timeout)
        except ValueError as error:
            raise click.UsageError(str(error)) from None
    try:
        run_operator(config, settings)
    except LeaseNamespaceMissing as error:
        raise click.ClickException(str(error)) from None


@main.command()
@model_options(OperatorConfig, only=_SWEEP_CONFIG | _SWEEP_FLAGS.keys(), flags=_SWEEP_FLAGS)
@model_options(RunSettings, only={"namespaces"})
def sweep(**values: Any) -> None:
    """Run one orphan sweeper pass now, printing one line per decision about a Space."""
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    import asyncio

    from kubernetes.client.exceptions import ApiException

    from .hub import HubError
    from .sweeper import ORPHAN_VERDICTS, sweep_once

    config = _settings(OperatorConfig, values)
    namespaces = list(_settings(RunSettings, values).namespaces)
    try:
        decisions = asyncio.run(sweep_once(config, namespaces))
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
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8765, show_default=True)
@click.option(
    "--token",
    "tokens",
    multiple=True,
    metavar="TOKEN=USER",
    help="A bearer token and the user it authenticates (repeatable).",
)
@click.option(
    "--org", "orgs", multiple=True, metavar="USER=ORG", help="Make USER a member of ORG (repeatable)."
)
@click.option(
    "--template",
    "templates",
    multiple=True,
    metavar="NS/NAME",
    help="A public template Space to seed (repeatable).",
)
@click.option("--build-seconds", type=float, default=3.0, show_default=True)
@click.option("--hardware-seconds", type=float, default=3.0, show_default=True)
@click.option(
    "--transient-error-seconds",
    type=float,
    default=0.0,
    show_default=True,
    help="How long a fresh private duplicate answers 401/404 on hardware, secrets, runtime and info.",
)
@click.option(
    "--rate-limit", type=int, default=None, help="API calls per caller per 5 minutes (default: unlimited)."
)
def hubsim(
    host: str,
    port: int,
    tokens: tuple[str, ...],
    orgs: tuple[str, ...],
    templates: tuple[str, ...],
    build_seconds: float,
    hardware_seconds: float,
    transient_error_seconds: float,
    rate_limit: int | None,
) -> None:
    """Serve the Hub emulator (the Hub's Space API, offline)."""
    from .hubsim import HubSimConfig, serve

    def pairs(values: tuple[str, ...], what: str) -> list[tuple[str, str]]:
        try:
            return [(left, right) for left, right in (value.split("=", 1) for value in values)]
        except ValueError:
            raise click.BadParameter(f"expected {what}") from None

    org_map: dict[str, list[str]] = {}
    for user, org in pairs(orgs, "USER=ORG"):
        org_map.setdefault(user, []).append(org)
    config = HubSimConfig(
        tokens=dict(pairs(tokens, "TOKEN=USER")),
        orgs=org_map,
        templates=list(templates),
        build_seconds=build_seconds,
        hardware_switch_seconds=hardware_seconds,
        transient_error_seconds=transient_error_seconds,
        rate_limit=rate_limit,
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    serve(config, host, port)


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
    from .approve_command import ApprovalError, ApprovalRequest, kubeconfig_namespace
    from .approve_command import approve as write_approval

    namespace = namespace or kubeconfig_namespace()
    request = ApprovalRequest(session, namespace, hardware, max_usd_per_hour, budget_usd, reason)
    try:
        written = write_approval(request)
    except ApprovalError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(1)
    what = written["hardware"] or f"any flavor up to ${written['maxUsdPerHour']}/h"
    budget = f" within ${written['budgetUsd']}" if written["budgetUsd"] else ""
    click.echo(f"approved {what}{budget} for {namespace}/{session} as {written['approvedBy']}")


_STATE_DIR = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".state/dev"),
    show_default=True,
    help="Where the dev environment keeps its files, logs and env.sh.",
)
_DELAYS = [
    click.option(
        "--build-seconds", type=float, default=3.0, show_default=True, help="Emulated Space build time."
    ),
    click.option(
        "--hardware-seconds",
        type=float,
        default=3.0,
        show_default=True,
        help="Emulated hardware switch time.",
    ),
]


def _with_delays(fn: F) -> F:
    for option in reversed(_DELAYS):
        fn = option(fn)
    return fn


@main.group(invoke_without_command=True)
@_STATE_DIR
@click.option("--without-operator", is_flag=True, help="Start everything but the operator.")
@click.option("--quiet", is_flag=True, hidden=True)
@_with_delays
@click.pass_context
def dev(
    ctx: click.Context,
    state_dir: Path,
    without_operator: bool,
    quiet: bool,
    build_seconds: float,
    hardware_seconds: float,
) -> None:
    """Local control plane + Hub emulator + operator, in the foreground until Ctrl-C."""
    if ctx.invoked_subcommand is not None:
        return
    from .dev import run_dev

    run_dev(
        state_dir.resolve(),
        with_operator=not without_operator,
        build_seconds=build_seconds,
        hardware_seconds=hardware_seconds,
        announce=not quiet,
    )


@dev.command("up")
@_STATE_DIR
@click.option("--without-operator", is_flag=True, help="Start everything but the operator.")
@_with_delays
def dev_up(state_dir: Path, without_operator: bool, build_seconds: float, hardware_seconds: float) -> None:
    """Start the dev environment in the background; writes STATE_DIR/env.sh when ready."""
    from .dev import DevError, up

    try:
        env_file = up(
            state_dir.resolve(),
            with_operator=not without_operator,
            build_seconds=build_seconds,
            hardware_seconds=hardware_seconds,
        )
    except DevError as error:
        click.echo(str(error), err=True)
        sys.exit(1)
    click.echo(f"ready: source {env_file}")


@dev.command("down")
@_STATE_DIR
def dev_down(state_dir: Path) -> None:
    """Stop everything `dev up` started."""
    from .dev import down

    down(state_dir.resolve())
    click.echo("stopped")
