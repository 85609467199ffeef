"""The Helm chart against a local control plane: install, upgrade, Pod Security admission, RBAC.

This module starts a control plane of its own (about 4 s) instead of the session's: the chart
installs cluster-wide singletons (the approval policy and approver ClusterRoles, the CRD from
crds/) that other modules apply by other means, and a fresh cluster is what `helm install` meets.
The RBAC checks authenticate with a real ServiceAccount token (TokenRequest API), so they see
what the operator's pod would be allowed, not what impersonation suggests.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from sandbox_testbench.controlplane import ControlPlane, Kubectl
from tests.support.harness import running_control_plane
from tests.support.helm_chart import (
    CHART,
    CI_VALUES,
    CLUSTER_READ_PERMISSIONS,
    LEADER_ELECTION_PERMISSIONS,
    OPERATOR_PERMISSIONS,
    REQUIRED_VALUES,
    Helm,
    container_env,
    merged,
    one,
    permissions,
    pod_from_deployment,
    service_account_kubectl,
)
from tests.support.kube import wait_for_service_account

# Over a minute in one worker: parallel runs start it first (tests/conftest.py).
pytestmark = pytest.mark.long

RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}
AGENTSESSIONS = "agentsessions.agents.sandbox-operator.dev"
# (kubectl resource, API group, RBAC resource, --subresource) for the can-i matrix.
RESOURCES = [
    (AGENTSESSIONS, "agents.sandbox-operator.dev", "agentsessions", None),
    (AGENTSESSIONS, "agents.sandbox-operator.dev", "agentsessions/status", "status"),
    ("secrets", "", "secrets", None),
    ("events", "", "events", None),
    ("configmaps", "", "configmaps", None),
    ("pods", "", "pods", None),
]
LEASES = "leases.coordination.k8s.io"
VERBS = ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"]


@dataclass(frozen=True)
class Release:
    name: str
    namespace: str
    values: dict[str, Any]
    install: Any  # the CompletedProcess of `helm install`

    def rendered(self, helm: Helm) -> list[dict[str, Any]]:
        return helm.render(self.values, release=self.name, namespace=self.namespace)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def create_namespace(kubectl: Kubectl, name: str, labels: dict[str, str] | None = None) -> None:
    manifest = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}}
    kubectl("create", "-f", "-", stdin=json.dumps(manifest))


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with running_control_plane(tmp_path_factory.mktemp("chart-plane")) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def kubectl(plane: ControlPlane) -> Kubectl:
    """The admin's kubectl on this module's control plane (overrides the session's)."""
    return plane.kubectl()


@pytest.fixture(scope="module")
def helm(plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(plane.bin_dir / "helm", tmp_path_factory.mktemp("helm"), plane.kubeconfig)


@pytest.fixture(scope="module")
def install(helm: Helm, kubectl: Kubectl) -> Callable[[str, dict[str, Any]], Release]:
    """Install a release into a new namespace labelled to enforce the restricted Pod Security Standard."""

    def installer(prefix: str, values: dict[str, Any]) -> Release:
        name = unique(prefix)
        create_namespace(kubectl, name, RESTRICTED)
        result = helm(
            "install", name, str(CHART), "--namespace", name, "--values", str(helm.values_file(values))
        )
        return Release(name, name, values, result)

    return installer


@pytest.fixture(scope="module")
def cluster_wide(install: Callable[[str, dict[str, Any]], Release]) -> Release:
    """The chart with its default values (approval included), into a cluster that has nothing yet."""
    return install("so-cluster", REQUIRED_VALUES)


@pytest.fixture(scope="module")
def watched(kubectl: Kubectl) -> list[str]:
    names = [unique("so-watched"), unique("so-watched")]
    for name in names:
        create_namespace(kubectl, name)
    return names


@pytest.fixture(scope="module")
def namespaced(install: Callable[[str, dict[str, Any]], Release], watched: list[str]) -> Release:
    # The approval policy and roles are cluster-wide singletons, owned by the cluster-wide release.
    values = {"watchNamespaces": watched, "approval": {"enabled": False}}
    return install("so-namespaced", merged(REQUIRED_VALUES, values))


def operator_account(helm: Helm, release: Release) -> str:
    name: str = one(release.rendered(helm), "ServiceAccount")["metadata"]["name"]
    return name


@pytest.fixture(scope="module")
def as_operator(
    helm: Helm, plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[Release], Kubectl]:
    def login(release: Release) -> Kubectl:
        path = tmp_path_factory.mktemp("sa") / "kubeconfig"
        return service_account_kubectl(plane, release.namespace, operator_account(helm, release), path)

    return login


@pytest.fixture(scope="module")
def as_nobody(plane: ControlPlane, kubectl: Kubectl, tmp_path_factory: pytest.TempPathFactory) -> Kubectl:
    """A ServiceAccount with no bindings: what every ServiceAccount may do anyway."""
    namespace = unique("so-nobody")
    create_namespace(kubectl, namespace)
    wait_for_service_account(kubectl, namespace, "default")
    return service_account_kubectl(
        plane, namespace, "default", tmp_path_factory.mktemp("nobody") / "kubeconfig"
    )


def granted(identity: Kubectl, namespace: str) -> set[tuple[str, str, str]]:
    """What `identity` may do in `namespace`, per a SelfSubjectRulesReview (what `can-i --list` asks)."""
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectRulesReview",
        "spec": {"namespace": namespace},
    }
    url = "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews"
    result = json.loads(identity("create", "--raw", url, "-f", "-", stdin=json.dumps(review)).stdout)
    assert not result["status"].get("incomplete"), result["status"]
    return permissions(result["status"]["resourceRules"])


def can(identity: Kubectl, verb: str, resource: str, *scope: str, subresource: str | None = None) -> bool:
    """`kubectl auth can-i` (a SelfSubjectAccessReview); it exits 1 for "no"."""
    args = ["auth", "can-i", verb, resource, *scope]
    if subresource:
        args.append(f"--subresource={subresource}")
    result = identity(*args, check=False)
    assert result.stdout.strip() in {"yes", "no"}, result.stdout + result.stderr
    return result.stdout.strip() == "yes"


def assert_allowed_exactly(identity: Kubectl, namespace: str, expected: set[tuple[str, str, str]]) -> None:
    """Ask `can-i` for every verb on every resource of RESOURCES; only `expected` may say yes."""
    for resource, group, rbac_resource, subresource in RESOURCES:
        for verb in VERBS:
            wanted = (group, rbac_resource, verb) in expected
            allowed = can(identity, verb, resource, "-n", namespace, subresource=subresource)
            assert allowed == wanted, f"can-i {verb} {rbac_resource} -n {namespace}: {allowed}"


def lease_name(helm: Helm, release: Release) -> str:
    env = container_env(one(release.rendered(helm), "Deployment"))
    name: str = env["SANDBOX_OPERATOR_LEASE_NAME"]["value"]
    return name


def assert_lease_access(identity: Kubectl, namespace: str, lease: str, *, allowed: bool) -> None:
    """With `allowed`: create any Lease, read and renew only `lease`, list them (the other shards'
    claims, read only: only here, where a Lease counts as a shard's); nothing else on Leases, ever."""
    assert can(identity, "create", LEASES, "-n", namespace) == allowed
    for verb in ("get", "update", "patch"):
        assert can(identity, verb, f"{LEASES}/{lease}", "-n", namespace) == allowed
        assert not can(identity, verb, f"{LEASES}/someone-elses", "-n", namespace)
    assert can(identity, "list", LEASES, "-n", namespace) == allowed
    for verb in ("watch", "delete", "deletecollection"):
        assert not can(identity, verb, LEASES, "-n", namespace)


# --- install and upgrade ---------------------------------------------------------------------------


def test_install_creates_every_rendered_object(helm: Helm, kubectl: Kubectl, cluster_wide: Release) -> None:
    status = json.loads(helm("status", cluster_wide.name, "-n", cluster_wide.namespace, "-o", "json").stdout)
    assert status["info"]["status"] == "deployed"
    # Helm created the CRD from the chart's crds/ (the cluster had none).
    kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{AGENTSESSIONS}")
    shipped = yaml.safe_load((CHART / "crds" / "agentsessions.yaml").read_text())
    live_crd = kubectl.json("get", "crd", AGENTSESSIONS)
    assert live_crd["spec"]["names"] == shipped["spec"]["names"]
    assert [v["name"] for v in live_crd["spec"]["versions"]] == [
        v["name"] for v in shipped["spec"]["versions"]
    ]
    for obj in cluster_wide.rendered(helm):
        scope = ["-n", obj["metadata"]["namespace"]] if "namespace" in obj["metadata"] else []
        kind = f"{obj['kind']}.{obj['apiVersion'].split('/')[0]}" if "/" in obj["apiVersion"] else obj["kind"]
        live = kubectl.json("get", kind, obj["metadata"]["name"], *scope)
        assert live["metadata"]["labels"]["app.kubernetes.io/instance"] == cluster_wide.name
    # PodSecurity warns about a Deployment whose pods the namespace would reject; there was none.
    assert "PodSecurity" not in cluster_wide.install.stderr, cluster_wide.install.stderr


def test_install_notes_say_what_to_do_next(cluster_wide: Release) -> None:
    notes = cluster_wide.install.stdout
    steps = [
        "get agentsessions -w",
        "describe agentsession demo",
        "--clusterrole=sandbox-operator-approver",
        '{"spec":{"hardware":"t4-small"}}',
        "sandbox approve demo -n",
        "--hardware t4-small --reason",
        "delete agentsession demo",
    ]
    for step in steps:
        assert step in notes, notes


def test_upgrade_rolls_out_new_values(helm: Helm, kubectl: Kubectl, cluster_wide: Release) -> None:
    def revision() -> int:
        status = json.loads(
            helm("status", cluster_wide.name, "-n", cluster_wide.namespace, "-o", "json").stdout
        )
        assert status["info"]["status"] == "deployed"
        return int(status["version"])

    def upgrade(values: dict[str, Any]) -> None:
        namespace = cluster_wide.namespace
        helm(
            "upgrade",
            cluster_wide.name,
            str(CHART),
            "--namespace",
            namespace,
            "--values",
            str(helm.values_file(values)),
        )

    before = revision()
    upgrade(merged(cluster_wide.values, {"clusterId": "upgraded", "hub": {"token": "hf_rotated"}}))
    assert revision() == before + 1
    name = one(cluster_wide.rendered(helm), "Deployment")["metadata"]["name"]
    live = kubectl.json("get", "deployment", name, "-n", cluster_wide.namespace)
    assert container_env(live)["SANDBOX_OPERATOR_CLUSTER_ID"]["value"] == "upgraded"
    # Putting the original values back leaves the release as the other tests expect it.
    upgrade(cluster_wide.values)
    assert revision() == before + 2


def test_uninstall_removes_the_release_but_keeps_the_crd(
    helm: Helm, kubectl: Kubectl, install: Callable[[str, dict[str, Any]], Release]
) -> None:
    """Sessions, and so their Spaces, must outlive an uninstall: Helm never deletes crds/."""
    release = install("so-gone", merged(REQUIRED_VALUES, {"approval": {"enabled": False}}))
    objects = release.rendered(helm)
    helm("uninstall", release.name, "--namespace", release.namespace)
    kinds = ("Deployment", "ServiceAccount", "ClusterRole", "ClusterRoleBinding")
    for obj in (obj for obj in objects if obj["kind"] in kinds):
        kind, name = obj["kind"], obj["metadata"]["name"]
        result = kubectl("get", kind, name, "-n", release.namespace, check=False)
        assert result.returncode != 0 and "NotFound" in result.stderr, f"{kind} {name} survived"
    kubectl("get", "crd", AGENTSESSIONS)


# --- Pod Security admission -------------------------------------------------------------------------


def operator_pod(helm: Helm, kubectl: Kubectl, release: Release, name: str) -> dict[str, Any]:
    """A Pod built from the installed Deployment's pod template (no controller makes one here)."""
    deployment_name = one(release.rendered(helm), "Deployment")["metadata"]["name"]
    return pod_from_deployment(
        kubectl.json("get", "deployment", deployment_name, "-n", release.namespace), name
    )


def test_pod_template_is_admitted_under_restricted(
    helm: Helm, kubectl: Kubectl, cluster_wide: Release
) -> None:
    labels = kubectl.json("get", "namespace", cluster_wide.namespace)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    pod = operator_pod(helm, kubectl, cluster_wide, "admitted")
    result = kubectl("create", "-f", "-", stdin=json.dumps(pod), check=False)
    assert result.returncode == 0, result.stderr
    live = kubectl.json("get", "pod", "admitted", "-n", cluster_wide.namespace)
    assert live["spec"]["securityContext"]["runAsNonRoot"] is True
    kubectl("delete", "pod", "admitted", "-n", cluster_wide.namespace, "--wait=false")


def test_the_hardened_values_objects_pass_the_api_servers_validation(
    helm: Helm, kubectl: Kubectl, cluster_wide: Release
) -> None:
    """The NetworkPolicy, and the Deployment with its probes, ephemeral storage and digest-pinned image,
    as the API server validates them (a server-side dry run: the CRDs of the monitoring objects are not
    installed here)."""
    objects = helm.render(CI_VALUES["hardened-values.yaml"], namespace=cluster_wide.namespace)
    for kind in ("NetworkPolicy", "Deployment"):
        manifest = json.dumps(one(objects, kind))
        result = kubectl("create", "--dry-run=server", "-f", "-", stdin=manifest, check=False)
        assert result.returncode == 0, result.stderr


def drop_all_security_contexts(spec: dict[str, Any]) -> None:
    spec.pop("securityContext")
    for container in spec["containers"]:
        container.pop("securityContext")


def allow_escalation(spec: dict[str, Any]) -> None:
    spec["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True


def keep_capabilities(spec: dict[str, Any]) -> None:
    spec["containers"][0]["securityContext"].pop("capabilities")


def maybe_root(spec: dict[str, Any]) -> None:
    for context in (spec["securityContext"], spec["containers"][0]["securityContext"]):
        context.pop("runAsNonRoot")
        context.pop("runAsUser")


def no_seccomp(spec: dict[str, Any]) -> None:
    for context in (spec["securityContext"], spec["containers"][0]["securityContext"]):
        context.pop("seccompProfile")


WEAKENINGS = {
    "no security context": (drop_all_security_contexts, "allowPrivilegeEscalation != false"),
    "privilege escalation": (allow_escalation, "allowPrivilegeEscalation != false"),
    "capabilities kept": (keep_capabilities, "unrestricted capabilities"),
    "may run as root": (maybe_root, "runAsNonRoot != true"),
    "no seccomp profile": (no_seccomp, "seccompProfile"),
}


@pytest.mark.parametrize("weakening", WEAKENINGS)
def test_weakened_pod_is_rejected_under_restricted(
    helm: Helm, kubectl: Kubectl, cluster_wide: Release, weakening: str
) -> None:
    """Negative control: the namespace does reject pods, and each of the chart's settings matters."""
    weaken, violation = WEAKENINGS[weakening]
    pod = operator_pod(helm, kubectl, cluster_wide, "weakened")
    weaken(pod["spec"])
    result = kubectl("create", "-f", "-", stdin=json.dumps(pod), check=False)
    assert result.returncode != 0, f"admitted with {weakening}"
    assert 'violates PodSecurity "restricted:latest"' in result.stderr
    assert violation in result.stderr


def test_chart_without_security_contexts_draws_a_warning(
    install: Callable[[str, dict[str, Any]], Release],
) -> None:
    """Negative control for the warning check above: helm passes PodSecurity's warning on."""
    values = {"podSecurityContext": None, "securityContext": None, "approval": {"enabled": False}}
    weak = install("so-weak", merged(REQUIRED_VALUES, values))
    assert "would violate PodSecurity" in weak.install.stderr, weak.install.stderr
    assert "restricted:latest" in weak.install.stderr


# --- RBAC, as the operator's ServiceAccount ---------------------------------------------------------


def test_operator_token_is_the_charts_service_account(
    helm: Helm, cluster_wide: Release, as_operator: Callable[[Release], Kubectl]
) -> None:
    whoami = json.loads(as_operator(cluster_wide)("auth", "whoami", "-o", "json").stdout)
    account = operator_account(helm, cluster_wide)
    assert (
        whoami["status"]["userInfo"]["username"]
        == f"system:serviceaccount:{cluster_wide.namespace}:{account}"
    )


def assert_cluster_reads_by_name(operator: Kubectl) -> None:
    """The cluster-scoped reads name their objects where RBAC allows: only that policy, only kube-system."""
    assert can(
        operator, "get", "validatingadmissionpolicies.admissionregistration.k8s.io/sandbox-operator-approval"
    )
    assert not can(operator, "get", "validatingadmissionpolicies.admissionregistration.k8s.io/another")
    assert can(operator, "get", "namespaces/kube-system")
    assert not can(operator, "get", "namespaces/default")
    assert not can(operator, "list", "validatingadmissionpolicies.admissionregistration.k8s.io")


def test_cluster_wide_operator_may_do_exactly_its_calls(
    helm: Helm,
    cluster_wide: Release,
    watched: list[str],
    as_operator: Callable[[Release], Kubectl],
    as_nobody: Kubectl,
) -> None:
    operator = as_operator(cluster_wide)
    own = OPERATOR_PERMISSIONS | LEADER_ELECTION_PERMISSIONS | CLUSTER_READ_PERMISSIONS
    assert granted(operator, cluster_wide.namespace) - granted(as_nobody, cluster_wide.namespace) == own
    elsewhere = OPERATOR_PERMISSIONS | CLUSTER_READ_PERMISSIONS
    assert granted(operator, watched[0]) - granted(as_nobody, watched[0]) == elsewhere
    assert_cluster_reads_by_name(operator)
    assert_allowed_exactly(operator, watched[0], set(OPERATOR_PERMISSIONS))
    assert_allowed_exactly(operator, cluster_wide.namespace, set(OPERATOR_PERMISSIONS))
    lease = lease_name(helm, cluster_wide)
    assert_lease_access(operator, cluster_wide.namespace, lease, allowed=True)
    assert_lease_access(operator, watched[0], lease, allowed=False)
    assert can(operator, "list", AGENTSESSIONS, "--all-namespaces")
    assert can(operator, "watch", AGENTSESSIONS, "--all-namespaces")
    assert not can(operator, "list", "secrets", "--all-namespaces")
    assert not can(operator, "get", LEASES, "--all-namespaces")
    assert not can(operator, "list", LEASES, "--all-namespaces")  # only its own namespace's (shards)
    assert not can(operator, "list", "namespaces")
    assert not can(operator, "list", "customresourcedefinitions.apiextensions.k8s.io")


def test_namespaced_operator_may_act_only_in_watched_namespaces(
    helm: Helm,
    kubectl: Kubectl,
    namespaced: Release,
    watched: list[str],
    as_operator: Callable[[Release], Kubectl],
    as_nobody: Kubectl,
) -> None:
    operator = as_operator(namespaced)
    assert_cluster_reads_by_name(operator)
    for namespace in watched:
        granted_here = granted(operator, namespace) - granted(as_nobody, namespace)
        assert granted_here == OPERATOR_PERMISSIONS | CLUSTER_READ_PERMISSIONS
    assert_allowed_exactly(operator, watched[1], set(OPERATOR_PERMISSIONS))
    # Its own namespace (not watched): the Lease only. Elsewhere: nothing.
    own = namespaced.namespace
    assert (
        granted(operator, own) - granted(as_nobody, own)
        == LEADER_ELECTION_PERMISSIONS | CLUSTER_READ_PERMISSIONS
    )
    assert_allowed_exactly(operator, own, set())
    assert_lease_access(operator, own, lease_name(helm, namespaced), allowed=True)
    assert_lease_access(operator, watched[0], lease_name(helm, namespaced), allowed=False)
    assert granted(operator, "default") - granted(as_nobody, "default") == CLUSTER_READ_PERMISSIONS
    for scope in (["--all-namespaces"], ["-n", "default"]):
        assert not can(operator, "list", AGENTSESSIONS, *scope)
        assert not can(operator, "get", "secrets", *scope)
        assert not can(operator, "create", "events", *scope)
    # Nothing cluster-scoped is bound to the operator but the cluster-scoped reads.
    account = operator_account(helm, namespaced)
    for binding in kubectl.json("get", "clusterrolebindings")["items"]:
        for subject in binding.get("subjects") or []:
            if (subject.get("namespace"), subject["name"]) == (namespaced.namespace, account):
                assert binding["metadata"]["name"].endswith("-cluster-reads"), binding
