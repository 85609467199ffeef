"""`sandbox-operator approve`: write spec.approval as the caller, with the caller's own identity.

The API server decides whether the caller may approve (the chart's ValidatingAdmissionPolicy);
this only saves approvers from typing their username and from approving the wrong flavor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from . import api
from .kube import load_client_config


class ApprovalError(Exception):
    """The approval cannot be written; the message says what to do instead."""


@dataclass(frozen=True)
class ApprovalRequest:
    session: str
    namespace: str
    hardware: str | None
    max_usd_per_hour: float | None
    budget_usd: float | None
    reason: str | None


@dataclass(frozen=True)
class Identity:
    username: str
    groups: list[str]


def current_identity() -> Identity:
    """Who the API server says we are (SelfSubjectReview), e.g. the user of the current kubeconfig,
    with the groups through which roles may grant us `approve`."""
    review = client.AuthenticationV1Api().create_self_subject_review(
        client.V1SelfSubjectReview(api_version="authentication.k8s.io/v1", kind="SelfSubjectReview")
    )
    user = review.status.user_info if review.status else None
    if user is None or not user.username:
        raise ApprovalError("the API server did not say who you are (SelfSubjectReview returned no user)")
    return Identity(str(user.username), [str(group) for group in user.groups or []])


def _server_message(error: ApiException) -> str:
    try:
        return str(json.loads(error.body or "")["message"])
    except (TypeError, ValueError, KeyError):
        return f"{error.status} {error.reason}"


def build_approval(request: ApprovalRequest, spec: dict[str, Any], identity: Identity) -> dict[str, Any]:
    """The full spec.approval to write; absent fields are null so a merge patch clears old ones."""
    requested = spec.get("hardware", api.Hardware.CPU_BASIC.value)
    hardware = request.hardware
    if hardware is None and request.max_usd_per_hour is None:
        hardware = requested
    if hardware is not None and hardware != requested:
        raise ApprovalError(
            f"{request.namespace}/{request.session} requests {requested}, not {hardware}: an approval is for "
            f"the requested flavor; approve {requested}, or have spec.hardware set to {hardware} first"
        )
    if hardware == api.Hardware.CPU_BASIC.value and request.max_usd_per_hour is None:
        raise ApprovalError(
            f"{request.namespace}/{request.session} requests free hardware: nothing to approve"
        )
    return {
        "hardware": hardware,
        "approvedBy": identity.username,
        # The admission policy admits only groups we are in; the operator asks with them whether we may
        # approve, so rights granted through a group count too.
        "approverGroups": identity.groups or None,
        "reason": request.reason,
        "maxUsdPerHour": request.max_usd_per_hour,
        "budgetUsd": request.budget_usd,
    }


def kubeconfig_namespace() -> str:
    """The current kubeconfig context's namespace, as kubectl uses it."""
    try:
        _, active = config.list_kube_config_contexts()
    except config.ConfigException:
        return "default"
    return str(active["context"].get("namespace") or "default")


def approve(request: ApprovalRequest) -> dict[str, Any]:
    """Patch the session's spec.approval; returns the approval written."""
    load_client_config()
    custom = client.CustomObjectsApi()
    try:
        session: Any = custom.get_namespaced_custom_object(
            api.GROUP, api.VERSION, request.namespace, api.PLURAL, request.session
        )
        approval = build_approval(request, session.get("spec", {}), current_identity())
        custom.patch_namespaced_custom_object(
            api.GROUP,
            api.VERSION,
            request.namespace,
            api.PLURAL,
            request.session,
            {"spec": {"approval": approval}},
        )
    except ApiException as error:
        raise ApprovalError(_server_message(error)) from error
    return approval
