"""A hostile walkthrough: a session editor (bound only to sandbox-operator-session-editor in one namespace,
impersonated with `kubectl --as`) tries every way to paid hardware, another team's Space or Secret, and
the operator's token; to turn its controls off with numbers and times past every bound; and to make a
session go while its Space stays. Every attempt is refused by the API server or ends in a condition,
and the Hub sees no call for it (or the Space is deleted all the same)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kopf
import pytest

from sandbox_operator import api
from sandbox_operator.api.crd import build_crd
from sandbox_operator.k8s.client import KEY_HUB_TOKEN
from sandbox_operator.registry import SESSION_FINALIZER
from sandbox_testbench.controlplane import ControlPlane, Kubectl
from sandbox_testbench.controlplane.plane import ADMIN_USER
from sandbox_testbench.dev import install_crd
from sandbox_testbench.hubsim import HubSimAdmin
from tests.support import wait_for
from tests.support.harness import (
    ADMIN_GROUP,
    SECOND_OPERATOR_TOKEN,
    TEMPLATE,
    OperatorProcess,
    condition,
    get_session,
    install_approval_policy,
    pool_manifest,
    remove_approval_policy,
    replacing,
    session_manifest,
    wait_condition_reason,
    wait_ready,
)
from tests.support.kube import events_of, wait_for_events

# Over a minute in one worker: parallel runs start it first (tests/conftest.py).
pytestmark = pytest.mark.long

EDITOR_ROLE = "sandbox-operator-session-editor"


@pytest.fixture
def mallory(kubectl: Kubectl, namespace: str, approval_policy: None) -> str:
    """mallory may edit AgentSessions in `namespace` and nothing else; the namespace holds a Secret she
    may not read and one that belongs to someone else's tooling."""
    kubectl("create", "rolebinding", "mallory-edits", "-n", namespace, f"--clusterrole={EDITOR_ROLE}",
            "--user=mallory")  # fmt: skip
    kubectl("create", "secret", "generic", "db-password", "-n", namespace, "--from-literal=password=hunter2")
    kubectl("create", "secret", "generic", "victim-sandbox", "-n", namespace, "--from-literal=token=precious")
    return namespace


