"""Helpers for the chart and image tests: render the chart with the real `helm`, read the Dockerfile.

Not a conftest: tests/integration and tests/image import it too,
e.g. to apply the chart's RBAC objects and run the operator with exactly those permissions.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import yaml
from dockerfile_parse import DockerfileParser

from sandbox_testbench.controlplane import ControlPlane, Kubectl, find_binaries
from sandbox_testbench.controlplane.helm import Helm as HelmRunner

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "sandbox-operator"

#: The least values the chart accepts: it has no default template and needs a Hub token.
REQUIRED_VALUES: dict[str, Any] = {
    "defaultTemplate": "sandbox-templates/agent-sandbox",
    "hub": {"token": "hf_x"},
}
#: The chart's own example values (chart-testing's ci/ convention), by file name.
CI_VALUES: dict[str, dict[str, Any]] = {
    path.name: yaml.safe_load(path.read_text()) for path in sorted((CHART / "ci").glob("*-values.yaml"))
}

#: What the operator calls the API server for in the namespaces it watches, as (API group, resource, verb).
OPERATOR_PERMISSIONS = frozenset(
    {
        ("agents.sandbox-operator.dev", "agentsessions", "list"),
        ("agents.sandbox-operator.dev", "agentsessions", "watch"),
        ("agents.sandbox-operator.dev", "agentsessions", "patch"),
        ("agents.sandbox-operator.dev", "agentsessions", "delete"),
        ("agents.sandbox-operator.dev", "agentsessions/status", "patch"),
        ("agents.sandbox-operator.dev", "agentsessionpools", "get"),
        ("agents.sandbox-operator.dev", "agentsessionpools", "list"),
        ("agents.sandbox-operator.dev", "agentsessionpools", "watch"),
        ("agents.sandbox-operator.dev", "agentsessionpools", "patch"),
        ("agents.sandbox-operator.dev", "agentsessionpools/status", "patch"),
        ("", "events", "create"),
        ("", "secrets", "get"),
        ("", "secrets", "create"),
        ("", "secrets", "update"),
    }
)
#: What it reads cluster-wide in every mode: is the approval policy enforced, may the approver approve,
#: and the kube-system namespace whose UID is the default cluster id.
CLUSTER_READ_PERMISSIONS = frozenset(
    {
        ("admissionregistration.k8s.io", "validatingadmissionpolicies", "get"),
        ("admissionregistration.k8s.io", "validatingadmissionpolicybindings", "list"),
        ("authorization.k8s.io", "subjectaccessreviews", "create"),
        ("", "namespaces", "get"),
    }
)
#: What it needs in its own (the release's) namespace, for the leader-election Lease and to list the
#: other shards' Leases (only there: a Lease elsewhere never counts as a shard).
LEADER_ELECTION_PERMISSIONS = frozenset(
    {("coordination.k8s.io", "leases", verb) for verb in ("get", "create", "update", "patch", "list")}
)


class Helm:
    """The project's helm runner bound to this repository's chart, as the tests use it."""

    def __init__(self, binary: Path, home: Path, kubeconfig: Path | None = None) -> None:
        self.runner = HelmRunner(binary, home, kubeconfig)

    @classmethod
    def create(cls, home: Path, kubeconfig: Path | None = None) -> Helm:
        return cls(find_binaries() / "helm", home, kubeconfig)

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        return self.runner(*args, check=check, timeout=timeout)

    def values_file(self, values: dict[str, Any]) -> Path:
        return self.runner.values_file(values)

    def template(
        self,
        values: dict[str, Any],
        *,
        release: str = "so",
        namespace: str = "sandbox-operator",
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        return self.runner.template(CHART, values, release=release, namespace=namespace, check=check)

    def render(
        self, values: dict[str, Any], *, release: str = "so", namespace: str = "sandbox-operator"
    ) -> list[dict[str, Any]]:
        return self.runner.render(CHART, values, release=release, namespace=namespace)


def built_tool(name: str) -> Path:
    """A checker hack/build-binaries.sh builds beside helm (promtool, kube-score); missing, the test fails."""
    path = find_binaries() / name
    assert os.access(path, os.X_OK), f"{path} is missing: hack/build-binaries.sh builds it (Go >= 1.26)"
    return path


def merged(*layers: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge value layers, later ones winning, the way helm merges several --values files."""
    result: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, dict) and isinstance(result.get(key), dict):
                result[key] = merged(result[key], value)
            else:
                result[key] = value
    return result


