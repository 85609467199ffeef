"""Two operator deployments sharding one cluster by namespace (docs/sharding.md):
each holds a Lease of its own, reconciles and sweeps only its own namespace's sessions and Spaces,
though both share the Hub owner and the cluster id; one killed, the other goes on alone. A tenant's
Lease made up as a shard's counts for nothing."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import sandbox_operator.api.crd
from sandbox_operator.core.model import MARKER_CLUSTER_ID, MARKER_SESSION, MARKER_SESSION_UID
from sandbox_operator.core.shards import ALL_NAMESPACES, SERVED_NAMESPACES_ANNOTATION, SHARD_LEASE_LABEL
from sandbox_testbench.controlplane import ControlPlane, Kubectl
from sandbox_testbench.hubsim import HubSimAdmin, HubSimServer
from tests.support import wait_for
from tests.support.harness import (
    OWNER,
    SECOND_OPERATOR,
    SECOND_OPERATOR_TOKEN,
    OperatorProcess,
    get_session,
    session_manifest,
    wait_ready,
)

# Over a minute in one worker: parallel runs start it first (tests/conftest.py).
pytestmark = pytest.mark.long


@pytest.fixture
def shard_namespaces(kubectl: Kubectl) -> Iterator[tuple[str, str]]:
    suffix = uuid.uuid4().hex[:8]
    names = (f"shard-a-{suffix}", f"shard-b-{suffix}")
    for name in names:
        kubectl("create", "namespace", name)
    yield names
    for name in names:
        kubectl("delete", "namespace", name, "--wait=false")


def plant_orphan(admin: HubSimAdmin, cluster: str, namespace: str) -> str:
    """A Space whose marker names this cluster and a session in `namespace` that no longer exists."""
    uid = str(uuid.uuid4())
    space_id = f"{OWNER}/ags-{uid}"
    marker = {MARKER_SESSION_UID: uid, MARKER_CLUSTER_ID: cluster, MARKER_SESSION: f"{namespace}/gone"}
    admin.plant_space(space_id, private=True, variables=marker)
    return space_id


def exists(admin: HubSimAdmin, space_id: str) -> bool:
    return any(space["id"] == space_id for space in admin.spaces())


def api_calls(admin: HubSimAdmin, user: str, route: str | None = None) -> list[dict[str, Any]]:
    return [c for c in admin.calls() if c["user"] == user and (route is None or c["route"] == route)]


def touching(admin: HubSimAdmin, user: str, space_id: str) -> list[tuple[str, str]]:
    """(method, route) of the user's Hub calls on that Space."""
    return [(c["method"], c["route"]) for c in api_calls(admin, user) if f"/{space_id}" in c["path"]]


def holder(kubectl: Kubectl, lease: str) -> str:
    return str(kubectl.json("get", "lease", lease, "-n", "default")["spec"]["holderIdentity"])


def two_shards(
    control_plane: ControlPlane,
    hub: HubSimServer,
    tmp_path: Path,
    namespaces: tuple[str, str],
    leases: tuple[str, str],
    **shared: str,
) -> tuple[OperatorProcess, OperatorProcess]:
    """Operators a and b, each serving its namespaces (comma-separated) with a Lease of its own; each
    with a Hub token of its own (both may write the owner), so the emulator tells them apart."""
    a = OperatorProcess(
        control_plane.kubeconfig, hub.url, tmp_path / "a",
        SANDBOX_OPERATOR_NAMESPACES=namespaces[0], SANDBOX_OPERATOR_LEASE_NAME=leases[0], **shared,
    )  # fmt: skip
    b = OperatorProcess(
        control_plane.kubeconfig, hub.url, tmp_path / "b", HF_TOKEN=SECOND_OPERATOR_TOKEN,
        SANDBOX_OPERATOR_NAMESPACES=namespaces[1], SANDBOX_OPERATOR_LEASE_NAME=leases[1], **shared,
    )  # fmt: skip
    for process in (a, b):
        process.log_dir.mkdir()
    return a, b


