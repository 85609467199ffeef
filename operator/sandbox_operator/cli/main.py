"""The `sandbox-operator` command: run the operator, sweep, print the CRD and policy; and the approver's
`approvals`, `approve` and `deny` (approver/cli.py, also the kubectl plugin)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
from pydantic import BaseModel, ValidationError

from sandbox_operator import __version__
from sandbox_operator.approver import cli as approver_cli
from sandbox_operator.config.options import model_options, option_values
from sandbox_operator.config.settings import OperatorConfig, RunSettings

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


def _import_kopf_without_kubernetes_client() -> None:
    """kopf imports the official Kubernetes client whenever it is installed (to recognise its models
    among handler results), and that import alone holds 25 MiB for the process's life. The operator
    calls the API without it (k8s/transport.py), so `run` imports kopf while the client is marked absent
    (kopf then skips it as if uninstalled); later imports of the client, if any, work as usual."""
    if "kubernetes" in sys.modules or "kopf" in sys.modules:
        return
    sys.modules["kubernetes"] = None  # type: ignore[assignment]  # Python's way to refuse an import
    try:
        import kopf  # noqa: F401
    finally:
        del sys.modules["kubernetes"]


@main.command()
@model_options(OperatorConfig)
@model_options(RunSettings)
def run(**values: Any) -> None:
    """Run the operator until SIGINT or SIGTERM."""
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    _import_kopf_without_kubernetes_client()
    from sandbox_operator.k8s.lease import LeaseNamespaceMissing
    from sandbox_operator.registry import build_registry
    from sandbox_operator.runtime import run_operator
    from sandbox_operator.startup import lease_settings

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
        run_operator(config, settings, build_registry)
    except LeaseNamespaceMissing as error:
        raise click.ClickException(str(error)) from None


@main.command()
@model_options(OperatorConfig, only=_SWEEP_CONFIG | _SWEEP_FLAGS.keys(), flags=_SWEEP_FLAGS)
@model_options(RunSettings, only={"namespaces"})
def sweep(**values: Any) -> None:
    """Run one orphan sweeper pass now, printing one line per decision about a Space."""
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    import asyncio

    from sandbox_operator.hub.errors import HubError
    from sandbox_operator.k8s.transport import ApiError
    from sandbox_operator.sweeper import ORPHAN_VERDICTS, sweep_once

    config = _settings(OperatorConfig, values)
    namespaces = list(_settings(RunSettings, values).namespaces)
    try:
        decisions = asyncio.run(sweep_once(config, namespaces))
    except (HubError, ApiError) as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(1)
    for decision in decisions:
        click.echo(decision.line())
    orphans = sum(d.verdict in ORPHAN_VERDICTS for d in decisions)
    click.echo(f"{orphans} orphaned of {len(decisions)} Spaces checked", err=True)


@main.command()
@click.option("--pool", is_flag=True, help="The AgentSessionPool CRD (crds/agentsessionpools.yaml) instead.")
def crd(pool: bool) -> None:
    """Print the AgentSession CustomResourceDefinition (what crds/agentsessions.yaml holds)."""
    from sandbox_operator.api.crd import render_crd, render_pool_crd

    click.echo(render_pool_crd() if pool else render_crd(), nl=False)


@main.command("approval-policy")
def approval_policy() -> None:
    """Print the approval admission policy and its binding (what deploy/approval-policy.yaml holds)."""
    from sandbox_operator.k8s.admission import render_policy

    click.echo(render_policy(), nl=False)


for _command in (approver_cli.approvals, approver_cli.approve, approver_cli.deny):
    main.add_command(_command)
