"""One namespace's burst does not hold back another namespace's session (fairness.py), on the real
control plane and the Hub emulator. No timing is asserted: the evidence is the order in which the
Hub saw the Spaces created."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from sandbox_operator import api
from sandbox_operator.core.model import MARKER_SESSION_UID
from sandbox_testbench.controlplane import Kubectl
from sandbox_testbench.hubsim import HubSimAdmin
from tests.support import wait_for
from tests.support.harness import OperatorProcess, condition, readiness

#: Sessions one namespace has waiting, besides the other namespace's one session.
BURST = 40
#: Few enough Kubernetes connections that the burst's calls queue for them, where the order is the
#: operator's (the default, 64, serves a burst this small at once, in the API server's order).
QUEUED = {"SANDBOX_OPERATOR_KUBE_CONNECTIONS": "4"}


def _session(name: str, namespace: str) -> dict[str, object]:
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {"name": name, "namespace": namespace},
    }


def _ready_uids(kubectl: Kubectl, namespace: str) -> dict[str, str]:
    """Name -> UID of the namespace's sessions that are Ready."""
    items = kubectl.json("get", "ags", "-n", namespace)["items"]
    return {
        item["metadata"]["name"]: item["metadata"]["uid"]
        for item in items
        if (condition(item, "Ready") or {}).get("status") == "True"
    }


def test_a_burst_in_one_namespace_does_not_hold_back_another_namespaces_session(
    kubectl: Kubectl, hub_admin: HubSimAdmin, operator: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    # Listed after the burst's namespace (the API server lists by namespace, then name): in arrival
    # order the victim comes last.
    quiet = f"zz-quiet-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", quiet)
    operator.stop()  # all of them wait when it starts: the order is the operator's, not the arrival's
    paced = OperatorProcess(operator.kubeconfig, operator.hub_url, tmp_path, **QUEUED)
    try:
        burst = [_session(f"s-{i:03d}", namespace) for i in range(BURST)]
        listed = {"apiVersion": "v1", "kind": "List", "items": [*burst, _session("victim", quiet)]}
        kubectl("create", "-f", "-", stdin=json.dumps(listed))
        paced.start()
        wait_for(lambda: readiness(paced)[0] == 200, 60, "the operator's watches to be up", interval=0.2)

        def all_ready() -> tuple[dict[str, str], dict[str, str]] | None:
            noisy, alone = _ready_uids(kubectl, namespace), _ready_uids(kubectl, quiet)
            return (noisy, alone) if len(noisy) == BURST and alone else None

        noisy, alone = wait_for(all_ready, 180, f"{BURST} + 1 sessions Ready", interval=0.5)
        created = {
            space["variables"].get(MARKER_SESSION_UID): space["timeline"][0]["monotonic"]
            for space in hub_admin.spaces()
        }
        victim = created[alone["victim"]]
        before = sorted(name for name, uid in noisy.items() if created[uid] < victim)
        # In arrival order (FIFO) the victim's Space would come after nearly every one of the burst's;
        # with namespaces taking turns it comes after at most the few the burst had under way.
        assert len(before) < BURST // 2, before
    finally:
        paced.stop()
        operator.start()
        kubectl("delete", "ags", "--all", "-n", quiet, "--wait=false")
        kubectl("delete", "namespace", quiet, "--wait=false")