def test_two_shards_each_act_only_on_their_own_namespace(
    kubectl: Kubectl,
    hub_admin: HubSimAdmin,
    without_shared_operator: None,
    shard_namespaces: tuple[str, str],
    control_plane: ControlPlane,
    hub: HubSimServer,
    crd: None,
    tmp_path: Path,
) -> None:
    ns_a, ns_b = shard_namespaces
    suffix = ns_a.rsplit("-", 1)[1]
    cluster = f"shards-{suffix}"  # shared by both, as two releases in one cluster share the kube-system UID
    leases = (f"shard-a-{suffix}", f"shard-b-{suffix}")
    shared = {
        "SANDBOX_OPERATOR_CLUSTER_ID": cluster,
        "SANDBOX_OPERATOR_SWEEP_INTERVAL": "1",
        "SANDBOX_OPERATOR_SWEEP_GRACE": "0",
    }
    a, b = two_shards(control_plane, hub, tmp_path, (ns_a, ns_b), leases, **shared)
    user_a, user_b = OWNER, SECOND_OPERATOR
    hub_admin.clear_calls()
    orphan_a, orphan_b = plant_orphan(hub_admin, cluster, ns_a), plant_orphan(hub_admin, cluster, ns_b)
    for process in (a, b):
        process.start()
    try:
        for process in (a, b):
            wait_for(lambda p=process: "acquired the leader Lease" in p.current_log(), 30, "each its Lease")
        assert (holder(kubectl, leases[0]), holder(kubectl, leases[1])) == (a.identity, b.identity)

        kubectl("apply", "-n", ns_a, "-f", "-", stdin=session_manifest("agent", ns_a))
        kubectl("apply", "-n", ns_b, "-f", "-", stdin=session_manifest("agent", ns_b))
        space_a = wait_ready(kubectl, "agent", ns_a)["status"]["spaceId"]
        space_b = wait_ready(kubectl, "agent", ns_b)["status"]["spaceId"]
        # Each shard created its own session's Space and deleted its own shard's orphan only.
        wait_for(lambda: not exists(hub_admin, orphan_a) and not exists(hub_admin, orphan_b), 30, "orphans")
        for user in (user_a, user_b):  # a delete's path names no Space: one each, and both orphans gone
            assert [len(api_calls(hub_admin, user, route)) for route in ("duplicate", "delete")] == [1, 1]
        assert exists(hub_admin, space_a) and exists(hub_admin, space_b)
        # The other shard's Spaces: never written; their marker read once by the sweeper (then remembered).
        passes = len(api_calls(hub_admin, user_a, "list_spaces"))
        wait_for(lambda: len(api_calls(hub_admin, user_a, "list_spaces")) >= passes + 3, 30, "more passes")
        for user, theirs in ((user_a, (space_b, orphan_b)), (user_b, (space_a, orphan_a))):
            for space_id in theirs:
                assert [m for m, _ in touching(hub_admin, user, space_id) if m != "GET"] == []
                assert len(touching(hub_admin, user, space_id)) <= 1, touching(hub_admin, user, space_id)

        # Shard a dies without a word: b goes on, and neither acts on nor sweeps what is a's.
        a.kill()
        orphan_a = plant_orphan(hub_admin, cluster, ns_a)
        kubectl("apply", "-n", ns_a, "-f", "-", stdin=session_manifest("while-a-is-down", ns_a))
        kubectl("apply", "-n", ns_b, "-f", "-", stdin=session_manifest("while-a-is-down", ns_b))
        wait_ready(kubectl, "while-a-is-down", ns_b)
        passes = len(api_calls(hub_admin, user_b, "list_spaces"))
        wait_for(lambda: len(api_calls(hub_admin, user_b, "list_spaces")) >= passes + 3, 30, "b's passes")
        assert exists(hub_admin, orphan_a)
        untouched = get_session(kubectl, "while-a-is-down", ns_a) or {}
        assert (
            untouched["status"] == sandbox_operator.api.crd.UNOBSERVED_STATUS
            and "finalizers" not in untouched["metadata"]
        ), untouched
        assert len(api_calls(hub_admin, user_b, "duplicate")) == 2
        assert len(api_calls(hub_admin, user_b, "delete")) == 1
        assert holder(kubectl, leases[1]) == b.identity

        # Back (the same pod identity takes its Lease back at once), a catches up with its own.
        a.start()
        wait_ready(kubectl, "while-a-is-down", ns_a, timeout=90)
        wait_for(lambda: not exists(hub_admin, orphan_a), 30, "a's orphan swept by a")
        for namespace in (ns_a, ns_b):
            kubectl("delete", "ags", "--all", "-n", namespace, "--timeout=60s")
        assert not exists(hub_admin, space_a) and not exists(hub_admin, space_b)
    finally:
        a.stop()
        b.stop()
        for lease in leases:
            kubectl("delete", "lease", lease, "-n", "default", "--ignore-not-found")


