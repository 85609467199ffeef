"""The upgrade from the previous release, as UPGRADING.md says to do it, on a control plane and a Hub
emulator of its own: the previous release (hack/releases.txt, installed from its tag or commit by
hack/install-release.sh into a venv of its own) runs with live sessions, then the new CRDs and
approval policy go in, the old operator stops and this checkout's starts. Nothing users had may be
lost, duplicated, recreated, revoked or ended by a default the upgrade brought."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from sandbox_operator.api import parse_rfc3339
from sandbox_operator.config.settings import LEGACY_CLUSTER_ID
from sandbox_operator.core.conditions import rfc3339
from sandbox_operator.core.model import MARKER_CLUSTER_ID
from sandbox_testbench.controlplane import ControlPlane, Kubectl
from sandbox_testbench.hubsim import HubSimAdmin, HubSimConfig, HubSimServer
from tests.support import wait_for
from tests.support.harness import (
    OPERATOR_TOKEN,
    OWNER,
    READ_TOKEN,
    REPO,
    TEMPLATE,
    OperatorProcess,
    condition,
    get_session,
    install_approval_policy,
    install_read_token,
    readme_block,
    run_shell,
    running_control_plane,
    session_manifest,
    spaces_of,
    wait_condition_reason,
    wait_ready,
)

# Over a minute in one worker: parallel runs start it first (tests/conftest.py).
pytestmark = pytest.mark.long

NAMESPACE = "team"
#: The new operator's default lifetime in the first part of the test: shorter than the old sessions'
#: age at the upgrade, so counting it from their creation would delete them at once.
LIFETIME = 40
#: erin approves through this group, as the previous release's docs allowed (it recorded no groups).
GROUP = "gpu-leads"


@dataclass(frozen=True)
class Release:
    """A previous release, installed: its source tree and the Python of its own venv."""

    src: Path
    python: str


@pytest.fixture(scope="module")
def previous_release() -> Release:
    """The last release of hack/releases.txt, from its tag or else its commit; fails, never skips,
    when this clone has neither (the script says how to fetch them)."""
    result = subprocess.run(
        ["bash", str(REPO / "hack" / "install-release.sh")],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"the previous release cannot be installed:\n{result.stderr}", pytrace=False)
    home = Path(result.stdout.strip().splitlines()[-1])
    return Release(home / "src", str(home / "venv" / "bin" / "python"))


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with running_control_plane(tmp_path_factory.mktemp("upgrade-plane")) as started:
        yield started


@pytest.fixture(scope="module")
def hub() -> Iterator[HubSimServer]:
    """The current emulator: the Hub does not change with our releases."""
    config = HubSimConfig(
        tokens={OPERATOR_TOKEN: OWNER, READ_TOKEN: OWNER},
        templates=[TEMPLATE],
        build_seconds=0.2,
        hardware_switch_seconds=0.2,
    )
    with HubSimServer(config) as server:
        yield server


def session(kubectl: Kubectl, name: str) -> dict[str, Any]:
    found = get_session(kubectl, name, NAMESPACE)
    assert found is not None, f"{NAMESPACE}/{name} is gone"
    return found


def status_of(kubectl: Kubectl, name: str) -> dict[str, Any]:
    return dict(session(kubectl, name).get("status") or {})


def patch_as(kubectl: Kubectl, name: str, patch: dict[str, Any], user: str, *groups: str) -> None:
    kubectl(
        "patch", "ags", name, "-n", NAMESPACE, "--type=merge", "-p", json.dumps(patch), f"--as={user}",
        *(f"--as-group={group}" for group in groups),
    )  # fmt: skip


def seconds(value: str) -> datetime:
    """An RFC 3339 time to the second, as conditions and lifetimes record it."""
    return parse_rfc3339(rfc3339(parse_rfc3339(value)))


def stage_running(kubectl: Kubectl, name: str) -> bool:
    return status_of(kubectl, name).get("stage") == "RUNNING"


def marked_for(admin: HubSimAdmin, uid: str, cluster: str) -> bool:
    """The session's Space carries `cluster` in its ownership marker."""
    return all(space["variables"][MARKER_CLUSTER_ID] == cluster for space in spaces_of(admin, uid))


def _now() -> datetime:
    return datetime.now(UTC)


def hub_spaces(admin: HubSimAdmin, uid: str) -> list[tuple[str, str]]:
    return [(space["id"], space["createdAt"]) for space in spaces_of(admin, uid)]


