"""Two operators started by mistake: only the Lease holder acts; a holder that loses it stops."""

from __future__ import annotations

import json
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from sandbox_operator.controlplane import ControlPlane, Kubectl
from sandbox_operator.hubsim import HubSimAdmin, HubSimServer

from harness import (
    SECOND_OPERATOR,
    SECOND_OPERATOR_TOKEN,
    OperatorProcess,
    session_manifest,
    wait_for,
    wait_ready,
)

LEASE = ("lease", "sandbox-operator", "-n", "default")


def calls_by(admin: HubSimAdmin, user: str) -> list[dict[str, object]]:
    return [call for call in admin.calls() if call["user"] == user]


def test_a_second_operator_waits_for_the_lease_and_sends_no_hub_call(
    kubectl: Kubectl,
    hub_admin: HubSimAdmin,
    operator: OperatorProcess,
    namespace: str,
    control_plane: ControlPlane,
    hub: HubSimServer,
    tmp_path: Path,
) -> None:
    # The same deployment twice, but with a token of its own, so the emulator tells their calls apart.
    second = OperatorProcess(control_plane.kubeconfig, hub.url, tmp_path, HF_TOKEN=SECOND_OPERATOR_TOKEN)
    second.start()
    try:
        wait_for(
            lambda: "waiting for the leader Lease" in second.current_log(), 30, "the second operator to wait"
        )
        kubectl("apply", "-f", "-", stdin=session_manifest("only-one", namespace))
        wait_ready(kubectl, "only-one", namespace)
        assert second.proc is not None and second.proc.poll() is None
        assert calls_by(hub_admin, SECOND_OPERATOR) == []
        # A standby is alive, not broken: its liveness endpoint answers (a rolling update needs that).
        with urllib.request.urlopen(second.started_env["SANDBOX_OPERATOR_LIVENESS"], timeout=5) as response:
            assert response.status == 200 and b"standby" in response.read()

        # The holder dies without a word: the second takes over once the Lease expires.
        operator.kill()
        kubectl("apply", "-f", "-", stdin=session_manifest("after-takeover", namespace))
        wait_ready(kubectl, "after-takeover", namespace, timeout=90)
        assert "acquired the leader Lease" in second.current_log()
        assert calls_by(hub_admin, SECOND_OPERATOR) != []
    finally:
        second.stop()  # a clean stop hands the Lease back, so the fixture's restart need not wait


def test_an_operator_that_loses_the_lease_exits_non_zero(kubectl: Kubectl, operator: OperatorProcess) -> None:
    wait_for(
        lambda: "acquired the leader Lease" in operator.current_log(), 30, "the operator to hold the Lease"
    )
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    kubectl(
        "patch",
        *LEASE,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"holderIdentity": "intruder", "renewTime": now}}),
    )
    try:
        assert operator.proc is not None
        assert operator.proc.wait(timeout=30) == 1
        assert "now held by intruder" in operator.current_log()
    finally:
        kubectl("delete", *LEASE)  # so the restarted operator need not wait for the intruder's Lease