def as_mallory(kubectl: Kubectl, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return kubectl(*args, "--as=mallory", stdin=stdin, check=False)


def create(kubectl: Kubectl, namespace: str, name: str, **spec: Any) -> subprocess.CompletedProcess[str]:
    return as_mallory(kubectl, "apply", "-f", "-", stdin=session_manifest(name, namespace, **spec))


def refused(result: subprocess.CompletedProcess[str], said: str) -> None:
    assert result.returncode != 0, f"admitted: {result.stdout}"
    assert said in result.stderr, result.stderr


def hub_calls_naming(hub_admin: HubSimAdmin, *needles: str) -> list[str]:
    return [
        f"{call['method']} {call['path']}"
        for call in hub_admin.calls()
        if any(needle in call["path"] for needle in needles)
    ]


def paid_hardware_calls(hub_admin: HubSimAdmin) -> list[str]:
    return [
        call["path"]
        for call in hub_admin.calls()
        if call["route"] == "hardware" and call.get("flavor") not in (None, "cpu-basic")
    ]


def test_a_session_editor_finds_no_way_to_paid_hardware(
    kubectl: Kubectl, hub_admin: HubSimAdmin, operator: OperatorProcess, mallory: str
) -> None:
    hub_admin.clear_calls()
    attempts = {
        "self-approval": (
            {"approval": {"hardware": "a100-large", "approvedBy": "mallory"}},
            'user "mallory" may not approve hardware a100-large',
        ),
        "spoofed approver": (
            {"approval": {"hardware": "a100-large", "approvedBy": "alice"}},
            'approvedBy must be your own username "mallory"',
        ),
        "standing budget": (
            {"approval": {"maxUsdPerHour": 100, "approvedBy": "mallory"}},
            'user "mallory" may not grant a standing hardware budget',
        ),
        "approver groups": (
            {
                "approval": {
                    "hardware": "a100-large",
                    "approvedBy": "mallory",
                    "approverGroups": ["system:masters"],
                }
            },
            "approverGroups may name only groups you are in: system:masters",
        ),
    }
    for name, (spec, said) in attempts.items():
        refused(create(kubectl, mallory, name.replace(" ", "-"), hardware="a100-large", **spec), said)

    # The same through a patch of a running session.
    assert create(kubectl, mallory, "gpu", hardware="a100-large").returncode == 0
    space_id = wait_ready(kubectl, "gpu", mallory)["status"]["spaceId"]
    for spec, said in attempts.values():
        patch = json.dumps({"spec": spec})
        refused(as_mallory(kubectl, "patch", "ags", "gpu", "-n", mallory, "--type=merge", "-p", patch), said)

    # Writing status (approvedBy, hardware) is not hers to do; and the spec does not carry it.
    status = json.dumps({"status": {"approvedBy": "alice", "hardware": {"requested": "a100-large"}}})
    refused(
        as_mallory(
            kubectl,
            "patch",
            "ags",
            "gpu",
            "-n",
            mallory,
            "--subresource=status",
            "--type=merge",
            "-p",
            status,
        ),
        "forbidden",
    )
    session = get_session(kubectl, "gpu", mallory)
    assert session is not None and "approval" not in session["spec"]
    approved = condition(session, "HardwareApproved")
    assert approved is not None and approved["reason"] == "AwaitingApproval"
    assert hub_admin.space(space_id)["hardware"]["current"] == "cpu-basic"
    assert paid_hardware_calls(hub_admin) == []


def test_without_the_policy_a_session_editor_still_gets_no_paid_hardware_and_no_secrets(
    control_plane: ControlPlane,
    kubectl: Kubectl,
    hub_admin: HubSimAdmin,
    operator: OperatorProcess,
    mallory: str,
) -> None:
    """With only the CRD (the policy deleted), what the API server no longer checks, the operator refuses."""
    hub_admin.clear_calls()
    remove_approval_policy(control_plane)
    try:
        attempts = iter(range(1_000_000))

        def admitted() -> bool:
            approval = {"hardware": "a100-large", "approvedBy": "alice", "reason": str(next(attempts))}
            return create(kubectl, mallory, "spoof", hardware="a100-large", approval=approval).returncode == 0

        wait_for(admitted, 30, "the spoofed approval to be admitted without the policy")
        refusal = wait_condition_reason(kubectl, "spoof", mallory, "HardwareApproved", "ApprovalNotEnforced")
        assert "kubectl apply -f deploy/approval-policy.yaml" in refusal["message"]

        secret = {"name": "DB", "secretKeyRef": {"name": "db-password", "key": "password"}}
        assert create(kubectl, mallory, "leak", secrets=[secret]).returncode == 0
        leak = wait_condition_reason(kubectl, "leak", mallory, "Ready", "SecretsNotEnforced")
        assert "Secrets it names" in leak["message"]
        session = get_session(kubectl, "leak", mallory)
        assert session is not None and "spaceId" not in session["status"]
        wait_ready(kubectl, "spoof", mallory)  # served on free hardware meanwhile
        assert paid_hardware_calls(hub_admin) == []
        assert not any("hunter2" in json.dumps(space.get("secrets", {})) for space in hub_admin.spaces())
    finally:
        install_approval_policy(control_plane)


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ({"template": "other-team/private-model"}, "TemplateNotAllowed"),
        ({"owner": "other-team"}, "OwnerNotAllowed"),
        ({"private": False}, "PublicSpaceNotAllowed"),
    ],
)
def test_the_operators_token_is_not_lent_to_another_teams_space(
    kubectl: Kubectl,
    hub_admin: HubSimAdmin,
    operator: OperatorProcess,
    mallory: str,
    spec: dict[str, Any],
    reason: str,
) -> None:
    hub_admin.clear_calls()
    assert create(kubectl, mallory, "reach", **spec).returncode == 0
    refusal = wait_condition_reason(kubectl, "reach", mallory, "Ready", reason)
    assert refusal["status"] == "False"
    session = get_session(kubectl, "reach", mallory)
    assert session is not None and "spaceId" not in session["status"]  # no intent recorded
    uid = session["metadata"]["uid"]
    assert hub_calls_naming(hub_admin, uid, "other-team") == []  # and no Hub call for it


def test_owner_template_and_visibility_cannot_change_after_creation(
    kubectl: Kubectl, operator: OperatorProcess, mallory: str
) -> None:
    assert create(kubectl, mallory, "fixed").returncode == 0
    for field, value in (
        ("template", "other-team/private-model"),
        ("owner", "other-team"),
        ("private", False),
    ):
        patch = json.dumps({"spec": {field: value}})
        result = as_mallory(kubectl, "patch", "ags", "fixed", "-n", mallory, "--type=merge", "-p", patch)
        refused(result, f"spec.{field} is immutable")
    pinned = json.dumps({"spec": {"template": TEMPLATE}})  # adding one where none was set changes it too
    refused(
        as_mallory(kubectl, "patch", "ags", "fixed", "-n", mallory, "--type=merge", "-p", pinned), "immutable"
    )