def rbac_objects(
    helm: Helm, values: dict[str, Any], *, release: str = "so", namespace: str = "sandbox-operator"
) -> list[dict[str, Any]]:
    """The operator's ServiceAccount, the bindings naming it and the (Cluster)Roles they grant.

    Found by following the bindings, so roles for people (e.g. approvers) are left out.
    """
    objects = helm.render(values, release=release, namespace=namespace)
    account = one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"]
    subject = {"kind": "ServiceAccount", "name": account, "namespace": namespace}
    bindings = [
        obj
        for obj in objects
        if obj["kind"] in {"RoleBinding", "ClusterRoleBinding"} and subject in obj.get("subjects", [])
    ]
    granted = {
        _role_key(binding["roleRef"]["kind"], binding["roleRef"]["name"], binding) for binding in bindings
    }
    roles = [
        obj
        for obj in objects
        if obj["kind"] in {"Role", "ClusterRole"}
        and _role_key(obj["kind"], obj["metadata"]["name"], obj) in granted
    ]
    accounts = [
        obj for obj in objects if obj["kind"] == "ServiceAccount" and obj["metadata"]["name"] == account
    ]
    return accounts + roles + bindings


def _role_key(kind: str, name: str, obj: dict[str, Any]) -> tuple[str, str, str | None]:
    """A Role is found in the namespace of the object at hand; a ClusterRole has none."""
    return kind, name, obj["metadata"].get("namespace") if kind == "Role" else None


def permissions(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """RBAC rules (or SelfSubjectRulesReview resourceRules) flattened to (group, resource, verb)."""
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule.get("apiGroups", [])
        for resource in rule.get("resources", [])
        for verb in rule.get("verbs", [])
    }


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {[obj['metadata']['name'] for obj in found]}"
    return found[0]


def container_env(deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The operator container's env, by name (each entry as rendered: value or valueFrom)."""
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {entry["name"]: entry for entry in container["env"]}


def pod_from_deployment(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    """A Pod with the Deployment's pod template, as the ReplicaSet controller would create it."""
    template = deployment["spec"]["template"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": deployment["metadata"]["namespace"],
            "labels": template["metadata"]["labels"],
            "annotations": template["metadata"].get("annotations", {}),
        },
        "spec": template["spec"],
    }


def dockerfile_stages() -> list[list[dict[str, Any]]]:
    """The Dockerfile's instructions (comments dropped), one list per stage, each starting with its FROM."""
    stages: list[list[dict[str, Any]]] = []
    for instruction in DockerfileParser(path=str(REPO / "Dockerfile")).structure:
        if instruction["instruction"] == "FROM":
            stages.append([])
        if instruction["instruction"] != "COMMENT" and stages:
            stages[-1].append(instruction)
    return stages


def instruction_values(stage: list[dict[str, Any]], name: str) -> list[str]:
    return [instruction["value"] for instruction in stage if instruction["instruction"] == name]


def copied_sources(stage: list[dict[str, Any]]) -> list[str]:
    """The build-context paths a stage COPYs (flags such as --chown left out)."""
    return [
        source
        for value in instruction_values(stage, "COPY")
        for source in value.split()[:-1]
        if not source.startswith("--")
    ]


def service_account_kubectl(plane: ControlPlane, namespace: str, name: str, kubeconfig: Path) -> Kubectl:
    """kubectl authenticated as a ServiceAccount, with a token from the TokenRequest API (as in a pod)."""
    return plane.kubectl(plane.service_account_kubeconfig(kubeconfig, namespace, name))
