"""AgentSession lifecycle on the real control plane and the Hub emulator: create -> Ready -> delete."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime

import pytest

from sandbox_operator.core.conditions import rfc3339
from sandbox_testbench.controlplane import Kubectl
from sandbox_testbench.hubsim import HubSimAdmin
from tests.support import wait_for
from tests.support.harness import (
    OWNER,
    OperatorProcess,
    condition,
    fresh_duplicates_hidden,
    get_session,
    listings_failing,
    session_manifest,
    spaces_of,
    wait_condition_reason,
    wait_duplicate_sent,
    wait_ready,
)
from tests.support.kube import api_client, namespaced_path

# Over a minute in one worker: parallel runs start it first (tests/conftest.py).
pytestmark = pytest.mark.long


def secret_data(kubectl: Kubectl, name: str, namespace: str) -> dict[str, str]:
    secret = api_client(kubectl).get(namespaced_path("v1", "secrets", namespace, name))
    return {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}


def test_session_becomes_ready_on_a_private_cpu_basic_space(
    kubectl: Kubectl, hub_admin: HubSimAdmin, operator: OperatorProcess, namespace: str
) -> None:
    kubectl("apply", "-f", "-", stdin=session_manifest("alpha", namespace))
    session = wait_ready(kubectl, "alpha", namespace)
    status = session["status"]
    uid = session["metadata"]["uid"]

    assert status["spaceId"] == f"{OWNER}/ags-{uid}"
    assert status["phase"] == "Ready"
    assert status["hardware"] == {"current": "cpu-basic", "requested": "cpu-basic"}
    assert status["stage"] == "RUNNING"
    assert status["observedGeneration"] == session["metadata"]["generation"]
    ready = condition(session, "Ready")
    assert ready is not None and ready["reason"] == "SandboxReady" and ready["observedGeneration"] == 1

    space = hub_admin.space(status["spaceId"])
    assert space["private"] is True
    assert space["hardware"]["current"] == "cpu-basic"
    assert space["variables"]["SANDBOX_OPERATOR_SESSION_UID"] == uid

    connection = secret_data(kubectl, status["connectionSecret"], namespace)
    assert connection["spaceId"] == status["spaceId"]
    assert connection["sandboxUrl"] == status["sandboxUrl"]
    assert connection["token"] == space["secrets"]["SANDBOX_API_TOKEN"]

    secret = kubectl.json("get", "secret", status["connectionSecret"], "-n", namespace)
    owner = secret["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"]) == ("AgentSession", uid)

    events = kubectl.json("get", "events", "-n", namespace, "--field-selector", "involvedObject.name=alpha")
    reasons = {event["reason"] for event in events["items"]}
    # Events only for what a user acts on: progress (Provisioning, Creating) is in the conditions.
    assert "SandboxReady" in reasons and not {"Provisioning", "Creating", "FreeHardware"} & reasons, reasons

    printed = kubectl("get", "ags", "alpha", "-n", namespace).stdout
    assert printed.split()[:6] == ["NAME", "READY", "PHASE", "REASON", "HARDWARE", "SPACE"]
    assert "True" in printed and "SandboxReady" in printed and "cpu-basic" in printed


def test_delete_removes_the_space_then_the_session(
    kubectl: Kubectl, hub_admin: HubSimAdmin, operator: OperatorProcess, namespace: str
) -> None:
    kubectl("apply", "-f", "-", stdin=session_manifest("beta", namespace))
    session = wait_ready(kubectl, "beta", namespace)
    uid = session["metadata"]["uid"]
    assert len(spaces_of(hub_admin, uid)) == 1

    kubectl("delete", "ags", "beta", "-n", namespace, "--timeout=60s")
    assert get_session(kubectl, "beta", namespace) is None
    assert spaces_of(hub_admin, uid) == []


def test_orphan_policy_keeps_the_space(
    kubectl: Kubectl, hub_admin: HubSimAdmin, operator: OperatorProcess, namespace: str
) -> None:
    kubectl("apply", "-f", "-", stdin=session_manifest("gamma", namespace, deletionPolicy="Orphan"))
    session = wait_ready(kubectl, "gamma", namespace)
    uid = session["metadata"]["uid"]

    kubectl("delete", "ags", "gamma", "-n", namespace, "--timeout=60s")
    assert get_session(kubectl, "gamma", namespace) is None
    assert len(spaces_of(hub_admin, uid)) == 1


def test_build_error_is_reported_and_retried(
    kubectl: Kubectl, hub_admin: HubSimAdmin, operator: OperatorProcess, namespace: str
) -> None:
    hub_admin.set_build_failures(1_000)
    try:
        kubectl("apply", "-f", "-", stdin=session_manifest("delta", namespace))
        ready = wait_condition_reason(kubectl, "delta", namespace, "Ready", "BuildError")
        assert ready["status"] == "False"
        assert "BUILD_ERROR" in ready["message"] and "next try" in ready["message"]
        session = get_session(kubectl, "delta", namespace)
        assert session is not None and session["status"]["phase"] == "Failed"
    finally:
        hub_admin.set_build_failures(0)
    # Once builds succeed again, the backoff restart brings the session to Ready.
    wait_ready(kubectl, "delta", namespace, timeout=90)


def test_operator_killed_mid_create_leaves_exactly_one_space(
    kubectl: Kubectl, hub_admin: HubSimAdmin, operator: OperatorProcess, namespace: str
) -> None:
    uids = []
    for attempt, delay in enumerate([0.0, 0.05, 0.15, 0.3, 0.6]):
        name = f"crash-{attempt}"
        kubectl("apply", "-f", "-", stdin=session_manifest(name, namespace))
        time.sleep(delay)
        operator.kill()
        operator.start()
        session = wait_ready(kubectl, name, namespace)
        uids.append(session["metadata"]["uid"])
    for uid in uids:
        assert len(spaces_of(hub_admin, uid)) == 1, f"session {uid} has a duplicate or no Space"


def test_a_create_recorded_by_a_killed_operator_that_never_left_is_sent_again(
    kubectl: Kubectl, hub_admin: HubSimAdmin, operator: OperatorProcess, namespace: str
) -> None:
    """What the test above hits now and then, every time: the operator recorded its duplicate and was
    killed before sending it. Its successor sends it again at once instead of waiting out the 80 s
    a request of its own could take to show (duplicate_window_end)."""
    operator.stop()
    kubectl("apply", "-f", "-", stdin=session_manifest("unsent", namespace))
    session = get_session(kubectl, "unsent", namespace)
    assert session is not None
    uid = session["metadata"]["uid"]
    recorded = rfc3339(datetime.now(UTC), precise=True)  # as the killed operator left it
    left = {"spaceId": f"{OWNER}/ags-{uid}", "duplicateRequestedTime": recorded}
    kubectl("patch", "ags", "unsent", "-n", namespace, "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": left}))  # fmt: skip
    hub_admin.clear_calls()
    operator.start()
    wait_ready(kubectl, "unsent", namespace, timeout=40)
    assert len(spaces_of(hub_admin, uid)) == 1
    duplicates = [c for c in hub_admin.calls() if c["route"] == "duplicate"]  # this test's only create
    assert [c["status"] for c in duplicates] == [200]


def test_a_create_that_left_before_the_kill_is_adopted_not_doubled(
    kubectl: Kubectl, hub_admin: HubSimAdmin, operator: OperatorProcess, namespace: str
) -> None:
    """The other side of the test above: the duplicate did leave, and the Hub does not show the fresh
    private Space yet (F32), so the successor sends it again: the 409 adopts the one Space."""
    # Longer than a restart takes, so the successor finds the Space hidden and sends the duplicate again.
    with fresh_duplicates_hidden(hub_admin, 10.0):
        listings_failing(hub_admin, 10.0)
        hub_admin.clear_calls()
        kubectl("apply", "-f", "-", stdin=session_manifest("landed", namespace))
        wait_duplicate_sent(hub_admin)
        operator.kill()
        operator.start()
        session = wait_ready(kubectl, "landed", namespace)
    assert len(spaces_of(hub_admin, session["metadata"]["uid"])) == 1
    assert [c["status"] for c in hub_admin.calls() if c["route"] == "duplicate"] == [200, 409]


def test_missing_secret_reference_creates_nothing(
    kubectl: Kubectl, hub_admin: HubSimAdmin, operator: OperatorProcess, namespace: str, approval_policy: None
) -> None:
    secrets = [{"name": "API_KEY", "secretKeyRef": {"name": "not-there", "key": "k"}}]
    kubectl("apply", "-f", "-", stdin=session_manifest("epsilon", namespace, secrets=secrets))
    ready = wait_condition_reason(kubectl, "epsilon", namespace, "Ready", "SecretNotFound")
    assert "not-there" in ready["message"]
    session = get_session(kubectl, "epsilon", namespace)
    assert session is not None
    assert spaces_of(hub_admin, session["metadata"]["uid"]) == []

    kubectl("create", "secret", "generic", "not-there", "--from-literal=k=v", "-n", namespace)
    session = wait_ready(kubectl, "epsilon", namespace, timeout=90)
    space = hub_admin.space(session["status"]["spaceId"])
    assert space["secrets"]["API_KEY"] == "v"


def test_invalid_manifests_are_rejected_naming_the_field(kubectl: Kubectl, crd: None, namespace: str) -> None:
    cases = {
        "spec.hardware": {"hardware": "gpu-huge"},
        "spec.template": {"template": "no--good/x"},
        "spec.deletionPolicy": {"deletionPolicy": "Keep"},
        "spec.secrets[0].name": {
            "secrets": [{"name": "SANDBOX_API_TOKEN", "secretKeyRef": {"name": "a", "key": "b"}}]
        },
    }
    for field, spec in cases.items():
        result = kubectl("apply", "-f", "-", stdin=session_manifest("bad", namespace, **spec), check=False)
        assert result.returncode != 0, f"{spec} was accepted"
        assert field in result.stderr, f"{field} not named in: {result.stderr}"
    assert get_session(kubectl, "bad", namespace) is None


def test_kubectl_explain_describes_the_spec(kubectl: Kubectl, crd: None) -> None:
    text = kubectl("explain", "agentsession.spec").stdout
    for field in ("owner", "template", "hardware", "private", "secrets", "deletionPolicy", "approval"):
        assert field in text
    assert "cpu-basic" in kubectl("explain", "agentsession.spec.hardware").stdout
    secrets = " ".join(kubectl("explain", "agentsession.spec.secrets").stdout.split())
    assert "Extra Space secrets, one per name" in secrets and "secretKeyRef <Object> -required-" in secrets


def test_session_recreated_with_the_same_name_gets_a_new_space(
    kubectl: Kubectl, hub_admin: HubSimAdmin, operator: OperatorProcess, namespace: str
) -> None:
    kubectl("apply", "-f", "-", stdin=session_manifest("zeta", namespace, deletionPolicy="Orphan"))
    first = wait_ready(kubectl, "zeta", namespace)
    kubectl("delete", "ags", "zeta", "-n", namespace, "--timeout=60s")
    kubectl("apply", "-f", "-", stdin=session_manifest("zeta", namespace))
    second = wait_ready(kubectl, "zeta", namespace)
    assert first["status"]["spaceId"] != second["status"]["spaceId"]
    wait_for(
        lambda: secret_data(kubectl, "zeta-sandbox", namespace)["spaceId"] == second["status"]["spaceId"],
        30,
        "the connection Secret to name the new Space",
    )
