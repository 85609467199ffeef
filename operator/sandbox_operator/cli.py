"""The `sandbox-operator` command: run the operator, print the CRD, serve the emulator, dev mode."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from . import __version__

F = TypeVar("F", bound=Callable[..., Any])


def _csv(value: str | None) -> list[str]:
    return [item.strip() for item in (value or "").split(",") if item.strip()]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="sandbox-operator")
def main() -> None:
    """Gives every AgentSession its own Hugging Face Space sandbox."""


@main.command()
@click.option(
    "--hub-endpoint",
    envvar="HF_ENDPOINT",
    default="https://huggingface.co",
    show_default=True,
    help="Hub API base URL (env HF_ENDPOINT).",
)
@click.option(
    "--hub-token",
    envvar="HF_TOKEN",
    default="",
    show_default=False,
    help="Hub token the operator acts with (env HF_TOKEN).",
)
@click.option(
    "--default-owner",
    envvar="SANDBOX_OPERATOR_DEFAULT_OWNER",
    default="",
    help="Hub namespace for Spaces of sessions that name none; empty: the token's user.",
)
@click.option(
    "--default-template",
    envvar="SANDBOX_OPERATOR_DEFAULT_TEMPLATE",
    default="",
    help="Space duplicated for sessions that name none.",
)
@click.option(
    "--namespaces",
    envvar="SANDBOX_OPERATOR_NAMESPACES",
    default="",
    help="Comma-separated namespaces to watch; empty: the whole cluster.",
)
@click.option(
    "--cluster-id",
    envvar="SANDBOX_OPERATOR_CLUSTER_ID",
    default="default",
    show_default=True,
    help="Written into each Space's ownership marker.",
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
    free_hardware: str,
    poll_interval: float,
    liveness: str,
    log_format: str,
    verbose: bool,
) -> None:
    """Run the operator until SIGINT or SIGTERM."""
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    from .config import OperatorConfig
    from .controller import run_operator

    if not default_template:
        raise click.UsageError("--default-template (or SANDBOX_OPERATOR_DEFAULT_TEMPLATE) is required")
    config = OperatorConfig(
        hub_endpoint=hub_endpoint.rstrip("/"),
        hub_token=hub_token,
        default_owner=default_owner,
        default_template=default_template,
        cluster_id=cluster_id,
        free_hardware=frozenset(_csv(free_hardware)),
        poll_interval=poll_interval,
    )
    import kopf

    run_operator(
        config,
        namespaces=_csv(namespaces),
        liveness_endpoint=liveness or None,
        verbose=verbose,
        log_format=kopf.LogFormat[log_format.upper()],
    )


@main.command()
def crd() -> None:
    """Print the AgentSession CustomResourceDefinition (what crds/agentsessions.yaml holds)."""
    from .crd import render_crd

    click.echo(render_crd(), nl=False)


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
def hubsim(
    host: str,
    port: int,
    tokens: tuple[str, ...],
    orgs: tuple[str, ...],
    templates: tuple[str, ...],
    build_seconds: float,
    hardware_seconds: float,
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
    )
    serve(config, host, port)


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