def test_a_session_may_name_only_secrets_its_author_may_read(
    kubectl: Kubectl, hub_admin: HubSimAdmin, operator: OperatorProcess, mallory: str
) -> None:
    secret = {"name": "DB", "secretKeyRef": {"name": "db-password", "key": "password"}}
    refused(
        create(kubectl, mallory, "leak", secrets=[secret]),
        'user "mallory" may not get every Secret the session names (db-password) in namespace',
    )
    assert create(kubectl, mallory, "leak").returncode == 0
    patch = json.dumps({"spec": {"secrets": [secret]}})
    refused(
        as_mallory(kubectl, "patch", "ags", "leak", "-n", mallory, "--type=merge", "-p", patch), "db-password"
    )

    # Someone who may read it may name it; the Space gets it.
    kubectl("create", "role", "read-db", "-n", mallory, "--verb=get", "--resource=secrets",
            "--resource-name=db-password")  # fmt: skip
    kubectl("create", "rolebinding", "trent-reads-db", "-n", mallory, "--role=read-db", "--user=trent")
    kubectl(
        "create", "rolebinding", "trent-edits", "-n", mallory, f"--clusterrole={EDITOR_ROLE}", "--user=trent"
    )
    kubectl("apply", "-f", "-", "--as=trent", stdin=session_manifest("trusted", mallory, secrets=[secret]))
    space_id = wait_ready(kubectl, "trusted", mallory)["status"]["spaceId"]
    assert hub_admin.space(space_id)["secrets"]["DB"] == "hunter2"

    # An unchanged reference is not checked again: mallory may still edit that session.
    retitled = json.dumps({"spec": {"deletionPolicy": "Delete", "hardware": "cpu-basic"}})
    as_mallory(
        kubectl, "patch", "ags", "trusted", "-n", mallory, "--type=merge", "-p", retitled
    ).check_returncode()


def test_the_connection_secret_never_overwrites_a_secret_the_session_does_not_own(
    kubectl: Kubectl, hub_admin: HubSimAdmin, operator: OperatorProcess, mallory: str
) -> None:
    hub_admin.clear_calls()
    before = kubectl.json("get", "secret", "victim-sandbox", "-n", mallory)
    assert create(kubectl, mallory, "victim").returncode == 0
    conflict = wait_condition_reason(kubectl, "victim", mallory, "Ready", "ConnectionSecretConflict")
    assert (
        f"Secret {mallory}/victim-sandbox exists and does not belong to this session" in conflict["message"]
    )
    after = kubectl.json("get", "secret", "victim-sandbox", "-n", mallory)
    assert after["data"] == before["data"] and base64.b64decode(after["data"]["token"]) == b"precious"
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    session = get_session(kubectl, "victim", mallory)
    assert session is not None and "spaceId" not in session["status"]
    assert hub_calls_naming(hub_admin, session["metadata"]["uid"]) == []

    # Once the Secret is out of the way, the session proceeds.
    kubectl("delete", "secret", "victim-sandbox", "-n", mallory)
    wait_ready(kubectl, "victim", mallory, timeout=120)


# Numbers and times past every bound -----------------------------------------------------------------

SPOOFED_APPROVAL = {"hardware": "a10g-small", "approvedBy": "mallory"}
#: What mallory writes to turn the operator's controls off, and the field the API server names.
ABSURD = {
    "ttl": ({"lifetime": {"ttlSeconds": 10**12}}, "spec.lifetime.ttlSeconds"),
    "retention": ({"paused": True, "idle": {"retentionSeconds": 10**12}}, "spec.idle.retentionSeconds"),
    "pause-after": ({"idle": {"pauseAfterSeconds": 10**12}}, "spec.idle.pauseAfterSeconds"),
    "sleep-time": ({"sleepTimeSeconds": 10**12}, "spec.sleepTimeSeconds"),
    "offset-24": ({"lifetime": {"expiresAt": "2030-01-01T00:00:00+24:00"}}, "spec.lifetime.expiresAt"),
    "offset-60": ({"lifetime": {"expiresAt": "2030-01-01T00:00:00+23:60"}}, "spec.lifetime.expiresAt"),
    "year-0": ({"lifetime": {"expiresAt": "0000-01-01T00:00:00Z"}}, "spec.lifetime.expiresAt"),
    "approval-expiry": (
        {
            "hardware": "a10g-small",
            "approval": {**SPOOFED_APPROVAL, "expiresAt": "2030-01-01T00:00:00+24:00"},
        },
        "spec.approval.expiresAt",
    ),
}


