"""The approver's commands' client side: who calls (kubeconfig context, kubectl-style impersonation),
what waits for an approver (`approvals`), and writing a denial (`deny`).

They act as the caller, never as the operator: the API server (RBAC and the admission policy) decides
what the caller may see and write; this only reads and writes the fields for them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from sandbox_operator import api


class CommandError(Exception):
    """The command cannot do what was asked; the message says why, as kubectl would."""


@dataclass(frozen=True)
class Caller:
    """Whose kubeconfig identity the command uses: kubectl's --kubeconfig, --context, --as, --as-group."""

    kubeconfig: str | None = None
    context: str | None = None
    as_user: str | None = None
    as_groups: tuple[str, ...] = ()


def connect(caller: Caller) -> client.ApiClient:
    """An API client with the caller's kubeconfig credentials (in a pod without one: its ServiceAccount),
    impersonating `as_user` / `as_groups` as kubectl does (Impersonate-User, one Impersonate-Group header
    per group)."""
    if caller.as_groups and not caller.as_user:
        raise CommandError("requesting groups without impersonating a user: --as-group needs --as")
    configuration = client.Configuration()
    try:
        config.load_kube_config(
            config_file=caller.kubeconfig, context=caller.context, client_configuration=configuration
        )
    except config.ConfigException as error:
        if caller.kubeconfig or caller.context:
            raise CommandError(str(error)) from error
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException:
            raise CommandError(f"no kubeconfig to use: {error}") from error
    api_client = client.ApiClient(configuration)
    if caller.as_user:
        api_client.set_default_header("Impersonate-User", caller.as_user)
    if caller.as_groups:
        send = api_client.rest_client.request

        def with_groups(
            method: str, url: str, headers: Mapping[str, str] | None = None, **kwargs: Any
        ) -> Any:
            merged = urllib3.HTTPHeaderDict(dict(headers or {}))
            for group in caller.as_groups:
                merged.add("Impersonate-Group", group)
            return send(method, url, headers=merged, **kwargs)

        setattr(api_client.rest_client, "request", with_groups)  # noqa: B010 (a method of the instance)
    return api_client


def kubeconfig_namespace(caller: Caller) -> str:
    """The namespace of the kubeconfig context in use, as kubectl defaults it."""
    try:
        contexts, active = config.list_kube_config_contexts(config_file=caller.kubeconfig)
    except config.ConfigException:
        return "default"
    chosen = next((c for c in contexts if c["name"] == caller.context), active) if caller.context else active
    return str((chosen or {}).get("context", {}).get("namespace") or "default")


def server_error(error: ApiException) -> CommandError:
    """kubectl's wording of an API error: `Error from server (Reason): message`."""
    try:
        body = json.loads(error.body or "")
        return CommandError(f"Error from server ({body.get('reason') or error.reason}): {body['message']}")
    except (TypeError, ValueError, KeyError):
        return CommandError(f"Error from server ({error.reason}): {error.status}")


@dataclass(frozen=True)
class Identity:
    username: str
    groups: list[str]


def current_identity(api_client: client.ApiClient) -> Identity:
    """Who the API server says we are (SelfSubjectReview; impersonation included), with the groups
    through which roles may grant us `approve`."""
    review = client.AuthenticationV1Api(api_client).create_self_subject_review(
        client.V1SelfSubjectReview(api_version="authentication.k8s.io/v1", kind="SelfSubjectReview")
    )
    user = review.status.user_info if review.status else None
    if user is None or not user.username:
        raise CommandError("the API server did not say who you are (SelfSubjectReview returned no user)")
    return Identity(str(user.username), [str(group) for group in user.groups or []])


def get_session(api_client: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    try:
        found: Any = client.CustomObjectsApi(api_client).get_namespaced_custom_object(
            api.GROUP, api.VERSION, namespace, api.PLURAL, name
        )
    except ApiException as error:
        raise server_error(error) from error
    return dict(found)


def patch_spec(
    api_client: client.ApiClient, namespace: str, name: str, spec: dict[str, Any]
) -> dict[str, Any]:
    """A merge patch of the session's spec, as the caller (null removes a field)."""
    try:
        patched: Any = client.CustomObjectsApi(api_client).patch_namespaced_custom_object(
            api.GROUP, api.VERSION, namespace, api.PLURAL, name, {"spec": spec}
        )
    except ApiException as error:
        raise server_error(error) from error
    return dict(patched)


# What waits -----------------------------------------------------------------------------------


def _items(listed: Any) -> list[dict[str, Any]]:
    return list(listed.get("items", []))


class NamespacesHidden(CommandError):
    """The caller may list sessions neither cluster-wide nor namespaces, so which namespaces they may read
    is unknown: only the one they name (or their context's) can be listed."""


def list_sessions(api_client: client.ApiClient, namespace: str | None) -> list[dict[str, Any]]:
    """Sessions in `namespace`, or (None) in every namespace the caller may list them in: cluster-wide
    if allowed, else namespace by namespace where the caller may list namespaces (NamespacesHidden if
    they may do neither)."""
    custom = client.CustomObjectsApi(api_client)
    try:
        if namespace is not None:
            return _items(custom.list_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL))
        return _items(custom.list_cluster_custom_object(api.GROUP, api.VERSION, api.PLURAL))
    except ApiException as error:
        if namespace is not None or error.status != 403:
            raise server_error(error) from error
        refused = error
    try:
        namespaces = client.CoreV1Api(api_client).list_namespace().items
    except ApiException:
        raise NamespacesHidden(str(server_error(refused))) from refused
    found: list[dict[str, Any]] = []
    for name in [str(item.metadata.name) for item in namespaces if item.metadata]:
        try:
            found += _items(custom.list_namespaced_custom_object(api.GROUP, api.VERSION, name, api.PLURAL))
        except ApiException as error:
            if error.status != 403:
                raise server_error(error) from error
    return found


