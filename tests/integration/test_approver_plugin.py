"""The approver's day, end to end: real API server, RBAC and admission policy, the Hub
emulator, the operator as a process, and the kubectl plugin run by kubectl itself as `--as` users
bound to the shipped roles."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from sandbox_testbench.controlplane import ControlPlane, Kubectl
from sandbox_testbench.hubsim import HubSimAdmin
from tests.support import wait_for
from tests.support.harness import (
    REPO,
    OperatorProcess,
    get_session,
    replacing,
    session_manifest,
    wait_condition_reason,
    wait_ready,
)
from tests.support.kube import events_of

# Over a minute in one worker: parallel runs start it first (tests/conftest.py).
pytestmark = pytest.mark.long

#: Seconds before an approval's expiry at which the test operator announces it.
NOTICE = 15
#: How long the approval that expires lasts: past the notice, and short, since the test waits it out.
EXPIRES_IN = "45s"


@pytest.fixture
def day_operator(operator_process: OperatorProcess, tmp_path: Path) -> Iterator[OperatorProcess]:
    """The operator announcing expiries NOTICE seconds ahead, in place of the shared one."""
    settings = {
        "SANDBOX_OPERATOR_APPROVAL_EXPIRY_NOTICE": str(NOTICE),
        "SANDBOX_OPERATOR_SPEND_INTERVAL": "5",
    }
    with replacing(operator_process, tmp_path, **settings) as own:
        yield own


@pytest.fixture
def team(kubectl: Kubectl, namespace: str, approval_policy: None) -> Iterator[str]:
    """bob and mallory edit sessions here; alice approves every flavor everywhere (shipped roles)."""
    for user in ("bob", "mallory"):
        kubectl("create", "rolebinding", f"{user}-edits", "--clusterrole=sandbox-operator-session-editor",
                f"--user={user}", "-n", namespace)  # fmt: skip
    binding = f"day-alice-approves-{namespace}"
    kubectl(
        "create", "clusterrolebinding", binding, "--clusterrole=sandbox-operator-approver", "--user=alice"
    )
    yield namespace
    kubectl("delete", "clusterrolebinding", binding)


def sandbox(control_plane: ControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    """`kubectl sandbox ...`: kubectl finds the plugin (kubectl-sandbox, installed with the package) on
    PATH; the admin's kubeconfig, so identity comes from `--as`."""
    path = f"{control_plane.bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}"
    env = {**os.environ, "KUBECONFIG": str(control_plane.kubeconfig), "PATH": path}
    return subprocess.run(
        ["kubectl", "sandbox", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def events(kubectl: Kubectl, name: str, namespace: str, reason: str) -> list[dict[str, Any]]:
    return [e for e in events_of(kubectl, name, namespace) if e["reason"] == reason]


def moment(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def on(hub_admin: HubSimAdmin, space_id: str, flavor: str) -> bool:
    return bool(hub_admin.space(space_id)["hardware"]["current"] == flavor)


def test_the_approvers_day(
    control_plane: ControlPlane,
    kubectl: Kubectl,
    hub_admin: HubSimAdmin,
    day_operator: OperatorProcess,
    team: str,
) -> None:
    kubectl("apply", "-f", "-", "--as=bob", stdin=session_manifest("day", team))
    space_id = wait_ready(kubectl, "day", team)["status"]["spaceId"]

    # bob asks for a GPU with one plain patch, naming himself; he cannot name someone else.
    ask = ["patch", "ags", "day", "-n", team, "--type=merge", "--as=bob", "-p"]
    spoofed = kubectl(*ask, '{"spec":{"hardware":"a10g-small","requestedBy":"alice"}}', check=False)
    assert spoofed.returncode != 0 and 'spec.requestedBy must be your own username "bob"' in spoofed.stderr
    kubectl(*ask, '{"spec":{"hardware":"a10g-small","requestedBy":"bob"}}')

    # alice sees what waits, with its price and who asked.
    prices = {"a10g-small": "1.00", "t4-small": "0.40"}

    def listed(flavor: str) -> str | None:
        result = sandbox(control_plane, "approvals", "-A", "--as", "alice")
        assert result.returncode == 0, result.stderr
        row = [team, "day", flavor, prices[flavor], "bob"]
        return result.stdout if any(line.split()[:5] == row for line in result.stdout.splitlines()) else None

    wait_for(lambda: listed("a10g-small"), 30, "alice to see day waiting for a10g-small")
    as_json = json.loads(
        sandbox(control_plane, "approvals", "-n", team, "-o", "json", "--as", "alice").stdout
    )
    (item,) = as_json["items"]
    assert item["status"]["pendingApproval"]["requestedBy"] == "bob"
    assert events(kubectl, "day", team, "ApprovalRequested")

    # mallory may edit sessions but not approve: the API server refuses her denial, and bob's own.
    refused = sandbox(control_plane, "deny", "day", "-n", team, "--reason", "mine", "--as", "mallory")
    assert refused.returncode == 1
    assert refused.stderr.startswith("Error from server (Forbidden)"), refused.stderr
    assert 'user "mallory" may not deny hardware a10g-small' in refused.stderr
    forged = {"denial": {"hardware": "a10g-small", "deniedBy": "alice", "reason": "x"}}
    spoof = kubectl(*ask, json.dumps({"spec": forged}), check=False)
    assert spoof.returncode != 0 and 'spec.denial.deniedBy must be your own username "bob"' in spoof.stderr

    # alice denies with a reason: the session says so, stays on cpu-basic and stops asking.
    denied = sandbox(
        control_plane, "deny", "day", "-n", team, "--reason", "use a t4 for evals", "--as", "alice"
    )
    assert denied.returncode == 0, denied.stderr
    assert "denied a10g-small" in denied.stdout and "as alice" in denied.stdout
    refusal = wait_condition_reason(kubectl, "day", team, "HardwareApproved", "Denied")
    assert refusal["status"] == "False"
    assert "alice" in refusal["message"] and "use a t4 for evals" in refusal["message"]
    session = wait_ready(kubectl, "day", team)
    assert session["status"]["hardware"]["current"] == "cpu-basic" and on(hub_admin, space_id, "cpu-basic")
    assert "pendingApproval" not in session["status"]
    nothing = sandbox(control_plane, "approvals", "-n", team, "--as", "alice")
    assert nothing.returncode == 0 and "No sessions wait" in nothing.stderr

    # A new request for another flavor waits again.
    kubectl(*ask, '{"spec":{"hardware":"t4-small","requestedBy":"bob"}}')
    wait_for(lambda: listed("t4-small"), 30, "day to wait again, for t4-small")

    # A short approval: the GPU, a notice NOTICE seconds ahead, then cpu-basic on time.
    approved = sandbox(
        control_plane,
        "approve",
        "day",
        "-n",
        team,
        "--hardware",
        "t4-small",
        "--expires-in",
        EXPIRES_IN,
        "--as",
        "alice",
    )
    assert approved.returncode == 0, approved.stderr
    wait_for(lambda: on(hub_admin, space_id, "t4-small"), 60, "the approved t4-small")
    expires = moment(get_session(kubectl, "day", team)["spec"]["approval"]["expiresAt"])  # type: ignore[index]
    wait_for(
        lambda: on(hub_admin, space_id, "cpu-basic"), 180, "the return to cpu-basic at expiry", interval=0.5
    )
    back_at = time.time()
    assert expires <= back_at <= expires + 15, (expires, back_at)
    (notice,) = events(kubectl, "day", team, "ApprovalExpiring")
    assert expires - NOTICE - 5 <= moment(notice["eventTime"]) < expires
    expired = wait_condition_reason(kubectl, "day", team, "HardwareApproved", "ApprovalExpired")
    assert expired["status"] == "False"
    wait_for(lambda: listed("t4-small"), 30, "day to wait again after the expiry")
    # The receipt is written once the operator sees the Space off the GPU (its next observation).
    receipts = wait_for(
        lambda: ((get_session(kubectl, "day", team) or {}).get("status") or {}).get("receipts"),
        30,
        "the receipt of the expired approval",
    )
    assert [(r["hardware"], r["approvedBy"], r["endedBy"]) for r in receipts] == [
        ("t4-small", "alice", "ApprovalExpired")
    ]
    assert receipts[0]["estimatedUsd"] > 0 and receipts[0]["hours"] > 0

    # Approved again, then the session is deleted: the receipt is in status before the Space goes
    # (the Hub refuses the delete for now) and in the Event stream.
    again = sandbox(control_plane, "approve", "day", "-n", team, "--hardware", "t4-small", "--as", "alice")
    assert again.returncode == 0, again.stderr
    wait_for(lambda: on(hub_admin, space_id, "t4-small"), 60, "the approved t4-small again")

    def paid_stretch() -> dict[str, Any] | None:  # the operator has seen the GPU run and says so
        period = ((get_session(kubectl, "day", team) or {}).get("status") or {}).get("paidPeriod")
        return period if period and period["hardware"] == "t4-small" else None

    wait_for(paid_stretch, 30, "the paid stretch on t4-small in status")
    hub_admin.add_fault("delete", 503)
    kubectl("delete", "ags", "day", "-n", team, "--wait=false")

    def deletion_receipt() -> dict[str, Any] | None:
        found = (get_session(kubectl, "day", team) or {}).get("status", {}).get("receipts", [])
        return next((r for r in found if r["endedBy"] == "SessionDeleted"), None)

    receipt = wait_for(deletion_receipt, 30, "the receipt of the deleted session in status")
    assert (receipt["hardware"], receipt["approvedBy"]) == ("t4-small", "alice")
    hub_admin.clear_faults()
    wait_for(lambda: get_session(kubectl, "day", team) is None, 60, "the session to go")
    notes = [e["message"] for e in events(kubectl, "day", team, "HardwareReceipt")]
    assert any("SessionDeleted" in note and "alice" in note for note in notes), notes
    assert any("ApprovalExpired" in note for note in notes), notes