def test_durations_and_times_past_every_bound_are_refused_naming_the_field(
    kubectl: Kubectl, mallory: str, namespace: str
) -> None:
    assert create(kubectl, mallory, "bounded").returncode == 0
    for name, (spec, field) in ABSURD.items():
        refused(create(kubectl, mallory, f"absurd-{name}", **spec), field)
        patch = json.dumps({"spec": spec})
        refused(
            as_mallory(kubectl, "patch", "ags", "bounded", "-n", mallory, "--type=merge", "-p", patch), field
        )
    # A pool's counts too (pools are their platform team's: the admin writes them).
    pool = kubectl("apply", "-f", "-", stdin=pool_manifest("huge", namespace, replicas=10**9), check=False)
    refused(pool, "spec.replicas")
    kubectl("apply", "-f", "-", stdin=pool_manifest("small", namespace, replicas=0))
    refused(
        kubectl("scale", "agsp", "small", "-n", namespace, "--replicas=1000000000", check=False), "replicas"
    )


def handler_progress_keys(handler: str) -> list[str]:
    """Where kopf kept a handler's progress in annotations: before (this project's prefix) and by default."""
    storages = (kopf.AnnotationsProgressStorage(prefix=api.GROUP), kopf.AnnotationsProgressStorage())
    return [key for storage in storages for key in storage.make_keys(handler)]


def test_forged_handler_progress_and_a_dropped_finalizer_do_not_skip_the_spaces_deletion(
    kubectl: Kubectl, hub_admin: HubSimAdmin, operator: OperatorProcess, mallory: str
) -> None:
    assert create(kubectl, mallory, "forged").returncode == 0
    space_id = wait_ready(kubectl, "forged", mallory)["status"]["spaceId"]
    at = "2026-01-01T00:00:00.000000+00:00"
    done = json.dumps(
        {"started": at, "stopped": at, "purpose": "delete", "retries": 1, "success": True, "failure": False}
    )
    # Under the finalizer's own name: a forgery under a name kopf does not read proves nothing.
    forged = [f"{key}={done}" for key in handler_progress_keys(SESSION_FINALIZER)]
    as_mallory(kubectl, "annotate", "ags", "forged", "-n", mallory, *forged).check_returncode()
    drop = '[{"op":"remove","path":"/metadata/finalizers"}]'
    said = f"may not remove the finalizer {api.FINALIZER}"
    refused(as_mallory(kubectl, "patch", "ags", "forged", "-n", mallory, "--type=json", "-p", drop), said)

    as_mallory(kubectl, "delete", "ags", "forged", "-n", mallory, "--wait=false").check_returncode()
    wait_for(lambda: get_session(kubectl, "forged", mallory) is None, 60, "the session to go")
    assert space_id not in [space["id"] for space in hub_admin.spaces()]  # no sweeper runs here


@pytest.fixture
def older_crd(control_plane: ControlPlane, kubectl: Kubectl) -> Iterator[None]:
    """The AgentSession CRD as an operator without the timestamp patterns installed it: this operator
    must survive what that admits. The current one is back afterwards."""
    crd = build_crd()

    def unpatterned(node: Any) -> Any:
        if isinstance(node, dict):
            bare = {k: unpatterned(v) for k, v in node.items()}
            return {
                k: v for k, v in bare.items() if not (k == "pattern" and bare.get("format") == "date-time")
            }
        return [unpatterned(item) for item in node] if isinstance(node, list) else node

    kubectl("apply", "-f", "-", stdin=json.dumps(unpatterned(crd)))
    try:
        yield
    finally:
        install_crd(control_plane)


def on_hardware(hub_admin: HubSimAdmin, space_id: str, flavor: str) -> bool:
    return bool(hub_admin.space(space_id)["hardware"]["current"] == flavor)


