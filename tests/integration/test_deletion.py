"""Deletion paths that do not go through a running operator's normal flow."""

from __future__ import annotations

import uuid

from sandbox_testbench.controlplane import Kubectl
from sandbox_testbench.hubsim import HubSimAdmin
from tests.support import wait_for
from tests.support.harness import OperatorProcess, get_session, session_manifest, spaces_of, wait_ready
from tests.support.kube import api_client


def test_session_deleted_while_the_operator_is_down_is_cleaned_up_when_it_starts(
    kubectl: Kubectl, hub_admin: HubSimAdmin, operator: OperatorProcess, namespace: str
) -> None:
    kubectl("apply", "-f", "-", stdin=session_manifest("offline", namespace))
    uid = wait_ready(kubectl, "offline", namespace)["metadata"]["uid"]
    operator.kill()
    kubectl("delete", "ags", "offline", "-n", namespace, "--wait=false")
    session = get_session(kubectl, "offline", namespace)
    assert session is not None and session["metadata"].get("deletionTimestamp"), (
        "the finalizer should hold it"
    )
    assert len(spaces_of(hub_admin, uid)) == 1
    operator.start()
    wait_for(lambda: get_session(kubectl, "offline", namespace) is None, 60, "the session to go")
    assert spaces_of(hub_admin, uid) == []


def test_deleting_a_namespace_deletes_the_spaces_of_its_sessions(
    kubectl: Kubectl, hub_admin: HubSimAdmin, operator: OperatorProcess
) -> None:
    namespace = f"test-doomed-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", namespace)
    uids = []
    for name in ("first", "second"):
        kubectl("apply", "-f", "-", stdin=session_manifest(name, namespace))
    for name in ("first", "second"):
        uids.append(wait_ready(kubectl, name, namespace)["metadata"]["uid"])
    kubectl("delete", "namespace", namespace, "--wait=false")
    wait_for(
        lambda: api_client(kubectl).get(f"/api/v1/namespaces/{namespace}") is None,
        120,
        f"namespace {namespace} to be gone",
        interval=0.5,
    )
    assert [spaces_of(hub_admin, uid) for uid in uids] == [[], []]
