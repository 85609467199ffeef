"""A live session as the real API server serves it, read by the real kstatus, Flux's CEL health checks
and Argo CD's health.lua: just created (the CRD's status default), Ready, and being deleted; and the
documented install of the Argo CD script."""

from __future__ import annotations

import json

from sandbox_operator import api
from sandbox_operator.api.crd import UNOBSERVED_STATUS
from sandbox_testbench.controlplane import ControlPlane, Kubectl
from tests.support import wait_for
from tests.support.docs import fenced
from tests.support.gitops import ARGOCD_HEALTH, REPO, Reading, read
from tests.support.harness import OperatorProcess, get_session, run_shell, wait_ready

#: Keeps the deleted session readable after the operator's finalizer is done.
HOLD = f"test.{api.GROUP}/hold"


def test_a_live_session_reads_in_progress_then_current_then_terminating(
    kubectl: Kubectl, operator: OperatorProcess, namespace: str
) -> None:
    manifest = {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {"name": "watched", "namespace": namespace, "finalizers": [HOLD]},
        "spec": {},
    }
    created = json.loads(kubectl("create", "-o", "json", "-f", "-", stdin=json.dumps(manifest)).stdout)
    # The API server defaults status on read, with the status subresource: no write of the operator's yet.
    assert created["status"] == UNOBSERVED_STATUS
    ready = wait_ready(kubectl, "watched", namespace)
    assert ready["status"]["observedGeneration"] == ready["metadata"]["generation"]
    for settled in ("Stalled=false", "Reconciling=false"):  # always present, so `kubectl wait` works
        kubectl("wait", "ags/watched", "-n", namespace, f"--for=condition={settled}", "--timeout=30s")
    assert [told.reading for told in read([created, ready])] == [
        Reading("InProgress", "Progressing", "InProgress"),
        Reading("Current", "Healthy", "Current"),
    ]

    kubectl("delete", "ags", "watched", "-n", namespace, "--wait=false")

    def finalized() -> dict[str, object] | None:
        session = get_session(kubectl, "watched", namespace)
        return session if session is not None and session["metadata"]["finalizers"] == [HOLD] else None

    deleting = wait_for(finalized, 60, "the operator's finalizer to finish")
    try:
        (told,) = read([deleting])
        assert told.reading == Reading("Terminating", "Progressing", "InProgress")
    finally:
        kubectl(
            "patch",
            "ags",
            "watched",
            "-n",
            namespace,
            "--type=merge",
            "-p",
            '{"metadata":{"finalizers":null}}',
        )


def test_the_documented_command_installs_the_argo_cd_script_for_both_kinds_and_keeps_the_rest(
    control_plane: ControlPlane, kubectl: Kubectl
) -> None:
    kubectl("create", "namespace", "argocd")
    try:
        kubectl(
            "create", "configmap", "argocd-cm", "-n", "argocd", "--from-literal=url=https://argocd.example"
        )
        run_shell(control_plane, fenced(REPO / "docs" / "status.md", "sh", "argocd-cm"))
        data = kubectl.json("get", "configmap", "argocd-cm", "-n", "argocd")["data"]
        script = ARGOCD_HEALTH.read_text()
        assert data == {
            "url": "https://argocd.example",
            **{
                f"resource.customizations.health.{api.GROUP}_{kind}": script
                for kind in (api.KIND, api.POOL_KIND)
            },
        }
    finally:
        kubectl("delete", "namespace", "argocd", "--wait=false")