def test_a_spec_the_operator_cannot_read_stalls_gives_up_the_gpu_and_is_still_deleted(
    kubectl: Kubectl, hub_admin: HubSimAdmin, operator: OperatorProcess, mallory: str, older_crd: None
) -> None:
    assert create(kubectl, mallory, "odd", hardware="a10g-small").returncode == 0
    space_id = wait_ready(kubectl, "odd", mallory)["status"]["spaceId"]
    approval = {"hardware": "a10g-small", "approvedBy": ADMIN_USER, "approverGroups": [ADMIN_GROUP]}
    kubectl(
        "patch",
        "ags",
        "odd",
        "-n",
        mallory,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"approval": approval}}),
    )

    def paying() -> bool:
        session = get_session(kubectl, "odd", mallory) or {}
        return on_hardware(hub_admin, space_id, "a10g-small") and "paidPeriod" in session.get("status", {})

    wait_for(paying, 60, "the approved GPU, its paid stretch recorded")

    # What the older CRD admits and no datetime holds.
    unreadable = json.dumps({"spec": {"lifetime": {"expiresAt": "2030-01-01T00:00:00+24:00"}}})
    patch = ("patch", "ags", "odd", "-n", mallory, "--type=merge", "-p", unreadable)
    wait_for(lambda: as_mallory(kubectl, *patch).returncode == 0, 30, "the older CRD to admit it")
    generation = get_session(kubectl, "odd", mallory)["metadata"]["generation"]  # type: ignore[index]
    stalled = wait_condition_reason(kubectl, "odd", mallory, "Stalled", "SpecInvalid")
    assert stalled["status"] == "True" and "spec.lifetime.expiresAt" in stalled["message"]
    wait_for(lambda: on_hardware(hub_admin, space_id, "cpu-basic"), 60, "the GPU given up")
    session = get_session(kubectl, "odd", mallory)
    assert session is not None and session["status"]["observedGeneration"] == generation
    assert condition(session, "Ready")["reason"] == "SpecInvalid"  # type: ignore[index]
    assert [r["endedBy"] for r in session["status"]["receipts"]] == ["SpecInvalid"]
    wait_for_events(kubectl, "odd", mallory, "SpecInvalid", "HardwareReceipt")

    # The next change is read at once: fixed, the session runs again (its approval still stands).
    as_mallory(kubectl, "patch", "ags", "odd", "-n", mallory, "--type=merge", "-p",
               '{"spec":{"lifetime":null}}').check_returncode()  # fmt: skip

    def served_again() -> bool:
        session = get_session(kubectl, "odd", mallory) or {}
        moved = session.get("status", {}).get("observedGeneration") == generation + 1
        stalled_now = condition(session, "Stalled") or {}
        return moved and stalled_now.get("status") == "False" and paying()

    wait_for(served_again, 60, "the fixed spec read, the GPU again")

    # Unreadable again while the Hub refuses to move the Space: deleting it still deletes the Space,
    # and the receipt of its paid stretch is written first.
    hub_admin.add_fault("hardware", 503)
    as_mallory(kubectl, *patch).check_returncode()
    wait_condition_reason(kubectl, "odd", mallory, "Ready", "HubUnavailable")
    as_mallory(kubectl, "delete", "ags", "odd", "-n", mallory, "--wait=false").check_returncode()
    wait_for(lambda: get_session(kubectl, "odd", mallory) is None, 60, "the session to go")
    assert space_id not in [space["id"] for space in hub_admin.spaces()]
    receipts = [e["message"] for e in events_of(kubectl, "odd", mallory) if e["reason"] == "HardwareReceipt"]
    assert any("SessionDeleted" in message for message in receipts), receipts