def waiting(sessions: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The sessions that wait for an approver (status.pendingApproval), longest-waiting first."""
    pending = [s for s in sessions if (s.get("status") or {}).get("pendingApproval")]
    return sorted(pending, key=lambda s: s["status"]["pendingApproval"].get("requestedTime") or "")


def age(since: str | None, now: datetime) -> str:
    """kubectl's short duration: 45s, 12m, 5h, 3d."""
    if not since:
        return "<unknown>"
    seconds = max(0, int((now - datetime.fromisoformat(since.replace("Z", "+00:00"))).total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 180 * 60:
        return f"{seconds // 60}m"
    if seconds < 48 * 3600:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def _condition(session: dict[str, Any], type_: str) -> dict[str, Any]:
    conditions = (session.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == type_), {})


def table(sessions: list[dict[str, Any]], now: datetime, *, all_namespaces: bool, wide: bool) -> str:
    """The rows of `approvals`, aligned as kubectl aligns them."""
    header = ["NAME", "HARDWARE", "USD/H", "REQUESTED BY", "WAITING"]
    header = ["NAMESPACE", *header] if all_namespaces else header
    header += ["REASON", "SPACE"] if wide else []
    rows = [header]
    for session in sessions:
        pending = session["status"]["pendingApproval"]
        price = pending.get("usdPerHour")
        row = [
            session["metadata"]["name"],
            pending["hardware"],
            f"{price:.2f}" if price is not None else "<unknown>",
            pending.get("requestedBy") or "<unknown>",
            age(pending.get("requestedTime"), now),
        ]
        row = [session["metadata"]["namespace"], *row] if all_namespaces else row
        if wide:
            row += [
                _condition(session, "HardwareApproved").get("reason") or "<none>",
                session["status"].get("spaceId") or "<none>",
            ]
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


# Deny -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DenialRequest:
    session: str
    namespace: str
    reason: str
    hardware: str | None


def build_denial(
    request: DenialRequest, spec: Mapping[str, Any], identity: Identity, now: datetime
) -> dict[str, Any]:
    """The spec patch of a denial: the denial (who, why, when), and the approval of that flavor withdrawn."""
    requested = spec.get("hardware", api.Hardware.CPU_BASIC.value)
    hardware = request.hardware or requested
    where = f"{request.namespace}/{request.session}"
    if hardware != requested:
        raise CommandError(
            f"{where} requests {requested}, not {hardware}: a denial is for the requested flavor"
        )
    if hardware == api.Hardware.CPU_BASIC.value:
        raise CommandError(f"{where} requests free hardware: nothing to deny")
    patch: dict[str, Any] = {
        "denial": {
            "hardware": hardware,
            "deniedBy": identity.username,
            "approverGroups": identity.groups or None,
            "reason": request.reason,
            "deniedAt": now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    }
    if (spec.get("approval") or {}).get("hardware") == hardware:
        patch["approval"] = None
    return patch


def deny(api_client: client.ApiClient, request: DenialRequest, now: Callable[[], datetime]) -> dict[str, Any]:
    """Write the denial as the caller; returns the session as the API server stored it."""
    session = get_session(api_client, request.namespace, request.session)
    patch = build_denial(request, session.get("spec", {}), current_identity(api_client), now())
    return patch_spec(api_client, request.namespace, request.session, patch)


# Durations ------------------------------------------------------------------------------------

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """Go-style durations as kubectl takes them, plus days: 90s, 2m, 1h30m, 7d."""
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise CommandError(f"invalid duration {text!r}: use e.g. 90s, 2m, 1h30m, 7d")
    seconds = sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)
    if seconds <= 0:
        raise CommandError(f"invalid duration {text!r}: it must be longer than zero")
    return timedelta(seconds=seconds)
