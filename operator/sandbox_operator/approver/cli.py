"""The approver's commands, `approvals`, `approve` and `deny`: subcommands of `sandbox-operator` and of
the kubectl plugin `kubectl sandbox` (the `kubectl-sandbox` executable installed with the package).

They follow kubectl's conventions: -n/--namespace, -A/--all-namespaces, --kubeconfig, --context,
--as/--as-group impersonation, -o json|yaml|wide, shell completion (click's), exit code 0 on success and
1 on an error, printed as kubectl prints it. They act with the caller's kubeconfig identity.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click
import yaml
from click.shell_completion import CompletionItem

if TYPE_CHECKING:  # the commands import it (and the Kubernetes client) when they run, not the operator
    from sandbox_operator.approver.approvals import Caller

F = TypeVar("F", bound=Callable[..., Any])
OUTPUTS = click.Choice(["json", "yaml", "wide"])


def _caller(params: dict[str, Any]) -> Caller:
    from sandbox_operator.approver.approvals import Caller

    return Caller(
        kubeconfig=params.get("kubeconfig"),
        context=params.get("context"),
        as_user=params.get("as_user"),
        as_groups=tuple(params.get("as_groups") or ()),
    )


def _complete_session(ctx: click.Context, _: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Session names in the namespace given so far, those waiting for an approver first."""
    from sandbox_operator.approver.approvals import connect, kubeconfig_namespace, list_sessions

    caller = _caller(ctx.params)
    try:
        found = list_sessions(connect(caller), ctx.params.get("namespace") or kubeconfig_namespace(caller))
    except Exception:  # completion must never fail the shell
        return []
    found.sort(key=lambda s: not (s.get("status") or {}).get("pendingApproval"))
    names = [s["metadata"]["name"] for s in found]
    return [CompletionItem(name) for name in names if name.startswith(incomplete)]


def caller_options(command: F) -> F:
    """kubectl's flags for whom to act as, and where."""
    decorators = [
        click.option(
            "-n", "--namespace", default=None, help="The namespace (default: the kubeconfig context's)."
        ),
        click.option(
            "--kubeconfig", default=None, help="Path to the kubeconfig file (default: $KUBECONFIG)."
        ),
        click.option("--context", default=None, help="The kubeconfig context to use."),
        click.option("--as", "as_user", default=None, help="Username to impersonate for the operation."),
        click.option(
            "--as-group",
            "as_groups",
            multiple=True,
            help="Group to impersonate (repeat for several; needs --as).",
        ),
        click.option("-o", "--output", type=OUTPUTS, default=None, help="Output format: json, yaml or wide."),
    ]
    for decorate in reversed(decorators):
        command = decorate(command)
    return command


def _fail(error: Exception) -> NoReturn:
    message = str(error)
    click.echo(message if message.startswith("Error from server") else f"error: {message}", err=True)
    sys.exit(1)


def _dump(obj: Any, output: str) -> None:
    if output == "json":
        click.echo(json.dumps(obj, indent=4))
    else:
        click.echo(yaml.safe_dump(obj, sort_keys=False), nl=False)


@click.command()
@caller_options
@click.option(
    "-A", "--all-namespaces", is_flag=True, help="List sessions waiting in every namespace you may see."
)
def approvals(all_namespaces: bool, output: str | None, **params: Any) -> None:
    """List sessions waiting for an approver: flavor, price per hour, who asked, how long it waits."""
    from sandbox_operator.approver.approvals import (
        CommandError,
        NamespacesHidden,
        connect,
        kubeconfig_namespace,
        list_sessions,
        table,
        waiting,
    )

    caller = _caller(params)
    try:
        namespace = None if all_namespaces else params["namespace"] or kubeconfig_namespace(caller)
        api_client = connect(caller)
        try:
            found = waiting(list_sessions(api_client, namespace))
        except NamespacesHidden:
            # Which namespaces they may read is unknown: their context's is the one they work in.
            namespace = params["namespace"] or kubeconfig_namespace(caller)
            click.echo(
                f"You may not list sessions across namespaces (nor the namespaces); "
                f"listing the {namespace} namespace only (-n names another).",
                err=True,
            )
            found = waiting(list_sessions(api_client, namespace))
    except CommandError as error:
        _fail(error)
    if output in ("json", "yaml"):
        _dump(
            {"apiVersion": "v1", "kind": "List", "items": found, "metadata": {"resourceVersion": ""}}, output
        )
        return
    if not found:
        where = "any namespace" if namespace is None else f"{namespace} namespace"
        click.echo(f"No sessions wait for an approval in {where}.", err=True)
        return
    now = datetime.now(UTC)
    click.echo(table(found, now, all_namespaces=all_namespaces, wide=output == "wide"))


