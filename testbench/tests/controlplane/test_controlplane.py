"""The local control plane behaves like a real cluster where later tests depend on it."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sandbox_testbench.controlplane import ControlPlane, Kubectl, stop_from_state_dir
from sandbox_testbench.controlplane.processes import COMPONENTS, recorded_pid
from tests.support import wait_for

pytestmark = pytest.mark.integration  # needs the local control plane

# Controllers react within seconds; the garbage collector first syncs an informer per resource.
CONTROLLER_TIMEOUT = 60.0


def create(kubectl: Kubectl, manifest: dict[str, Any], *, check: bool = True) -> str:
    """Create an object; return kubectl's stderr (the rejection reason when check=False)."""
    return kubectl("create", "-f", "-", stdin=json.dumps(manifest), check=check).stderr


def gone(kubectl: Kubectl, *args: str) -> Callable[[], bool]:
    def check() -> bool:
        result = kubectl("get", *args, check=False)
        return result.returncode != 0 and "NotFound" in result.stderr

    return check


def test_apiserver_answers(kubectl: Kubectl) -> None:
    version = kubectl.json("version")
    assert version["serverVersion"]["gitVersion"] == "v1.34.4"
    names = {ns["metadata"]["name"] for ns in kubectl.json("get", "namespaces")["items"]}
    assert {"default", "kube-system", "kube-public", "kube-node-lease"} <= names


def test_rbac_forbids_unknown_user(kubectl: Kubectl) -> None:
    result = kubectl("--as=nobody", "get", "pods", "-n", "default", check=False)
    assert result.returncode != 0
    assert 'User "nobody" cannot list resource "pods"' in result.stderr


def test_client_certificate_user(
    control_plane: ControlPlane, kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    alice = control_plane.kubectl(
        control_plane.write_user_kubeconfig(tmp_path / "alice", "alice", ["team-a"])
    )
    user = alice.json("auth", "whoami")["status"]["userInfo"]
    assert user["username"] == "alice"
    assert set(user["groups"]) == {"team-a", "system:authenticated"}
    assert "forbidden" in alice("get", "configmaps", "-n", namespace, check=False).stderr
    kubectl("create", "rolebinding", "team-a-view", "--clusterrole=view", "--group=team-a", "-n", namespace)
    wait_for(
        lambda: alice("get", "configmaps", "-n", namespace, check=False).returncode == 0,
        10,
        "access after the RoleBinding",
        interval=0.2,
    )


def test_service_account_token(
    control_plane: ControlPlane, kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    kubectl("create", "serviceaccount", "robot", "-n", namespace)
    token = kubectl("create", "token", "robot", "-n", namespace).stdout.strip()
    robot = control_plane.kubectl(control_plane.token_kubeconfig(tmp_path / "robot", token))
    user = robot.json("auth", "whoami")["status"]["userInfo"]
    assert user["username"] == f"system:serviceaccount:{namespace}:robot"


def test_namespace_deletion_completes(kubectl: Kubectl) -> None:
    name = f"doomed-{uuid.uuid4().hex[:10]}"
    kubectl("create", "namespace", name)
    kubectl("create", "configmap", "content", "-n", name, "--from-literal=k=v")
    kubectl("delete", "namespace", name, "--wait=false")
    wait_for(
        gone(kubectl, "namespace", name), CONTROLLER_TIMEOUT, f"removal of namespace {name}", interval=0.2
    )


def test_garbage_collection_of_orphans(kubectl: Kubectl, namespace: str) -> None:
    create(
        kubectl,
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner", "namespace": namespace}},
    )
    owner_uid = kubectl.json("get", "configmap", "owner", "-n", namespace)["metadata"]["uid"]
    owner_ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner_uid}
    create(
        kubectl,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "dependent", "namespace": namespace, "ownerReferences": [owner_ref]},
        },
    )
    kubectl("delete", "configmap", "owner", "-n", namespace)
    wait_for(
        gone(kubectl, "configmap", "dependent", "-n", namespace),
        CONTROLLER_TIMEOUT,
        "garbage collection of the dependent",
        interval=0.2,
    )


def _pod(
    name: str, namespace: str, container_security: dict[str, Any], pod_security: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "securityContext": pod_security or {},
            "containers": [{"name": "main", "image": "busybox", "securityContext": container_security}],
        },
    }


def test_pod_security_admission(kubectl: Kubectl, namespace: str) -> None:
    kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    rejection = create(kubectl, _pod("privileged", namespace, {"privileged": True}), check=False)
    assert 'violates PodSecurity "restricted:latest"' in rejection
    restricted = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    pod_security = {"runAsNonRoot": True, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}}
    create(kubectl, _pod("compliant", namespace, restricted, pod_security))


def test_validating_admission_policy(kubectl: Kubectl, namespace: str) -> None:
    served = json.loads(kubectl("get", "--raw", "/apis/admissionregistration.k8s.io/v1").stdout)
    assert {"validatingadmissionpolicies", "validatingadmissionpolicybindings"} <= {
        resource["name"] for resource in served["resources"]
    }
    policy = f"no-forbidden-{namespace}"

    def denied() -> bool:
        result = kubectl(
            "create", "configmap", "probe", "-n", namespace, "--from-literal=forbidden=1", check=False
        )
        if result.returncode == 0:  # the policy is not in effect yet
            kubectl("delete", "configmap", "probe", "-n", namespace)
            return False
        assert "forbidden key" in result.stderr, result.stderr
        return True

    try:
        create(
            kubectl,
            {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "ValidatingAdmissionPolicy",
                "metadata": {"name": policy},
                "spec": {
                    "matchConstraints": {
                        "resourceRules": [
                            {
                                "apiGroups": [""],
                                "apiVersions": ["v1"],
                                "operations": ["CREATE"],
                                "resources": ["configmaps"],
                            }
                        ]
                    },
                    "validations": [
                        {
                            "expression": "!has(object.data) || !('forbidden' in object.data)",
                            "message": "forbidden key",
                        }
                    ],
                },
            },
        )
        create(
            kubectl,
            {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "ValidatingAdmissionPolicyBinding",
                "metadata": {"name": policy},
                "spec": {
                    "policyName": policy,
                    "validationActions": ["Deny"],
                    "matchResources": {
                        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
                    },
                },
            },
        )
        wait_for(denied, 30, "denial by the ValidatingAdmissionPolicy", interval=0.2)
        kubectl("create", "configmap", "allowed", "-n", namespace, "--from-literal=fine=1")
    finally:
        kubectl(
            "delete",
            "validatingadmissionpolicybinding,validatingadmissionpolicy",
            policy,
            "--ignore-not-found",
        )


def test_stop_from_state_dir(tmp_path: Path, control_plane: ControlPlane) -> None:
    """A second, controller-manager-less plane beside the first; stopped via its pid files alone."""
    plane = ControlPlane(tmp_path, control_plane.bin_dir, with_controller_manager=False, die_with_parent=True)
    with plane:
        assert plane.server_url != control_plane.server_url
        # Without the serviceaccount controller, the ServiceAccount admission plugin is off.
        create(plane.kubectl(), _pod("no-service-account", "default", {}))
        pids = {name: recorded_pid(tmp_path, name) for name in COMPONENTS}
        assert pids["kube-controller-manager"] is None
        assert pids["etcd"] and pids["kube-apiserver"]
        stop_from_state_dir(tmp_path)
        assert all(recorded_pid(tmp_path, name) is None for name in COMPONENTS)
        assert not list((tmp_path / "pids").iterdir())
