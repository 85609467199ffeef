"""Lifetimes, pause and idle on the real control plane, the Hub emulator and the operator process:
an expired session is deleted on time with a warning before, a paused Space is PAUSED at the Hub and
bills nothing until it is resumed, an unused session is paused (only on the spec that said so), and a
paused one deleted after its retention."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from datetime import UTC, datetime

import httpx2
import pytest

from sandbox_operator.k8s.client import KubeClient
from sandbox_testbench.controlplane import ControlPlane, Kubectl
from sandbox_testbench.hubsim import HubSimAdmin
from tests.support import wait_for
from tests.support.harness import (
    READ_TOKEN,
    OperatorProcess,
    get_session,
    session_manifest,
    spaces_of,
    wait_condition_reason,
    wait_ready,
)
from tests.support.kube import api_client, event_time, events_of, namespaced_path, wait_for_events

#: An approver of every flavor, in every namespace (the chart's role), for the paid pause test.
APPROVER = "lifetime-approver"


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def connection(kubectl: Kubectl, name: str, namespace: str) -> dict[str, str]:
    secret = api_client(kubectl).get(namespaced_path("v1", "secrets", namespace, f"{name}-sandbox"))
    return {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}


def gone(kubectl: Kubectl, name: str, namespace: str, timeout: float) -> datetime:
    """Waits until the session no longer exists; returns when that was seen."""
    wait_for(
        lambda: get_session(kubectl, name, namespace) is None, timeout, f"{namespace}/{name} deleted", 0.2
    )
    return datetime.now(UTC)


def test_an_expired_session_is_deleted_on_time_with_a_warning_before(
    kubectl: Kubectl, hub_admin: HubSimAdmin, operator: OperatorProcess, namespace: str
) -> None:
    kubectl("apply", "-f", "-", stdin=session_manifest("brief", namespace, lifetime={"ttlSeconds": 8}))
    session = wait_ready(kubectl, "brief", namespace)
    uid, created = session["metadata"]["uid"], parse_time(session["metadata"]["creationTimestamp"])
    expires = parse_time(session["status"]["expiresAt"])
    assert (expires - created).total_seconds() == 8
    printed = kubectl("get", "ags", "brief", "-n", namespace).stdout
    assert "EXPIRES" in printed.splitlines()[0] and session["status"]["expiresAt"] in printed
    # 8 s is within the warning lead time (600 s): the warning comes at once.
    warning = wait_condition_reason(kubectl, "brief", namespace, "Expiring", "LifetimeEnding")
    assert warning["status"] == "True" and session["status"]["expiresAt"] in warning["message"]

    deleted = gone(kubectl, "brief", namespace, 30)
    assert (deleted - expires).total_seconds() > -1.0, "deleted before its expiry"
    assert (deleted - expires).total_seconds() < 10.0, "deleted late"
    assert spaces_of(hub_admin, uid) == []  # the finalizer deleted the Space (deletionPolicy Delete)
    notes = wait_for_events(kubectl, "brief", namespace, "LifetimeEnding", "LifetimeExpired")
    assert notes["LifetimeEnding"]["type"] == "Warning"
    assert notes["LifetimeExpired"]["type"] == "Normal"
    assert event_time(notes["LifetimeEnding"]) <= event_time(notes["LifetimeExpired"]) <= deleted


def test_a_lifetime_names_one_of_ttl_and_expiry_at_admission(kubectl: Kubectl, namespace: str) -> None:
    both = {"ttlSeconds": 5, "expiresAt": "2030-01-01T00:00:00Z"}
    result = kubectl("apply", "-f", "-", stdin=session_manifest("bad", namespace, lifetime=both), check=False)
    assert result.returncode != 0 and "spec.lifetime" in result.stderr and "exactly one" in result.stderr


@pytest.fixture
def approver(kubectl: Kubectl, approval_policy: None) -> str:
    kubectl(
        "create", "clusterrolebinding", "test-lifetime-approver", "--clusterrole=sandbox-operator-approver",
        f"--user={APPROVER}", check=False,
    )  # fmt: skip
    return APPROVER


def test_a_paused_space_is_paused_at_the_hub_bills_nothing_and_resumes_to_ready(
    kubectl: Kubectl, hub_admin: HubSimAdmin, operator: OperatorProcess, namespace: str, approver: str
) -> None:
    kubectl("apply", "-f", "-", stdin=session_manifest("gpu", namespace, hardware="t4-small"))
    approval = {"spec": {"approval": {"hardware": "t4-small", "approvedBy": approver}}}
    kubectl(
        "patch", "ags", "gpu", "-n", namespace, "--type=merge", "-p", json.dumps(approval), f"--as={approver}"
    )
    space_id = wait_ready(kubectl, "gpu", namespace)["status"]["spaceId"]
    wait_for(lambda: hub_admin.space(space_id)["hardware"]["current"] == "t4-small", 60, "the upgrade")
    wait_ready(kubectl, "gpu", namespace)

    kubectl("patch", "ags", "gpu", "-n", namespace, "--type=merge", "-p", '{"spec":{"paused":true}}')
    paused = wait_condition_reason(kubectl, "gpu", namespace, "Ready", "Paused")
    # Ready: where its spec puts it (GitOps tools do not wait on it); the reason says it does not answer.
    assert paused["status"] == "True" and 'paused":false' in paused["message"]
    assert hub_admin.space(space_id)["stage"] == "PAUSED"
    status = (get_session(kubectl, "gpu", namespace) or {})["status"]
    assert status["phase"] == "Paused" and status["pausedBy"] == "User"
    assert status["spend"]["usdPerHour"] == 0
    assert wait_for_events(kubectl, "gpu", namespace, "Paused")["Paused"]["type"] == "Normal"
    published = connection(kubectl, "gpu", namespace)
    assert published["pausedSince"] == status["pausedSince"]
    assert published["resume"].startswith(f"kubectl patch agentsession gpu -n {namespace}")

    billed = hub_admin.space(space_id)["billing"]["seconds"]["t4-small"]
    # What the pause needs across a restart is on the object: a new operator keeps it as it was.
    operator.kill()
    operator.start()
    time.sleep(3)
    assert hub_admin.space(space_id)["billing"]["seconds"]["t4-small"] == billed  # nothing accrues
    assert hub_admin.space(space_id)["stage"] == "PAUSED"
    again = (get_session(kubectl, "gpu", namespace) or {})["status"]
    assert (again["pausedSince"], again["expiresAt"]) == (status["pausedSince"], status["expiresAt"])

    kubectl("patch", "ags", "gpu", "-n", namespace, "--type=merge", "-p", '{"spec":{"paused":false}}')
    wait_condition_reason(kubectl, "gpu", namespace, "Ready", "SandboxReady", timeout=60)
    resumed = get_session(kubectl, "gpu", namespace) or {}
    assert resumed["status"]["phase"] == "Ready" and resumed["status"]["hardware"]["current"] == "t4-small"
    assert "pausedSince" not in resumed["status"] and resumed["status"]["pausedSeconds"] >= 2
    assert hub_admin.space(space_id)["stage"] == "RUNNING"
    wait_for(
        lambda: connection(kubectl, "gpu", namespace)["pausedSince"] == "", 30, "the Secret to say resumed"
    )


def test_an_idle_session_is_paused_and_retention_deletes_it(
    kubectl: Kubectl, hub_admin: HubSimAdmin, operator: OperatorProcess, namespace: str
) -> None:
    idle = {"pauseAfterSeconds": 3, "retentionSeconds": 6}
    kubectl("apply", "-f", "-", stdin=session_manifest("quiet", namespace, idle=idle))
    session = wait_ready(kubectl, "quiet", namespace)
    uid, space_id = session["metadata"]["uid"], session["status"]["spaceId"]
    sandbox = connection(kubectl, "quiet", namespace)
    headers = {
        "Authorization": f"Bearer {READ_TOKEN}",
        "X-Sandbox-Authorization": f"Bearer {sandbox['token']}",
    }

    # An agent at work: used every half second for twice the idle time, the session is not paused.
    for _ in range(12):
        assert httpx2.post(f"{sandbox['sandboxUrl']}/api/bash", headers=headers, json={}).status_code == 200
        time.sleep(0.5)
    assert (get_session(kubectl, "quiet", namespace) or {})["spec"].get("paused") is not True

    paused = wait_condition_reason(kubectl, "quiet", namespace, "Ready", "IdlePaused", timeout=30)
    assert "kubectl patch agentsession quiet" in paused["message"]
    # The condition and spec.paused are two writes: the test may read between them.
    session = wait_for(
        lambda: (found := get_session(kubectl, "quiet", namespace)) and found["spec"].get("paused") and found,
        30,
        "spec.paused after the idle pause",
    )
    assert session["spec"]["paused"] is True and session["status"]["pausedBy"] == "Idle"
    wait_for(lambda: hub_admin.space(space_id)["stage"] == "PAUSED", 30, "the Space to be paused")
    paused_since = parse_time(session["status"]["pausedSince"])

    deleted = gone(kubectl, "quiet", namespace, 60)
    assert (deleted - paused_since).total_seconds() > 5.0, "deleted before its retention ended"
    assert spaces_of(hub_admin, uid) == []
    wait_for_events(kubectl, "quiet", namespace, "IdlePaused", "RetentionEnding", "RetentionExpired")


def test_the_idle_pause_is_written_only_onto_the_spec_it_was_decided_on(
    kubectl: Kubectl, control_plane: ControlPlane, crd: None, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pause decided on pauseAfterSeconds 600 is refused once the user set 900 (the API server checks
    metadata.generation in the same write), and written onto the spec that says 900."""
    kubectl("apply", "-f", "-", stdin=session_manifest("edited", namespace, idle={"pauseAfterSeconds": 600}))
    decided_on = (get_session(kubectl, "edited", namespace) or {})["metadata"]["generation"]
    longer = '{"spec": {"idle": {"pauseAfterSeconds": 900}}}'  # the user's edit while a pass decides
    kubectl("patch", "ags", "edited", "-n", namespace, "--type=merge", "-p", longer)
    monkeypatch.setenv("KUBECONFIG", str(control_plane.kubeconfig))

    async def pause(generation: int) -> bool:
        kube = KubeClient()
        try:
            return await kube.pause_session(namespace, "edited", generation)
        finally:
            await kube.close()

    assert asyncio.run(pause(decided_on)) is False
    assert (get_session(kubectl, "edited", namespace) or {})["spec"].get("paused") is not True
    assert asyncio.run(pause(decided_on + 1)) is True
    assert (get_session(kubectl, "edited", namespace) or {})["spec"]["paused"] is True


def test_an_expiry_typed_before_the_creation_is_refused_not_obeyed(
    kubectl: Kubectl, hub_admin: HubSimAdmin, operator: OperatorProcess, namespace: str
) -> None:
    """A past expiresAt on create is a typo (the schema cannot know now): the session says so, Stalled,
    with one Event, creates no Space and is not deleted."""
    typo = {"expiresAt": "2020-01-01T00:00:00Z"}
    kubectl("apply", "-f", "-", stdin=session_manifest("typo", namespace, lifetime=typo))
    ready = wait_condition_reason(kubectl, "typo", namespace, "Ready", "SpecInvalid")
    assert (
        "spec.lifetime.expiresAt: 2020-01-01T00:00:00Z is before the session was created" in ready["message"]
    )
    session = get_session(kubectl, "typo", namespace)
    assert session is not None and not spaces_of(hub_admin, session["metadata"]["uid"])
    stalled = next(c for c in session["status"]["conditions"] if c["type"] == "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "SpecInvalid")
    reasons = [event["reason"] for event in events_of(kubectl, "typo", namespace)]
    assert "SpaceDeleted" not in reasons and "LifetimeExpired" not in reasons
