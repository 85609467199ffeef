"""The chart's RBAC rules are exactly the API calls the operator's code makes.

kopf's own calls are fixed facts of kopf 1.45 (read from its source: list + watch, JSON/merge
PATCH of the object and its status, POST of Events; with scanning off and standalone, nothing
else). The operator's own calls are found by parsing the modules the operator process runs: the
Kubernetes client's method names say verb and resource (`replace_namespaced_secret` is an
update of secrets). A new call fails this test until the chart grants it.
"""

from __future__ import annotations

import ast
from pathlib import Path

from sandbox_operator import api
from tests.support.helm_chart import (
    CLUSTER_READ_PERMISSIONS,
    LEADER_ELECTION_PERMISSIONS,
    OPERATOR_PERMISSIONS,
    REPO,
    REQUIRED_VALUES,
    Helm,
    permissions,
    rbac_objects,
)

PACKAGE = REPO / "operator" / "sandbox_operator"
KOPF_PERMISSIONS = {
    (api.GROUP, api.PLURAL, "list"),
    (api.GROUP, api.PLURAL, "watch"),
    (api.GROUP, api.PLURAL, "patch"),
    (api.GROUP, f"{api.PLURAL}/status", "patch"),
    (api.GROUP, api.POOL_PLURAL, "list"),
    (api.GROUP, api.POOL_PLURAL, "watch"),
    (api.GROUP, api.POOL_PLURAL, "patch"),
    (api.GROUP, f"{api.POOL_PLURAL}/status", "patch"),
    ("", "events", "create"),
}
CLIENT_VERBS = {
    "read": "get",
    "get": "get",
    "list": "list",
    "create": "create",
    "patch": "patch",
    "replace": "update",
    "delete": "delete",
    "delete_collection": "deletecollection",
}
# Kubernetes client type names -> (API group, resource). `custom_object` is an AgentSession, except in
# the warm pools' module (POOL_MODULE), whose custom objects are AgentSessionPools; the sweeper lists
# pools through k8s/client.py's listing (granted with kopf's watch of them).
RESOURCES = {
    "custom_object": (api.GROUP, api.PLURAL),
    "secret": ("", "secrets"),
    "event": ("", "events"),
    "lease": ("coordination.k8s.io", "leases"),
    "config_map": ("", "configmaps"),
}
# Cluster-scoped resources the operator touches, whose client methods have no scope in their names.
CLUSTER_RESOURCES = {
    "namespace": ("", "namespaces"),
    "validating_admission_policy": ("admissionregistration.k8s.io", "validatingadmissionpolicies"),
    "validating_admission_policy_binding": (
        "admissionregistration.k8s.io",
        "validatingadmissionpolicybindings",
    ),
    "subject_access_review": ("authorization.k8s.io", "subjectaccessreviews"),
}


def runtime_modules() -> set[Path]:
    """registry.py (every handler, and through it the runtime) and the package modules it imports,
    transitively: what `run` executes.

    Approver tooling (`sandbox-operator approve`) and dev/test helpers are not reached from here,
    and their calls are made with other identities.
    """
    todo, seen = [PACKAGE / "registry.py"], set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("sandbox_operator")
            ):
                # `from sandbox_operator.core import lifecycle` names modules of a subpackage
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
                modules = [PACKAGE.parent.joinpath(*name.split(".")).with_suffix(".py") for name in names]
                todo += [module for module in modules if module.is_file()]
    return seen


def relative(path: Path) -> str:
    """A module's path inside the package: `hub/client.py`."""
    return path.relative_to(PACKAGE).as_posix()


POOL_MODULE = "pools/book.py"


def permission(method: str, module: str = "") -> tuple[str, str, str]:
    """`read_namespaced_secret` -> ("", "secrets", "get"); `patch_namespaced_custom_object_status` ->
    (group, "agentsessions/status", "patch")."""
    for verb in CLIENT_VERBS:
        if method.removeprefix(f"{verb}_") in CLUSTER_RESOURCES:
            group, resource = CLUSTER_RESOURCES[method.removeprefix(f"{verb}_")]
            return group, resource, CLIENT_VERBS[verb]
    for scope in ("_namespaced_", "_cluster_"):
        verb, found, kind = method.partition(scope)
        if found:
            break
    subresource = "/status" if kind.endswith("_status") else ""
    kind = kind.removesuffix("_status")
    assert verb in CLIENT_VERBS and kind in RESOURCES, f"{method}: unknown to this test; teach it"
    group, resource = RESOURCES[kind]
    if kind == "custom_object" and module == POOL_MODULE:
        resource = api.POOL_PLURAL
    return group, resource + subresource, CLIENT_VERBS[verb]


def client_methods(path: Path) -> set[str]:
    """Kubernetes client methods named in a module (called, or passed on as in functools.partial)."""
    return {
        node.attr
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute)
        and (
            "_namespaced_" in node.attr
            or node.attr.endswith("_cluster_custom_object")
            or any(node.attr == f"{verb}_{kind}" for verb in CLIENT_VERBS for kind in CLUSTER_RESOURCES)
        )
    }


def test_runtime_modules_are_the_operators() -> None:
    names = {relative(path) for path in runtime_modules()}
    assert {
        "registry.py",
        "runtime.py",
        "sessions/loop.py",
        "k8s/client.py",
        "core/lifecycle.py",
        "core/model.py",
        "hub/client.py",
    } <= names
    assert "approver/approve.py" not in names  # run by approvers, as themselves


def test_code_calls_are_exactly_the_granted_permissions(helm: Helm) -> None:
    called = {
        permission(method, relative(path)) for path in runtime_modules() for method in client_methods(path)
    }
    needed = KOPF_PERMISSIONS | called
    assert needed == OPERATOR_PERMISSIONS | LEADER_ELECTION_PERMISSIONS | CLUSTER_READ_PERMISSIONS
    granted = set().union(*(permissions(obj.get("rules", [])) for obj in rbac_objects(helm, REQUIRED_VALUES)))
    assert granted == needed
