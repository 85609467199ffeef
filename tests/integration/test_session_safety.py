"""The operator's promises under attack, against the real operator process: an orphaned Space on
free hardware, money rules in every stage, a delete racing a create, "not found" that is not gone,
a stuck session that backs off, failures that are conditions, a fresh Space not visible yet."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from sandbox_operator.core.model import MARKER_CLUSTER_ID, MARKER_SESSION_UID
from sandbox_testbench.controlplane import ControlPlane, Kubectl
from sandbox_testbench.controlplane.plane import ADMIN_USER
from sandbox_testbench.hubsim import HubSimAdmin, HubSimServer
from tests.support import wait_for
from tests.support.harness import (
    ADMIN_GROUP,
    POLL_INTERVAL,
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
from tests.support.kube import events_of, wait_for_events

# Over a minute in one worker: parallel runs start it first (tests/conftest.py).
pytestmark = pytest.mark.long

#: A Hub user of the emulator that is neither the owner nor in an org that owns the Spaces.
OUTSIDER_TOKEN = "hf_test_outsider"


def patch(kubectl: Kubectl, name: str, namespace: str, body: dict[str, Any]) -> None:
    kubectl("patch", "ags", name, "-n", namespace, "--type=merge", "-p", json.dumps(body))


def approved_on_t4(kubectl: Kubectl, hub_admin: HubSimAdmin, name: str, namespace: str) -> str:
    """A Ready session whose Space runs on approved t4-small; returns the Space id."""
    kubectl("apply", "-f", "-", stdin=session_manifest(name, namespace, hardware="t4-small"))
    space_id: str = wait_ready(kubectl, name, namespace)["status"]["spaceId"]
    approval = {"hardware": "t4-small", "approvedBy": ADMIN_USER, "approverGroups": [ADMIN_GROUP]}
    patch(kubectl, name, namespace, {"spec": {"approval": approval}})
    wait_for(
        lambda: hub_admin.space(space_id)["hardware"]["current"] == "t4-small", 60, "the t4-small upgrade"
    )
    wait_ready(kubectl, name, namespace)
    return space_id


def hardware_calls(hub_admin: HubSimAdmin, space_id: str) -> list[str | None]:
    return [c["flavor"] for c in hub_admin.calls() if c["route"] == "hardware" and space_id in c["path"]]


@pytest.mark.usefixtures("approval_policy")
def test_an_orphaned_space_is_kept_on_free_hardware_and_released(
    kubectl: Kubectl, hub_admin: HubSimAdmin, operator: OperatorProcess, namespace: str
) -> None:
    space_id = approved_on_t4(kubectl, hub_admin, "kept", namespace)
    uid = get_session(kubectl, "kept", namespace)["metadata"]["uid"]  # type: ignore[index]
    # What any session editor may do: keep the Space, then delete the session.
    patch(kubectl, "kept", namespace, {"spec": {"deletionPolicy": "Orphan"}})
    kubectl("delete", "ags", "kept", "-n", namespace, "--wait=false")
    wait_for(lambda: get_session(kubectl, "kept", namespace) is None, 60, "the session to go")

    space = hub_admin.space(space_id)
    assert space["variables"][MARKER_SESSION_UID] == uid and MARKER_CLUSTER_ID not in space["variables"]
    assert space["hardware"]["requested"] == "cpu-basic", space["hardware"]
    wait_for(
        lambda: hub_admin.space(space_id)["hardware"]["current"] == "cpu-basic", 30, "the move to cpu-basic"
    )
    wait_for_events(kubectl, "kept", namespace, "FreeingHardware")


@pytest.mark.usefixtures("approval_policy")
@pytest.mark.parametrize("stage", ["APP_STARTING", "RUNTIME_ERROR", "PAUSED"])
def test_a_removed_approval_downgrades_whatever_the_stage(
    kubectl: Kubectl, hub_admin: HubSimAdmin, operator: OperatorProcess, namespace: str, stage: str
) -> None:
    space_id = approved_on_t4(kubectl, hub_admin, "staged", namespace)
    # Down while both change, so its next pass sees the stage and the removed approval together: a
    # pass in between would see the stage alone and may rightly restart a PAUSED Space, still approved.
    operator.kill()
    hub_admin.set_stage(space_id, stage)
    hub_admin.clear_calls()
    kubectl(
        "patch",
        "ags",
        "staged",
        "-n",
        namespace,
        "--type=json",
        "-p",
        '[{"op":"remove","path":"/spec/approval"}]',
    )
    operator.start()
    wait_for(
        lambda: hub_admin.space(space_id)["hardware"]["requested"] == "cpu-basic",
        30,
        f"cpu-basic requested in {stage}",
    )
    assert hardware_calls(hub_admin, space_id)[:1] == ["cpu-basic"]
    # Nothing was restarted on paid hardware before the downgrade.
    first_hardware = next(i for i, c in enumerate(hub_admin.calls()) if c["route"] == "hardware")
    assert not any(c["route"] == "restart" for c in hub_admin.calls()[:first_hardware])
    assert "t4-small" not in hardware_calls(hub_admin, space_id)


def test_a_session_deleted_while_its_create_is_in_flight_leaves_no_space(
    kubectl: Kubectl, hub_admin: HubSimAdmin, operator: OperatorProcess, namespace: str
) -> None:
    # The Hub shows the duplicate (and its marker, what the finalizer reads first) only after a
    # while; the operator dies right after sending it, so no process memory can know that a create
    # is in flight: only the object can.
    with fresh_duplicates_hidden(hub_admin, 15.0):
        listings_failing(hub_admin, 15.0)
        hub_admin.clear_calls()
        kubectl("apply", "-f", "-", stdin=session_manifest("racy", namespace))
        wait_duplicate_sent(hub_admin)
        operator.kill()
        session = get_session(kubectl, "racy", namespace)
        assert session is not None
        uid = session["metadata"]["uid"]
        kubectl("delete", "ags", "racy", "-n", namespace, "--wait=false")
        operator.start()
        wait_for(lambda: get_session(kubectl, "racy", namespace) is None, 90, "the session to go")
    assert spaces_of(hub_admin, uid) == []
    # The fact that made the finalizer wait was on the object, recorded before the duplicate.
    assert session["status"].get("duplicateRequestedTime")
    waited = [e for e in events_of(kubectl, "racy", namespace) if e["reason"] == "WaitingForHub"]
    assert waited and "does not show it yet" in waited[0]["message"]


def test_not_found_without_access_to_the_owner_keeps_the_finalizer(
    kubectl: Kubectl,
    hub_admin: HubSimAdmin,
    operator: OperatorProcess,
    namespace: str,
    control_plane: ControlPlane,
    hub: HubSimServer,
    tmp_path: Path,
) -> None:
    kubectl("apply", "-f", "-", stdin=session_manifest("hidden", namespace))
    session = wait_ready(kubectl, "hidden", namespace)
    uid, space_id = session["metadata"]["uid"], session["status"]["spaceId"]
    # The operator's token loses access to the owner (here: a token of another user takes its place).
    operator.stop()
    outsider = OperatorProcess(control_plane.kubeconfig, hub.url, tmp_path, HF_TOKEN=OUTSIDER_TOKEN)
    outsider.identity = operator.identity  # the same deployment: it takes the Lease at once
    outsider.start()
    try:
        hub_admin.clear_calls()
        kubectl("delete", "ags", "hidden", "-n", namespace, "--wait=false")
        lost = wait_condition_reason(kubectl, "hidden", namespace, "Ready", "HubAccessLost")
        assert "outsider" in lost["message"] and "namespace agents" in lost["message"]
        assert "next try in" in lost["message"]
        session = get_session(kubectl, "hidden", namespace)
        assert session is not None and session["metadata"].get("deletionTimestamp")
        assert [s["id"] for s in spaces_of(hub_admin, uid)] == [space_id]
        wait_for_events(kubectl, "hidden", namespace, "HubAccessLost")
        # Nor was the "lost" Space created again under the outsider's token.
        assert not any(c["route"] == "duplicate" for c in hub_admin.calls())
    finally:
        outsider.stop()
    operator.start()
    wait_for(lambda: get_session(kubectl, "hidden", namespace) is None, 90, "the session to go")
    assert spaces_of(hub_admin, uid) == []


def test_a_session_whose_health_keeps_failing_polls_the_hub_less_and_less(
    kubectl: Kubectl, hub_admin: HubSimAdmin, operator: OperatorProcess, namespace: str
) -> None:
    hub_admin.add_fault("health", 503)
    hub_admin.clear_calls()
    kubectl("apply", "-f", "-", stdin=session_manifest("sick", namespace))
    failing = wait_condition_reason(kubectl, "sick", namespace, "Ready", "HealthCheckFailing")
    space_id = get_session(kubectl, "sick", namespace)["status"]["spaceId"]  # type: ignore[index]
    assert failing["status"] == "False"

    hub_admin.clear_calls()

    def after_listings() -> list[dict[str, Any]] | None:
        """The Hub's calls, once the operator has listed the owner's Spaces five times more."""
        calls = hub_admin.calls()
        return calls if sum(c["route"] == "list_spaces" for c in calls) >= 5 else None

    calls = wait_for(after_listings, 60, "five listings of the owner's Spaces", interval=0.5)
    polls = [c for c in calls if c["route"] == "space_info" and c["path"].endswith(space_id)]
    at_fixed_interval = (calls[-1]["monotonic"] - calls[0]["monotonic"]) / POLL_INTERVAL
    # At a fixed poll interval the session would ask for its Space all along; the backoff (and the
    # listing) make it less than half as often.
    assert len(polls) < at_fixed_interval / 2, (len(polls), at_fixed_interval)
    print(f"health backoff: {len(polls)} space_info polls, {at_fixed_interval:.0f} at a fixed interval")
    hub_admin.clear_faults()
    wait_ready(kubectl, "sick", namespace)


def test_a_secret_that_is_not_text_is_a_condition_not_a_crash_loop(
    kubectl: Kubectl, hub_admin: HubSimAdmin, operator: OperatorProcess, namespace: str
) -> None:
    binary = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "blob", "namespace": namespace},
        "data": {"key": base64.b64encode(b"\xff\xfe\x00binary").decode()},
    }
    kubectl("apply", "-f", "-", stdin=json.dumps(binary))
    secrets = [{"name": "EXTRA", "secretKeyRef": {"name": "blob", "key": "key"}}]
    kubectl("apply", "-f", "-", stdin=session_manifest("blobby", namespace, secrets=secrets))
    invalid = wait_condition_reason(kubectl, "blobby", namespace, "Ready", "SecretInvalid")
    assert f"Secret {namespace}/blob key 'key' is not UTF-8 text" in invalid["message"]
    assert "next try in" in invalid["message"]
    wait_for_events(kubectl, "blobby", namespace, "SecretInvalid")
    assert "Traceback" not in operator.current_log()
    text = {**binary, "data": {"key": base64.b64encode(b"text").decode()}}
    kubectl("apply", "-f", "-", stdin=json.dumps(text))
    session = wait_ready(kubectl, "blobby", namespace, timeout=90)
    assert hub_admin.space(session["status"]["spaceId"])["secrets"]["EXTRA"] == "text"


def test_a_token_the_sandbox_rejects_is_rotated_once_not_in_a_loop(
    kubectl: Kubectl, hub_admin: HubSimAdmin, operator: OperatorProcess, namespace: str
) -> None:
    hub_admin.clear_calls()
    hub_admin.add_fault("health", 401, seconds=6)
    kubectl("apply", "-f", "-", stdin=session_manifest("rejected", namespace))
    rotating = wait_for(
        # No status at all until the operator's first write: read it as empty, not as a KeyError.
        lambda: ((get_session(kubectl, "rejected", namespace) or {}).get("status") or {}).get(
            "tokenRotatedTime"
        ),
        30,
        "a token rotation",
    )
    assert rotating
    session = wait_ready(kubectl, "rejected", namespace, timeout=60)
    space_id = session["status"]["spaceId"]
    rotations = [
        c
        for c in hub_admin.calls()
        if c["route"] == "secrets" and c["method"] == "POST" and space_id in c["path"]
    ]
    assert len(rotations) == 1, rotations
    token = kubectl(
        "get", "secret", "rejected-sandbox", "-n", namespace, "-o", "jsonpath={.data.token}"
    ).stdout
    assert hub_admin.space(space_id)["secrets"]["SANDBOX_API_TOKEN"] == base64.b64decode(token).decode()
    wait_for_events(kubectl, "rejected", namespace, "RotatingToken")


# A fresh private Space is not visible at once -------------------------------------------------


def test_a_401_right_after_the_duplicate_is_waited_out_not_reported(
    kubectl: Kubectl, hub_admin: HubSimAdmin, operator: OperatorProcess, namespace: str
) -> None:
    hub_admin.clear_calls()
    # Long enough to cover the first reads after the duplicate, which comes only once kopf's finalizer
    # is on the session (its round trip, a few seconds on a loaded CI machine): with 3 s, a run whose
    # create waited that long read its Space after the faults had ended.
    hub_admin.add_fault("space_info", 401, seconds=8)
    # A fresh duplicate is confirmed by the next listing; when that fails, the session reads its Space.
    hub_admin.add_fault("list_spaces", 401, seconds=8)
    kubectl("apply", "-f", "-", stdin=session_manifest("unseen", namespace))
    session = wait_ready(kubectl, "unseen", namespace, timeout=30)
    space_path = f"/api/spaces/{session['status']['spaceId']}"
    calls = hub_admin.calls()
    assert [c["status"] for c in calls if c["route"] == "duplicate"] == [200]
    assert any(c["path"] == space_path and c["status"] == 401 for c in calls), "no 401 answered"
    reasons = {e["reason"] for e in events_of(kubectl, "unseen", namespace)}
    assert "HubUnauthorized" not in reasons, reasons
    assert condition(session, "Ready")["reason"] == "SandboxReady"  # type: ignore[index]