def test_overlapping_shards_never_both_act_and_the_loser_takes_over_when_the_winner_is_gone(
    kubectl: Kubectl,
    hub_admin: HubSimAdmin,
    without_shared_operator: None,
    shard_namespaces: tuple[str, str],
    control_plane: ControlPlane,
    hub: HubSimServer,
    crd: None,
    tmp_path: Path,
) -> None:
    shared_ns, only_b = shard_namespaces
    suffix = shared_ns.rsplit("-", 1)[1]
    leases = (f"overlap-a-{suffix}", f"overlap-b-{suffix}")
    # Short Leases (6 s; the Hub timeout must fit in its renew deadline) so the takeover is quick.
    short = {"SANDBOX_OPERATOR_HUB_TIMEOUT": "4"}
    a, b = two_shards(control_plane, hub, tmp_path, (shared_ns, f"{shared_ns},{only_b}"), leases, **short)
    for process in (a, b):
        process.args = ["--lease-duration", "6"]
    hub_admin.clear_calls()
    try:
        a.start()
        wait_for(lambda: "acquired the leader Lease" in a.current_log(), 30, "a to act")
        b.start()  # created later: a's Lease wins, so b holds its own Lease but does not act
        overlap = f"the Lease default/{leases[0]} (held by {a.identity}) also serves {shared_ns}"
        wait_for(lambda: overlap in b.current_log(), 30, "b to say which shard it yields to")
        assert holder(kubectl, leases[1]) == b.identity
        annotations = kubectl.json("get", "lease", leases[1], "-n", "default")["metadata"]["annotations"]
        assert annotations["sandbox-operator.dev/served-namespaces"] == ",".join(sorted((shared_ns, only_b)))

        kubectl("apply", "-n", shared_ns, "-f", "-", stdin=session_manifest("agent", shared_ns))
        kubectl("apply", "-n", only_b, "-f", "-", stdin=session_manifest("agent", only_b))
        wait_ready(kubectl, "agent", shared_ns)
        passes = len(api_calls(hub_admin, OWNER, "list_spaces"))
        wait_for(lambda: len(api_calls(hub_admin, OWNER, "list_spaces")) >= passes + 3, 30, "a's passes")
        # Only a acted: one Space, made by a; b made no Hub call at all, not even in its own namespace.
        assert len(api_calls(hub_admin, OWNER, "duplicate")) == 1
        assert api_calls(hub_admin, SECOND_OPERATOR) == []
        untouched = get_session(kubectl, "agent", only_b) or {}
        assert (
            untouched["status"] == sandbox_operator.api.crd.UNOBSERVED_STATUS
            and "finalizers" not in untouched["metadata"]
        ), untouched
        assert "acquired the leader Lease" not in b.current_log()

        # a dies without a word; once its Lease is unrenewed for its duration (on b's clock), b acts.
        a.kill()
        wait_ready(kubectl, "agent", only_b, timeout=90)
        assert "acquired the leader Lease" in b.current_log()
        kubectl("apply", "-n", shared_ns, "-f", "-", stdin=session_manifest("after-a", shared_ns))
        wait_ready(kubectl, "after-a", shared_ns)
        assert len(api_calls(hub_admin, SECOND_OPERATOR, "duplicate")) == 2
        assert len(api_calls(hub_admin, OWNER, "duplicate")) == 1
        for namespace in (shared_ns, only_b):
            kubectl("delete", "ags", "--all", "-n", namespace, "--timeout=60s")
    finally:
        a.stop()
        b.stop()
        for lease in leases:
            kubectl("delete", "lease", lease, "-n", "default", "--ignore-not-found")


def test_a_tenants_lease_labelled_as_a_shard_halts_nothing(
    kubectl: Kubectl,
    without_shared_operator: None,
    namespace: str,
    control_plane: ControlPlane,
    hub: HubSimServer,
    crd: None,
    tmp_path: Path,
) -> None:
    """eve, bound to the built-in `edit` role in her namespace only, labels a Lease of hers as a shard
    serving every namespace, held and renewed as far as it says, and older than the operator's."""
    kubectl("create", "rolebinding", "eve-edits", "-n", namespace, "--clusterrole=edit", "--user=eve")
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    lease = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": "sandbox-operator",
            "namespace": namespace,
            "labels": {SHARD_LEASE_LABEL: "true"},
            "annotations": {SERVED_NAMESPACES_ANNOTATION: ALL_NAMESPACES},
        },
        "spec": {"holderIdentity": "eve", "leaseDurationSeconds": 3600, "acquireTime": now, "renewTime": now},
    }
    kubectl("apply", "-f", "-", "--as=eve", stdin=json.dumps(lease))
    solo = OperatorProcess(
        control_plane.kubeconfig, hub.url, tmp_path / "solo", SANDBOX_OPERATOR_LEASE_NAME=f"solo-{namespace}"
    )
    solo.log_dir.mkdir()
    solo.start()
    try:
        wait_for(lambda: "acquired the leader Lease" in solo.current_log(), 30, "the operator to act")
        kubectl("apply", "-f", "-", stdin=session_manifest("served", namespace))
        wait_ready(kubectl, "served", namespace)
        assert "overlapping shards" not in solo.current_log()
        kubectl("delete", "ags", "served", "-n", namespace, "--timeout=60s")
    finally:
        solo.stop()
        kubectl("delete", "lease", f"solo-{namespace}", "-n", "default", "--ignore-not-found")
