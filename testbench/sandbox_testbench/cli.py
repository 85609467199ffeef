"""The `sandbox-testbench` command: dev mode (the offline demo) and the Hub emulator on its own."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from sandbox_operator import __version__

F = TypeVar("F", bound=Callable[..., Any])


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="sandbox-testbench")
def main() -> None:
    """The operator's test bench: a local control plane and Hub emulator, offline."""


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
    from .dev import DevError, run_dev

    try:
        run_dev(
            state_dir.resolve(),
            with_operator=not without_operator,
            build_seconds=build_seconds,
            hardware_seconds=hardware_seconds,
            announce=not quiet,
        )
    except DevError as error:
        click.echo(str(error), err=True)
        sys.exit(1)


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
