"""The orphan sweeper on the real control plane: `sandbox-operator sweep` and the operator's own
passes, with Spaces planted in the emulator. Each test uses a cluster id of its own, so Spaces
that other tests leave behind are other clusters' Spaces to it."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

from sandbox_operator.core.model import MARKER_CLUSTER_ID as CLUSTER
from sandbox_operator.core.model import MARKER_SESSION as SESSION
from sandbox_operator.core.model import MARKER_SESSION_UID as UID
from sandbox_testbench.controlplane import ControlPlane, Kubectl
from sandbox_testbench.controlplane.processes import free_ports
from sandbox_testbench.hubsim import HubSimAdmin, HubSimServer
from tests.support import wait_for
from tests.support.harness import (
    OWNER,
    OperatorProcess,
    get_session,
    scrape_metrics,
    session_manifest,
    wait_ready,
)


def plant(admin: HubSimAdmin, variables: dict[str, str] | None = None, uid: str | None = None) -> str:
    space_id = f"{OWNER}/ags-{uid or uuid.uuid4()}"
    admin.plant_space(space_id, private=True, variables=variables or {})
    return space_id


def marker(cluster: str, uid: str, session: str) -> dict[str, str]:
    return {UID: uid, CLUSTER: cluster, SESSION: session}


def sweep(operator: OperatorProcess, cluster: str, *args: str) -> list[tuple[str, str]]:
    """Run `sandbox-operator sweep` with the operator's environment; (verdict, Space id) per line."""
    env = {**operator.env(), "SANDBOX_OPERATOR_CLUSTER_ID": cluster}
    result = subprocess.run(
        [sys.executable, "-m", "sandbox_operator", "sweep", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [(line.split()[0], line.split()[1]) for line in result.stdout.splitlines()]


def test_sweep_dry_run_lists_exactly_the_planted_orphans(
    kubectl: Kubectl, hub_admin: HubSimAdmin, operator: OperatorProcess, namespace: str
) -> None:
    cluster = f"sweep-{uuid.uuid4().hex[:8]}"
    kubectl("apply", "-f", "-", stdin=session_manifest("claimer", namespace))
    claimer = wait_ready(kubectl, "claimer", namespace)["metadata"]["uid"]
    gone = [str(uuid.uuid4()) for _ in range(2)]
    orphans = {
        plant(hub_admin, marker(cluster, uid, f"{namespace}/gone-{n}"), uid) for n, uid in enumerate(gone)
    }
    released = str(uuid.uuid4())
    kept = {
        "unmarked": plant(hub_admin),
        "other-cluster": plant(hub_admin, marker("elsewhere", str(uuid.uuid4()), f"{namespace}/x")),
        "released": plant(hub_admin, {UID: released, SESSION: f"{namespace}/kept"}, released),
        "claimed": plant(hub_admin, marker(cluster, claimer, f"{namespace}/claimer")),
    }
    hub_admin.plant_space(f"{OWNER}/not-ags-{uuid.uuid4()}", variables=marker(cluster, gone[0], "x/y"))

    decisions = sweep(operator, cluster, "--dry-run", "--grace", "0")

    assert {space for verdict, space in decisions if verdict == "would-delete"} == orphans
    assert not any(verdict in ("delete", "deferred") for verdict, _ in decisions)
    found = {space: verdict for verdict, space in decisions}
    assert found[kept["unmarked"]] == "unmarked"
    assert found[kept["other-cluster"]] == "other-cluster"
    assert found[kept["released"]] == "other-cluster"
    assert found[kept["claimed"]] == "claimed"
    assert found[f"{OWNER}/ags-{claimer}"] == "claimed"
    assert not any("not-ags" in space for space in found)
    assert orphans | set(kept.values()) <= {space["id"] for space in hub_admin.spaces()}


def test_sweep_deletes_orphans_up_to_the_cap_and_says_so_on_the_sessions(
    kubectl: Kubectl, hub_admin: HubSimAdmin, operator: OperatorProcess, namespace: str
) -> None:
    cluster = f"sweep-{uuid.uuid4().hex[:8]}"
    uids = [str(uuid.uuid4()) for _ in range(2)]
    orphans = [
        plant(hub_admin, marker(cluster, uid, f"{namespace}/gone-{n}"), uid) for n, uid in enumerate(uids)
    ]
    unmarked = plant(hub_admin)

    capped = sweep(operator, cluster, "--max-deletes", "1", "--grace", "0")
    first = {space: verdict for verdict, space in capped}
    assert sorted(first[space] for space in orphans) == ["deferred", "delete"]
    deferred = next(space for space in orphans if first[space] == "deferred")
    second = sweep(operator, cluster, "--max-deletes", "1", "--grace", "0")
    assert ("delete", deferred) in second

    remaining = {space["id"] for space in hub_admin.spaces()}
    assert not set(orphans) & remaining and unmarked in remaining
    events = kubectl.json("get", "events", "-n", namespace)["items"]
    noted = {e["involvedObject"]["name"] for e in events if e["reason"] == "OrphanSpaceDeleted"}
    assert noted == {"gone-0", "gone-1"}


def test_the_operator_sweeps_in_the_background_and_reports_metrics_and_liveness(
    kubectl: Kubectl,
    hub_admin: HubSimAdmin,
    operator: OperatorProcess,
    namespace: str,
    control_plane: ControlPlane,
    hub: HubSimServer,
    tmp_path: Path,
) -> None:
    cluster = f"sweep-{uuid.uuid4().hex[:8]}"
    port = free_ports(1)[0]
    sweeping = OperatorProcess(
        control_plane.kubeconfig,
        hub.url,
        tmp_path,
        SANDBOX_OPERATOR_CLUSTER_ID=cluster,
        SANDBOX_OPERATOR_SWEEP_INTERVAL="1",
        SANDBOX_OPERATOR_SWEEP_GRACE="0",
        SANDBOX_OPERATOR_METRICS_PORT=str(port),
    )
    operator.stop()  # hands the Lease over
    sweeping.start()
    try:
        uid = str(uuid.uuid4())
        orphan = plant(hub_admin, marker(cluster, uid, f"{namespace}/gone"), uid)
        kubectl("apply", "-f", "-", stdin=session_manifest("live", namespace))
        wait_ready(kubectl, "live", namespace)
        wait_for(lambda: orphan not in {s["id"] for s in hub_admin.spaces()}, 30, "the sweeper to delete it")
        metrics = wait_for(
            lambda: (text := scrape_metrics(sweeping)) and 'phase="Ready"} 1.0' in text and text,
            30,
            "metrics",
        )
        for expected in (
            "sandbox_operator_orphans_swept_total 1.0",
            'sandbox_operator_sweep_decisions_total{verdict="delete"} 1.0',
            'sandbox_operator_hub_calls_total{code="200",route="duplicate"} 1.0',
            'sandbox_operator_hub_call_seconds_count{route="list_spaces"}',
            "sandbox_operator_hub_rate_limit_wait_seconds_count",
            "sandbox_operator_leader 1.0",
            "sandbox_operator_event_loop_lag_seconds",
        ):
            assert expected in metrics, expected
        with urllib.request.urlopen(sweeping.started_env["SANDBOX_OPERATOR_LIVENESS"], timeout=5) as response:
            assert response.status == 200
            assert b"loopLagSeconds" in response.read()
    finally:
        sweeping.stop()


def sweep_as_configured(operator: OperatorProcess, *args: str, **env: str) -> dict[str, str]:
    """`sandbox-operator sweep` with the operator's environment and no cluster id: the derived one."""
    environment = {k: v for k, v in {**operator.env(), **env}.items() if k != "SANDBOX_OPERATOR_CLUSTER_ID"}
    result = subprocess.run(
        [sys.executable, "-m", "sandbox_operator", "sweep", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return {line.split()[1]: line.split()[0] for line in result.stdout.splitlines()}


def test_the_default_cluster_id_is_this_clusters_own(
    kubectl: Kubectl, hub_admin: HubSimAdmin, operator: OperatorProcess, namespace: str
) -> None:
    """No configuration: the marker names this cluster by its kube-system namespace's UID, not `default`."""
    kubectl("apply", "-f", "-", stdin=session_manifest("marked", namespace))
    space_id = wait_ready(kubectl, "marked", namespace)["status"]["spaceId"]
    kube_system = kubectl.json("get", "namespace", "kube-system")["metadata"]["uid"]
    assert hub_admin.space(space_id)["variables"][CLUSTER] == kube_system


def test_clusters_sharing_an_owner_never_sweep_each_others_spaces(
    kubectl: Kubectl, hub_admin: HubSimAdmin, operator: OperatorProcess, namespace: str
) -> None:
    """Another cluster writes Spaces under the same owner: one left at the old default id `default`, one
    with its own derived id. Neither is ours to sweep; our own orphan still is."""
    kube_system = kubectl.json("get", "namespace", "kube-system")["metadata"]["uid"]
    theirs = {
        plant(hub_admin, marker("default", uid, f"{namespace}/theirs"), uid)
        for uid in (str(uuid.uuid4()), str(uuid.uuid4()))
    }
    theirs.add(plant(hub_admin, marker(str(uuid.uuid4()), str(uuid.uuid4()), f"{namespace}/derived")))
    gone = str(uuid.uuid4())
    ours = plant(hub_admin, marker(kube_system, gone, f"{namespace}/gone"), gone)

    decisions = sweep_as_configured(operator, "--grace", "0", "--max-deletes", "100")

    assert decisions[ours] == "delete"
    assert {decisions[space] for space in theirs} == {"other-cluster"}
    left = {space["id"] for space in hub_admin.spaces()}
    assert theirs <= left and ours not in left


def test_a_space_a_live_session_names_is_never_swept(
    kubectl: Kubectl, hub_admin: HubSimAdmin, operator: OperatorProcess, namespace: str
) -> None:
    """A session whose status names a Space (e.g. restored from a backup) keeps it, whatever its marker."""
    kube_system = kubectl.json("get", "namespace", "kube-system")["metadata"]["uid"]
    named = plant(hub_admin, marker(kube_system, str(uuid.uuid4()), f"{namespace}/restored"))
    # A template outside the allow-list: the operator records no intent of its own for this session.
    kubectl("apply", "-f", "-", stdin=session_manifest("restored", namespace, template="elsewhere/x"))
    wait_for(lambda: (get_session(kubectl, "restored", namespace) or {}).get("status"), 30, "a status")
    kubectl("patch", "ags", "restored", "-n", namespace, "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": {"spaceId": named}}))  # fmt: skip

    assert sweep_as_configured(operator, "--grace", "0", "--dry-run")[named] == "claimed"


def test_orphans_are_found_under_the_owners_the_allow_list_names(
    hub_admin: HubSimAdmin, operator: OperatorProcess, kubectl: Kubectl
) -> None:
    """No live session names the owner team-x, but the owner allow-list does: its orphans are found."""
    kube_system = kubectl.json("get", "namespace", "kube-system")["metadata"]["uid"]
    gone = str(uuid.uuid4())
    orphan = f"team-x/ags-{gone}"
    hub_admin.plant_space(orphan, private=True, variables=marker(kube_system, gone, "nowhere/gone"))

    allowed = sweep_as_configured(
        operator, "--grace", "0", "--dry-run", SANDBOX_OPERATOR_ALLOWED_OWNERS="team-x,team-*"
    )
    assert allowed[orphan] == "would-delete"
    assert orphan not in sweep_as_configured(operator, "--grace", "0", "--dry-run")