def test_an_upgrade_from_the_previous_release_keeps_what_users_have(
    previous_release: Release, plane: ControlPlane, hub: HubSimServer, tmp_path: Path
) -> None:
    kubectl = plane.kubectl()
    admin = hub.admin
    started = time.monotonic()

    # --- The previous release, installed as its docs say: its CRD, its chart's policy and roles.
    kubectl("apply", "-f", str(previous_release.src / "crds" / "agentsessions.yaml"))
    kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/agentsessions.agents.sandbox-operator.dev",
    )
    kubectl("create", "namespace", NAMESPACE)
    # The session that proves lifetimes first: the oldest at the upgrade.
    kubectl("apply", "-f", "-", stdin=session_manifest("plain", NAMESPACE))
    install_approval_policy(plane, previous_release.src / "charts" / "sandbox-operator")
    kubectl(
        "create", "clusterrolebinding", "gpu-leads-approve", "--clusterrole=sandbox-operator-approver",
        f"--group={GROUP}",
    )  # fmt: skip
    kubectl(
        "create", "rolebinding", "dev-edits", "-n", NAMESPACE,
        "--clusterrole=sandbox-operator-session-editor", "--user=dev",
    )  # fmt: skip
    (tmp_path / "old").mkdir()
    old = OperatorProcess(
        plane.kubeconfig, hub.url, tmp_path / "old", python=previous_release.python,
        SANDBOX_OPERATOR_POLL_INTERVAL="1",
    )  # fmt: skip
    old.start()
    try:
        kubectl("apply", "-f", "-", stdin=session_manifest("gpu", NAMESPACE, hardware="t4-small"))
        kubectl("apply", "-f", "-", stdin=session_manifest("leaving", NAMESPACE))
        for name in ("plain", "gpu", "leaving"):
            wait_for(partial(stage_running, kubectl, name), 60, f"{name} running")
        # erin approves as the previous docs said: as herself, her rights through her group.
        patch_as(
            kubectl,
            "gpu",
            {"spec": {"approval": {"hardware": "t4-small", "approvedBy": "erin"}}},
            "erin",
            GROUP,
        )

        def on_t4() -> dict[str, Any] | None:
            status = status_of(kubectl, "gpu")
            spend = status.get("spend") or {}
            on = (status.get("hardware") or {}).get("current") == "t4-small" and spend.get(
                "usdPerHour", 0
            ) > 0
            return status if on else None

        old_gpu = wait_for(on_t4, 60, "gpu on t4-small under the previous release")
        old_verdict = condition({"status": old_gpu}, "HardwareApproved")
        assert old_verdict is not None and (old_verdict["status"], old_verdict["reason"]) == (
            "True",
            "Approved",
        )
        assert old_gpu["approvedBy"] == "erin"

        # A deletion under way: the Hub fails it, so the old operator's finalizer holds the session.
        admin.add_fault("delete", 503)
        kubectl("delete", "ags", "leaving", "-n", NAMESPACE, "--wait=false")
        wait_for(
            lambda: any(c["route"] == "delete" and c["status"] == 503 for c in admin.calls()),
            60,
            "a failed delete",
        )
        before = {name: session(kubectl, name) for name in ("plain", "gpu", "leaving")}
        uids = {name: before[name]["metadata"]["uid"] for name in before}
        spaces_before = {name: hub_spaces(admin, uids[name]) for name in uids}
        assert all(len(found) == 1 for found in spaces_before.values()), spaces_before
        assert all(
            space["variables"][MARKER_CLUSTER_ID] == LEGACY_CLUSTER_ID
            for name in uids
            for space in spaces_of(admin, uids[name])
        )
        # --- The upgrade, as UPGRADING.md says: CRDs and policy first (the old operator still runs),
        # the read token its "Before you start" asks for, then the old operator stops, the new starts.
        for command in readme_block("kubectl apply -f deploy/approval-policy.yaml", REPO / "UPGRADING.md"):
            run_shell(plane, command)
        install_read_token(plane)
        # The oldest session must be older than the new default lifetime when the new operator starts.
        created = parse_rfc3339(before["plain"]["metadata"]["creationTimestamp"])
        wait_for(lambda: _now() > created + timedelta(seconds=LIFETIME + 2), LIFETIME + 10, "plain to age")
    finally:
        old.stop()
    admin.clear_faults()
    # What the old operator recorded last: the new one reads the same.
    old_gpu = status_of(kubectl, "gpu")
    calls_before = len(admin.calls())
    upgraded = _now().replace(microsecond=0)
    (tmp_path / "new").mkdir()
    new = OperatorProcess(
        plane.kubeconfig, hub.url, tmp_path / "new", SANDBOX_OPERATOR_LIFETIME_DEFAULT=str(LIFETIME)
    )
    new.start()
    try:
        # Lifetimes count from the upgrade for sessions the old operator managed, though by their
        # creation they would be over: the new operator's first pass records where they start. It
        # runs with the short default only until then (it would delete them LIFETIME after).
        def lifetime_started(name: str) -> dict[str, Any] | None:
            found = session(kubectl, name)
            return found if (found.get("status") or {}).get("expiresAt") else None

        for name in ("plain", "gpu"):
            counted = wait_for(partial(lifetime_started, name), 30, f"{name}'s lifetime")
            start = parse_rfc3339(counted["status"]["lifetimeStartTime"])
            assert start >= upgraded, counted["status"]
            assert parse_rfc3339(counted["status"]["expiresAt"]) == start + timedelta(seconds=LIFETIME)
            expiring = condition(counted, "Expiring")
            assert expiring is not None and f"from {rfc3339(start)}" in expiring["message"], expiring
        assert created + timedelta(seconds=LIFETIME) < upgraded, "by its creation, plain would be gone"
        plain_start = session(kubectl, "plain")["status"]["lifetimeStartTime"]
        # Recorded once: a restarted operator (with the usual default) keeps counting from it.
        new.stop()
        new.extra_env.pop("SANDBOX_OPERATOR_LIFETIME_DEFAULT")
        new.start()
        wait_for(
            lambda: (
                status_of(kubectl, "plain").get("expiresAt")
                == rfc3339(parse_rfc3339(plain_start) + timedelta(days=1))
            ),
            30,
            "plain's lifetime under the default of one day, from the upgrade",
        )
        assert status_of(kubectl, "plain")["lifetimeStartTime"] == plain_start
        # ... while a session created after the upgrade counts from its creation.
        kubectl("apply", "-f", "-", stdin=session_manifest("fresh", NAMESPACE))
        fresh = wait_for(lambda: status_of(kubectl, "fresh").get("lifetimeStartTime"), 30, "fresh's start")
        assert fresh == session(kubectl, "fresh")["metadata"]["creationTimestamp"]

        # The deletion the old operator could not finish is finished, and its Space goes.
        wait_for(lambda: get_session(kubectl, "leaving", NAMESPACE) is None, 60, "leaving to be deleted")
        assert hub_spaces(admin, uids["leaving"]) == []

        # Both live sessions Ready on their own Spaces, the paid one still on t4-small, approved.
        wait_ready(kubectl, "plain", NAMESPACE)
        gpu = wait_ready(kubectl, "gpu", NAMESPACE)
        approved = condition(gpu, "HardwareApproved")
        assert approved is not None and (approved["status"], approved["reason"]) == ("True", "Approved"), (
            approved
        )
        assert "inherited from sandbox-operator 0.1.0" in approved["message"]
        record = gpu["status"]["approval"]
        assert record["inheritedHardware"] == "t4-small"
        assert record["seenTime"] == old_verdict["lastTransitionTime"]
        assert gpu["status"]["hardware"] == {"current": "t4-small", "requested": "t4-small"}
        downgrades = [
            c for c in admin.calls()[calls_before:] if c["route"] == "hardware" and c["flavor"] == "cpu-basic"
        ]
        assert downgrades == [], "the approved Space was never moved off t4-small"

        # No Space lost, duplicated or recreated: the same Space, created when it was, one per session;
        # the only duplicate since the upgrade is fresh's.
        for name in ("plain", "gpu"):
            assert hub_spaces(admin, uids[name]) == spaces_before[name], name
        duplicates = [c for c in admin.calls()[calls_before:] if c["route"] == "duplicate"]
        assert len(duplicates) == 1, duplicates

        # Markers name the current cluster: the kube-system namespace's UID.
        cluster = kubectl.json("get", "namespace", "kube-system")["metadata"]["uid"]
        for name in ("plain", "gpu"):
            wait_for(
                partial(marked_for, admin, uids[name], cluster), 30, f"{name}'s marker to name {cluster}"
            )
            assert status_of(kubectl, name)["markerClusterId"] == cluster

        # The paid stretch the old operator began keeps its approver and its start.
        spend = old_gpu["spend"]
        began = parse_rfc3339(spend["lastObservedTime"]) - timedelta(
            hours=spend["estimatedUsd"] / spend["usdPerHour"]
        )
        began = max(began, parse_rfc3339(old_verdict["lastTransitionTime"]))
        period = gpu["status"]["paidPeriod"]
        assert (period["hardware"], period["approvedBy"]) == ("t4-small", "erin")
        assert period["startTime"] == rfc3339(began)

        # A session editor cannot ride the inherited approval: another flavor ends it, with a receipt
        # that names the approver and the whole stretch, and coming back needs a fresh approval.
        patch_as(kubectl, "gpu", {"spec": {"hardware": "a10g-small"}}, "dev")

        def receipt() -> dict[str, Any] | None:
            return next(iter(status_of(kubectl, "gpu").get("receipts") or []), None)

        bill = wait_for(receipt, 60, "the receipt of t4-small")
        assert (bill["hardware"], bill["approvedBy"], bill["endedBy"]) == (
            "t4-small",
            "erin",
            "HardwareChanged",
        )
        assert bill["startTime"] == rfc3339(began)
        patch_as(kubectl, "gpu", {"spec": {"hardware": "t4-small"}}, "dev")
        wait_condition_reason(kubectl, "gpu", NAMESPACE, "HardwareApproved", "ApproverNotAuthorized")
        assert (status_of(kubectl, "gpu")["hardware"] or {}).get("requested") == "cpu-basic"
        # The way forward: erin approves again, naming her group, which this version checks.
        again = {"hardware": "t4-small", "approvedBy": "erin", "approverGroups": [GROUP]}
        patch_as(kubectl, "gpu", {"spec": {"approval": again}}, "erin", GROUP)
        wait_for(
            lambda: (status_of(kubectl, "gpu").get("hardware") or {}).get("current") == "t4-small",
            60,
            "gpu back on t4-small under the new approval",
        )
        assert status_of(kubectl, "gpu")["approval"].get("inheritedHardware") is None
    finally:
        new.stop()
    print(f"\nupgrade test: {time.monotonic() - started:.0f}s from the previous release's CRD to the end")