def _confirm(question: str) -> bool:
    return click.confirm(question, default=False, err=True)


@click.command()
@click.argument("session", shell_complete=_complete_session)
@caller_options
@click.option(
    "--hardware",
    default=None,
    help="The flavor you approve: the session must request it (without it, and without "
    "--max-usd-per-hour, a terminal is asked to confirm the flavor requested, shown with its price).",
)
@click.option(
    "--max-usd-per-hour", type=float, default=None, help="Grant a standing budget up to this hourly price."
)
@click.option("--budget-usd", type=float, default=None, help="Cap the total estimated spend.")
@click.option("--warn-at-usd", type=float, default=None, help="Warn (Event, BudgetWarning) at this spend.")
@click.option("--expires-in", default=None, help="End the approval after this long, e.g. 2m, 8h, 7d.")
@click.option("--expires-at", default=None, help="End the approval at this time (RFC 3339).")
@click.option("--reason", default=None, help="Why, for the record.")
def approve(
    session: str,
    output: str | None,
    hardware: str | None,
    max_usd_per_hour: float | None,
    budget_usd: float | None,
    warn_at_usd: float | None,
    expires_in: str | None,
    expires_at: str | None,
    reason: str | None,
    **params: Any,
) -> None:
    """Approve paid hardware for SESSION as yourself (approvedBy is your Kubernetes username)."""
    from sandbox_operator.approver.approvals import (
        CommandError,
        connect,
        kubeconfig_namespace,
        parse_duration,
    )
    from sandbox_operator.approver.approve import ApprovalRequest, priced
    from sandbox_operator.approver.approve import approve as write_approval
    from sandbox_operator.core.money import usd

    caller = _caller(params)
    try:
        if expires_in is not None and expires_at is not None:
            raise CommandError("--expires-in and --expires-at are mutually exclusive")
        if expires_in is not None:
            ends = datetime.now(UTC) + parse_duration(expires_in)
            expires_at = ends.strftime("%Y-%m-%dT%H:%M:%SZ")
        namespace = params["namespace"] or kubeconfig_namespace(caller)
        request = ApprovalRequest(
            session, namespace, hardware, max_usd_per_hour, budget_usd, reason, expires_at, warn_at_usd
        )
        confirm = _confirm if sys.stdin.isatty() else None
        written, stored, price = write_approval(connect(caller), request, confirm)
    except CommandError as error:
        _fail(error)
    if output in ("json", "yaml"):
        _dump(stored, output)
        return
    flavor = written["hardware"]
    what = priced(flavor, price) if flavor else f"any flavor up to {usd(written['maxUsdPerHour'])}/h"
    budget = f" within {usd(written['budgetUsd'])}" if written["budgetUsd"] else ""
    until = f" until {written['expiresAt']}" if written["expiresAt"] else ""
    click.echo(f"approved {what}{budget}{until} for {namespace}/{session} as {written['approvedBy']}")


@click.command()
@click.argument("session", shell_complete=_complete_session)
@caller_options
@click.option("--reason", required=True, help="Why, shown to the session's users (required).")
@click.option("--hardware", default=None, help="The flavor to deny (default: the one the session requests).")
def deny(session: str, output: str | None, reason: str, hardware: str | None, **params: Any) -> None:
    """Deny the paid hardware SESSION requests, as yourself; it stays on free hardware and does not ask
    again until spec.hardware names another flavor."""
    from sandbox_operator.approver.approvals import CommandError, DenialRequest, connect, kubeconfig_namespace
    from sandbox_operator.approver.approvals import deny as write_denial

    caller = _caller(params)
    try:
        namespace = params["namespace"] or kubeconfig_namespace(caller)
        stored = write_denial(
            connect(caller), DenialRequest(session, namespace, reason, hardware), lambda: datetime.now(UTC)
        )
    except CommandError as error:
        _fail(error)
    if output in ("json", "yaml"):
        _dump(stored, output)
        return
    denial = stored["spec"]["denial"]
    click.echo(f"denied {denial['hardware']} for {namespace}/{session} as {denial['deniedBy']}: {reason}")


@click.group(
    "kubectl-sandbox",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
def plugin() -> None:
    """kubectl sandbox: what waits for an approver, approve, deny (AgentSessions of sandbox-operator)."""


for _command in (approvals, approve, deny):
    plugin.add_command(_command)


def plugin_main() -> None:
    """The `kubectl-sandbox` executable: kubectl runs it for `kubectl sandbox ...`. Its shell completion
    is the executable's (`_KUBECTL_SANDBOX_COMPLETE=bash_source kubectl-sandbox`)."""
    plugin(prog_name="kubectl-sandbox")