def test_the_sweeper_lists_no_owner_the_allow_list_does_not_name(
    kubectl: Kubectl, hub_admin: HubSimAdmin, operator: OperatorProcess, mallory: str
) -> None:
    """Sessions naming owners the allow-list refuses get no Space, and the sweeper does not list those
    owners either: a tenant cannot make every pass list Hub namespaces of its choosing."""
    disallowed = [f"victim-org-{n}" for n in range(3)]
    for n, owner in enumerate(disallowed):
        assert create(kubectl, mallory, f"elsewhere-{n}", owner=owner).returncode == 0
    assert create(kubectl, mallory, "allowed", owner="someone-else").returncode == 0
    wait_condition_reason(kubectl, "elsewhere-0", mallory, "Ready", "OwnerNotAllowed")
    hub_admin.clear_calls()

    subprocess.run(
        [sys.executable, "-m", "sandbox_operator", "sweep", "--dry-run"],
        env=operator.env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    listed = [call["query"] for call in hub_admin.calls() if call["route"] == "list_spaces"]
    assert any("author=someone-else" in query for query in listed), listed
    assert not [query for query in listed if "victim-org" in query]


def test_a_session_with_metadata_as_large_as_the_api_server_takes_is_served_and_deleted(
    kubectl: Kubectl, hub_admin: HubSimAdmin, operator: OperatorProcess, mallory: str
) -> None:
    """250 KB of annotations (near the API server's 256 KB limit) and a heap of labels: the operator,
    which keeps none of it, serves the session, changes it and deletes it as any other, and leaves the
    tenant's metadata as written."""
    blob = "x" * 250_000
    manifest = json.loads(session_manifest("heavy", mallory))
    manifest["metadata"]["annotations"] = {"tenant.example/blob": blob}
    manifest["metadata"]["labels"] = {f"tenant.example/l{n}": "v" for n in range(50)}
    as_mallory(kubectl, "create", "-f", "-", stdin=json.dumps(manifest)).check_returncode()
    space_id = wait_ready(kubectl, "heavy", mallory)["status"]["spaceId"]
    as_mallory(kubectl, "patch", "ags", "heavy", "-n", mallory, "--type=merge", "-p",
               '{"spec":{"paused":true}}').check_returncode()  # fmt: skip
    wait_condition_reason(kubectl, "heavy", mallory, "Ready", "Paused")
    session = get_session(kubectl, "heavy", mallory)
    assert session is not None and session["metadata"]["annotations"]["tenant.example/blob"] == blob
    assert len(session["metadata"]["labels"]) == 50

    as_mallory(kubectl, "delete", "ags", "heavy", "-n", mallory, "--wait=false").check_returncode()
    wait_for(lambda: get_session(kubectl, "heavy", mallory) is None, 60, "the session to go")
    assert space_id not in [space["id"] for space in hub_admin.spaces()]


#: The Secret the platform puts in each team's namespace, with that team's own Hub read token.
TEAM_READ_TOKEN_SECRET = "team-hub-read"


@pytest.fixture
def per_team_tokens(operator_process: OperatorProcess, tmp_path: Path) -> Iterator[OperatorProcess]:
    """The operator configured for a read token per namespace, in place of the shared one."""
    settings = {"SANDBOX_OPERATOR_HUB_READ_TOKEN_NAMESPACE_SECRET": TEAM_READ_TOKEN_SECRET}
    with replacing(operator_process, tmp_path, **settings) as own:
        yield own


def hub_token_published(kubectl: Kubectl, session: str, namespace: str) -> str:
    secret = kubectl.json("get", "secret", f"{session}-sandbox", "-n", namespace)
    return base64.b64decode(secret["data"].get(KEY_HUB_TOKEN, "")).decode()


def test_each_team_gets_its_own_read_token_and_never_the_shared_one(
    kubectl: Kubectl, per_team_tokens: OperatorProcess, mallory: str
) -> None:
    """mallory's namespace holds its team's read token: her agent pods get that one. A team whose
    namespace holds none gets none (AgentAccess=False), not the operator's shared one, which reads
    every team's Spaces."""
    kubectl("create", "secret", "generic", TEAM_READ_TOKEN_SECRET, "-n", mallory,
            f"--from-literal=token={SECOND_OPERATOR_TOKEN}")  # fmt: skip
    assert create(kubectl, mallory, "own-token").returncode == 0
    wait_ready(kubectl, "own-token", mallory)
    assert hub_token_published(kubectl, "own-token", mallory) == SECOND_OPERATOR_TOKEN

    other = f"team-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", other)
    try:
        kubectl("create", "rolebinding", "mallory-edits", "-n", other, f"--clusterrole={EDITOR_ROLE}",
                "--user=mallory")  # fmt: skip
        assert create(kubectl, other, "no-token").returncode == 0
        access = wait_condition_reason(kubectl, "no-token", other, "AgentAccess", "ReadTokenSecretNotFound")
        assert access["status"] == "False" and f"{other}/{TEAM_READ_TOKEN_SECRET}" in access["message"]
        connection = ("get", "secret", "no-token-sandbox", "-n", other)
        wait_for(lambda: kubectl(*connection, check=False).returncode == 0, 60, "the connection Secret")
        assert hub_token_published(kubectl, "no-token", other) == ""
    finally:
        kubectl("delete", "namespace", other, "--wait=false")
