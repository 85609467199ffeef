"""Two operators started by mistake: only the Lease holder acts; a holder that loses it stops."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sandbox_operator.config.settings import DEFAULT_LEASE_NAME, DEFAULT_OPERATOR_NAMESPACE
from sandbox_testbench.controlplane import ControlPlane, Kubectl
from sandbox_testbench.hubsim import HubSimAdmin, HubSimServer
from tests.support import wait_for
from tests.support.harness import (
    SECOND_OPERATOR,
    SECOND_OPERATOR_TOKEN,
    OperatorProcess,
    install_read_token,
    readiness,
    session_manifest,
    wait_ready,
)
from tests.support.helm_chart import REQUIRED_VALUES, Helm, container_env, one

# Over a minute in one worker: parallel runs start it first (tests/conftest.py).
pytestmark = pytest.mark.long

LEASE = ("lease", DEFAULT_LEASE_NAME, "-n", "default")
#: How long the suite's operator may take to hold the Lease: a holder a test before left without
#: handing it back (killed, or stopped too slowly on a busy machine) keeps it for its 30 s duration.
HOLD_TIMEOUT = 90


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
    # The suite's operator holds the Lease first (a test before may have just restarted it), and
    # calls made with the second token before this test (test_sharding's shard b) do not count.
    wait_for(
        lambda: "acquired the leader Lease" in operator.current_log(),
        HOLD_TIMEOUT,
        "the operator to hold the Lease",
    )
    hub_admin.clear_calls()
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
        # Both are ready: the leader with its watches synced, the standby for waiting as it should.
        assert readiness(operator) == (200, {"role": "leader"})
        status, body = readiness(second)
        assert (status, body["role"]) == (200, "standby") and "held by" in body["reason"]

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
        lambda: "acquired the leader Lease" in operator.current_log(),
        HOLD_TIMEOUT,
        "the operator to hold the Lease",
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


def chart_lease_env(control_plane: ControlPlane, tmp_path: Path) -> dict[str, str]:
    """The Lease settings of the chart's Deployment as docs/operations.md's `helm install sandbox-operator ...
    -n sandbox-operator` renders them."""
    helm = Helm(control_plane.bin_dir / "helm", tmp_path / "helm")
    rendered = helm.render(REQUIRED_VALUES, release="sandbox-operator", namespace=DEFAULT_OPERATOR_NAMESPACE)
    env = container_env(one(rendered, "Deployment"))
    keys = (
        "SANDBOX_OPERATOR_LEASE_NAME",
        "SANDBOX_OPERATOR_LEASE_NAMESPACE",
        "SANDBOX_OPERATOR_OPERATOR_NAMESPACE",
    )
    return {key: env[key]["value"] for key in keys}


def test_a_hand_run_operator_and_the_charts_find_the_same_lease(
    kubectl: Kubectl,
    hub_admin: HubSimAdmin,
    without_shared_operator: None,
    namespace: str,
    control_plane: ControlPlane,
    hub: HubSimServer,
    tmp_path: Path,
) -> None:
    if kubectl("get", "namespace", DEFAULT_OPERATOR_NAMESPACE, check=False).returncode != 0:
        kubectl("create", "namespace", DEFAULT_OPERATOR_NAMESPACE)
    install_read_token(control_plane, DEFAULT_OPERATOR_NAMESPACE)  # where both operators look for it
    lease = ("lease", DEFAULT_LEASE_NAME, "-n", DEFAULT_OPERATOR_NAMESPACE)
    # `sandbox-operator run` with the defaults: no Lease or namespace setting at all (empty = unset).
    by_hand = OperatorProcess(
        control_plane.kubeconfig, hub.url, tmp_path / "by-hand", SANDBOX_OPERATOR_OPERATOR_NAMESPACE=""
    )
    # Started like the chart's Deployment, with its own Hub token so its calls can be told apart.
    like_chart = OperatorProcess(
        control_plane.kubeconfig,
        hub.url,
        tmp_path / "like-chart",
        HF_TOKEN=SECOND_OPERATOR_TOKEN,
        **chart_lease_env(control_plane, tmp_path),
    )
    for process in (by_hand, like_chart):
        process.log_dir.mkdir()
    by_hand.start()
    try:
        wait_for(lambda: "acquired the leader Lease" in by_hand.current_log(), 30, "the hand-run operator")
        like_chart.start()
        where = f"{DEFAULT_OPERATOR_NAMESPACE}/{DEFAULT_LEASE_NAME}"
        wait_for(
            lambda: f"waiting for the leader Lease {where}" in like_chart.current_log(),
            30,
            "the chart's operator to wait for the same Lease",
        )
        hub_admin.clear_calls()
        kubectl("apply", "-f", "-", stdin=session_manifest("one-lease", namespace))
        wait_ready(kubectl, "one-lease", namespace)
        assert calls_by(hub_admin, SECOND_OPERATOR) == []

        by_hand.kill()
        kubectl("apply", "-f", "-", stdin=session_manifest("after-hand", namespace))
        wait_ready(kubectl, "after-hand", namespace, timeout=90)
        assert calls_by(hub_admin, SECOND_OPERATOR) != []
    finally:
        like_chart.stop()
        by_hand.stop()
        kubectl("delete", *lease, check=False)


def test_a_missing_lease_namespace_is_a_clear_error(
    control_plane: ControlPlane, hub: HubSimServer, crd: None, tmp_path: Path
) -> None:
    process = OperatorProcess(
        control_plane.kubeconfig, hub.url, tmp_path, SANDBOX_OPERATOR_OPERATOR_NAMESPACE="no-such-namespace"
    )
    process.start()
    try:
        assert process.proc is not None
        assert process.proc.wait(timeout=30) == 1
        assert "namespace 'no-such-namespace' of the leader Lease" in process.current_log()
        assert "does not exist" in process.current_log()
    finally:
        process.stop()
