"""Paid hardware only with an approval the API server enforces: real RBAC, real admission, real users."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox_operator.config.settings import OperatorConfig
from sandbox_testbench.controlplane import ControlPlane, Kubectl
from sandbox_testbench.hubsim import HubSimAdmin, HubSimConfig, HubSimServer
from tests.support import wait_for
from tests.support.harness import (
    OperatorProcess,
    condition,
    get_session,
    install_approval_policy,
    readme_block,
    remove_approval_policy,
    replacing,
    run_shell,
    session_manifest,
    wait_condition_reason,
    wait_ready,
)

# Over a minute in one worker: parallel runs start it first (tests/conftest.py).
pytestmark = pytest.mark.long

FLAVOR_ROLE = "sandbox-operator-approver-t4-small"


@pytest.fixture(scope="module")
def approvers(kubectl: Kubectl, crd: None) -> None:
    """alice approves every flavor and tina t4-small only, in every namespace."""
    kubectl(
        "create", "clusterrolebinding", "test-alice-approves", "--clusterrole=sandbox-operator-approver",
        "--user=alice",
    )  # fmt: skip
    kubectl(
        "create", "clusterrolebinding", "test-tina-approves-t4", f"--clusterrole={FLAVOR_ROLE}", "--user=tina"
    )


@pytest.fixture
def team(kubectl: Kubectl, namespace: str, approval_policy: None, approvers: None) -> str:
    """bob (a session user), alice (approves all) and tina (approves t4-small) may edit sessions here."""
    for user in ("bob", "alice", "tina"):
        kubectl(
            "create", "rolebinding", f"{user}-edits", "--clusterrole=sandbox-operator-session-editor",
            f"--user={user}", "-n", namespace,
        )  # fmt: skip
    return namespace


def patch_as(
    kubectl: Kubectl, user: str, name: str, namespace: str, patch: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """`kubectl patch` of a session, impersonating `user` (the admin may impersonate)."""
    return kubectl(
        "patch", "ags", name, "-n", namespace, "--type=merge", "-p", patch, f"--as={user}", check=check
    )


def approve_patch(hardware: str | None, approved_by: str, **extra: object) -> str:
    # hardware is always sent, null included: a merge patch would otherwise keep the old flavor.
    approval: dict[str, object] = {"hardware": hardware, "approvedBy": approved_by, **extra}
    return json.dumps({"spec": {"approval": approval}})


def paid_hardware_calls(hub_admin: HubSimAdmin, space_id: str) -> list[str]:
    return [
        call["flavor"]
        for call in hub_admin.calls()
        if call["route"] == "hardware"
        and space_id in call["path"]
        and call["flavor"] not in (None, "cpu-basic")
    ]


def run_cli(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    return subprocess.run(
        [sys.executable, "-m", "sandbox_operator", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture
def alice_kubeconfig(control_plane: ControlPlane, tmp_path: Path) -> Iterator[Path]:
    yield control_plane.write_user_kubeconfig(tmp_path / "alice.kubeconfig", "alice")


def test_session_user_cannot_approve_and_nothing_is_spent(
    kubectl: Kubectl, hub_admin: HubSimAdmin, operator: OperatorProcess, team: str
) -> None:
    kubectl("apply", "-f", "-", "--as=bob", stdin=session_manifest("s1", team, hardware="a10g-small"))
    session = wait_ready(kubectl, "s1", team)  # the sandbox serves on cpu-basic meanwhile
    approved = condition(session, "HardwareApproved")
    assert approved is not None and (approved["status"], approved["reason"]) == ("False", "AwaitingApproval")
    pending = session["status"]["pendingApproval"]
    assert (pending["hardware"], pending["usdPerHour"]) == ("a10g-small", 1.0) and pending["requestedTime"]
    assert session["status"]["hardware"]["current"] == "cpu-basic"

    result = patch_as(kubectl, "bob", "s1", team, approve_patch("a10g-small", "bob"), check=False)
    assert result.returncode != 0
    assert 'user "bob" may not approve hardware a10g-small' in result.stderr
    session = get_session(kubectl, "s1", team)
    assert session is not None and "approval" not in session["spec"]
    assert paid_hardware_calls(hub_admin, session["status"]["spaceId"]) == []


def test_approved_by_must_be_the_approver_themself(
    kubectl: Kubectl, operator: OperatorProcess, team: str
) -> None:
    kubectl("apply", "-f", "-", "--as=bob", stdin=session_manifest("s2", team, hardware="a10g-small"))
    result = patch_as(kubectl, "alice", "s2", team, approve_patch("a10g-small", "the-boss"), check=False)
    assert result.returncode != 0
    assert 'approvedBy must be your own username "alice"' in result.stderr


def test_per_flavor_role_admits_only_its_flavor(
    kubectl: Kubectl, operator: OperatorProcess, team: str
) -> None:
    kubectl("apply", "-f", "-", "--as=bob", stdin=session_manifest("s3", team, hardware="a10g-small"))
    refused = patch_as(kubectl, "tina", "s3", team, approve_patch("a10g-small", "tina"), check=False)
    assert refused.returncode != 0 and "may not approve hardware a10g-small" in refused.stderr

    patch_as(kubectl, "bob", "s3", team, '{"spec":{"hardware":"t4-small"}}')
    patch_as(kubectl, "tina", "s3", team, approve_patch("t4-small", "tina"))
    budget = patch_as(kubectl, "tina", "s3", team, approve_patch(None, "tina", maxUsdPerHour=1), check=False)
    assert budget.returncode != 0 and "may not grant a standing hardware budget" in budget.stderr


def test_approved_upgrade_runs_on_the_flavor_and_downgrade_needs_no_approval(
    kubectl: Kubectl, hub_admin: HubSimAdmin, operator: OperatorProcess, team: str, alice_kubeconfig: Path
) -> None:
    kubectl("apply", "-f", "-", "--as=bob", stdin=session_manifest("s4", team, hardware="a10g-small"))
    space_id = wait_ready(kubectl, "s4", team)["status"]["spaceId"]

    unnamed = run_cli(alice_kubeconfig, "approve", "s4", "-n", team)  # no terminal to confirm it on
    assert unnamed.returncode == 1 and "--hardware a10g-small" in unnamed.stderr, unnamed.stderr
    cli = run_cli(
        alice_kubeconfig, "approve", "s4", "-n", team, "--hardware", "a10g-small", "--reason", "run"
    )
    assert cli.returncode == 0, cli.stderr
    assert "approved a10g-small ($1.00/h)" in cli.stdout and "as alice" in cli.stdout

    def upgraded() -> dict[str, object] | None:
        session = get_session(kubectl, "s4", team)
        ready = condition(session, "Ready")
        on_flavor = (
            session is not None and session["status"].get("hardware", {}).get("current") == "a10g-small"
        )
        return session if on_flavor and ready is not None and ready["status"] == "True" else None

    session = wait_for(upgraded, 60, "the Space to run on a10g-small")
    assert session["status"]["approvedBy"] == "alice"  # type: ignore[index]
    assert hub_admin.space(space_id)["hardware"]["current"] == "a10g-small"
    events = kubectl.json("get", "events", "-n", team, "--field-selector", "involvedObject.name=s4")["items"]
    assert any(e["reason"] == "Approved" and "alice" in e["message"] for e in events)

    patch_as(kubectl, "bob", "s4", team, '{"spec":{"hardware":"cpu-basic"}}')
    wait_for(lambda: hub_admin.space(space_id)["hardware"]["current"] == "cpu-basic", 60, "the downgrade")
    wait_ready(kubectl, "s4", team)


def test_another_paid_flavor_needs_a_new_approval(
    kubectl: Kubectl, hub_admin: HubSimAdmin, operator: OperatorProcess, team: str
) -> None:
    kubectl("apply", "-f", "-", "--as=bob", stdin=session_manifest("s5", team, hardware="t4-small"))
    space_id = wait_ready(kubectl, "s5", team)["status"]["spaceId"]
    patch_as(kubectl, "alice", "s5", team, approve_patch("t4-small", "alice"))
    wait_for(
        lambda: hub_admin.space(space_id)["hardware"]["current"] == "t4-small", 60, "the t4-small upgrade"
    )

    patch_as(kubectl, "bob", "s5", team, '{"spec":{"hardware":"a100-large"}}')

    def awaiting_a100() -> dict[str, Any] | None:
        # The Hub may show t4-small before the status says it was approved: wait for the new request's.
        found = condition(get_session(kubectl, "s5", team), "HardwareApproved")
        wanted = (
            found is not None and found["reason"] == "AwaitingApproval" and "a100-large" in found["message"]
        )
        return found if wanted else None

    approved = wait_for(awaiting_a100, 60, "HardwareApproved AwaitingApproval for a100-large")
    assert "approve a100-large" in approved["message"]
    wait_for(
        lambda: hub_admin.space(space_id)["hardware"]["current"] == "cpu-basic",
        60,
        "the fallback to cpu-basic",
    )
    assert "a100-large" not in paid_hardware_calls(hub_admin, space_id)


def test_spent_budget_brings_the_space_back_to_cpu_basic(
    kubectl: Kubectl, hub_admin: HubSimAdmin, operator: OperatorProcess, team: str
) -> None:
    kubectl("apply", "-f", "-", "--as=bob", stdin=session_manifest("s6", team, hardware="a10g-small"))
    space_id = wait_ready(kubectl, "s6", team)["status"]["spaceId"]
    # $0.002 at $1/h is 7.2 seconds of a10g-small.
    patch = approve_patch("a10g-small", "alice", budgetUsd=0.002)
    patch_as(kubectl, "alice", "s6", team, patch)
    wait_for(lambda: hub_admin.space(space_id)["hardware"]["current"] == "a10g-small", 60, "the upgrade")

    exhausted = wait_condition_reason(kubectl, "s6", team, "BudgetExhausted", "BudgetSpent", timeout=90)
    assert exhausted["status"] == "True"
    wait_for(
        lambda: hub_admin.space(space_id)["hardware"]["current"] == "cpu-basic", 60, "the return to cpu-basic"
    )
    session = wait_ready(kubectl, "s6", team)
    spend = session["status"]["spend"]
    assert spend["estimatedUsd"] + spend["switchBackUsd"] >= 0.002  # spent, the switch back's bill counted
    events = kubectl.json("get", "events", "-n", team, "--field-selector", "involvedObject.name=s6")["items"]
    assert any(e["reason"] == "BudgetSpent" and e["type"] == "Warning" for e in events)


@pytest.mark.parametrize(
    ("approval", "field"),
    [
        ({"hardware": "a10g-small"}, "spec.approval.approvedBy"),
        ({"hardware": "a10g-small", "approvedBy": "alice", "budgetUsd": -5}, "spec.approval.budgetUsd"),
        ({"hardware": "a10g-small", "approvedBy": "alice", "budgetUsd": 1e9}, "spec.approval.budgetUsd"),
        ({"hardware": "h100-mega", "approvedBy": "alice"}, "spec.approval.hardware"),
        ({"approvedBy": "alice"}, "an approval names a hardware flavor or grants a maxUsdPerHour budget"),
    ],
)
def test_bad_approvals_are_rejected_and_lose_nothing(
    kubectl: Kubectl, team: str, approval: dict[str, object], field: str
) -> None:
    kubectl("apply", "-f", "-", "--as=bob", stdin=session_manifest("s7", team, hardware="a10g-small"))
    before = get_session(kubectl, "s7", team)
    result = patch_as(kubectl, "alice", "s7", team, json.dumps({"spec": {"approval": approval}}), check=False)
    assert result.returncode != 0 and field in result.stderr, result.stderr
    after = get_session(kubectl, "s7", team)
    assert before is not None and after is not None and after["spec"] == before["spec"]


def test_approve_cli_refuses_a_flavor_that_is_not_requested(
    kubectl: Kubectl, team: str, alice_kubeconfig: Path
) -> None:
    kubectl("apply", "-f", "-", "--as=bob", stdin=session_manifest("s8", team, hardware="a10g-small"))
    cli = run_cli(alice_kubeconfig, "approve", "s8", "-n", team, "--hardware", "a100-large")
    assert cli.returncode == 1
    assert "requests a10g-small, not a100-large" in cli.stderr


def test_an_approval_grants_only_the_flavor_the_approver_saw(
    kubectl: Kubectl, hub_admin: HubSimAdmin, operator: OperatorProcess, team: str, alice_kubeconfig: Path
) -> None:
    """alice sees t4-small ($0.40/h) waiting; bob switches to a100x8 ($20/h) before she approves. Her
    approval of what she saw is refused, by the command and by the API server (as when bob's switch
    lands between the command's read and its write); approving without naming a flavor is refused too;
    and bob's switch after her approval is not approved by it."""
    kubectl("apply", "-f", "-", "--as=bob", stdin=session_manifest("s12", team, hardware="t4-small"))
    space_id = wait_ready(kubectl, "s12", team)["status"]["spaceId"]
    seen = run_cli(alice_kubeconfig, "approvals", "-n", team)
    assert seen.returncode == 0 and "t4-small" in seen.stdout and "0.40" in seen.stdout, seen.stdout

    patch_as(kubectl, "bob", "s12", team, '{"spec":{"hardware":"a100x8"}}')
    named = run_cli(alice_kubeconfig, "approve", "s12", "-n", team, "--hardware", "t4-small")
    assert named.returncode == 1 and "requests a100x8, not t4-small" in named.stderr, named.stderr
    unnamed = run_cli(alice_kubeconfig, "approve", "s12", "-n", team)
    assert unnamed.returncode == 1 and "--hardware a100x8" in unnamed.stderr, unnamed.stderr
    raced = patch_as(kubectl, "alice", "s12", team, approve_patch("t4-small", "alice"), check=False)
    assert raced.returncode != 0
    assert (
        "spec.approval.hardware t4-small is not the flavor the session requests now (a100x8)" in raced.stderr
    )
    session = get_session(kubectl, "s12", team)
    assert session is not None and "approval" not in session["spec"]

    # Approved as seen, then switched: the approval names t4-small, so a100x8 waits for its own.
    patch_as(kubectl, "bob", "s12", team, '{"spec":{"hardware":"t4-small"}}')
    approved = run_cli(alice_kubeconfig, "approve", "s12", "-n", team, "--hardware", "t4-small")
    assert approved.returncode == 0 and "approved t4-small ($0.40/h)" in approved.stdout, approved.stderr
    patch_as(kubectl, "bob", "s12", team, '{"spec":{"hardware":"a100x8"}}')

    def judged_a100x8() -> dict[str, Any] | None:
        found = condition(get_session(kubectl, "s12", team), "HardwareApproved")
        return found if found and "spec.hardware is a100x8" in found["message"] else None

    waiting = wait_for(judged_a100x8, 60, "the a100x8 request judged")
    assert waiting["reason"] == "AwaitingApproval" and "the approval names t4-small" in waiting["message"]
    assert "a100x8" not in paid_hardware_calls(hub_admin, space_id)


def upgraded_to(hub_admin: HubSimAdmin, space_id: str, flavor: str) -> bool:
    return bool(hub_admin.space(space_id)["hardware"]["current"] == flavor)


def test_without_the_policy_a_self_approval_is_never_acted_on(
    control_plane: ControlPlane,
    kubectl: Kubectl,
    hub_admin: HubSimAdmin,
    operator: OperatorProcess,
    team: str,
) -> None:
    """Only the CRD installed (the policy removed): approvedBy is free text, so the operator trusts no
    approval, and says how to fix it; the fix it names works as written."""
    kubectl("apply", "-f", "-", "--as=bob", stdin=session_manifest("s9", team, hardware="a10g-small"))
    space_id = wait_ready(kubectl, "s9", team)["status"]["spaceId"]
    remove_approval_policy(control_plane)
    try:
        attempts = iter(range(1_000_000))

        def self_approved() -> bool:  # admitted once the API server has dropped the policy
            patch = approve_patch("a10g-small", "bob", reason=f"mine {next(attempts)}")
            return patch_as(kubectl, "bob", "s9", team, patch, check=False).returncode == 0

        wait_for(self_approved, 30, "bob's self-approval to be admitted without the policy")
        refused = wait_condition_reason(kubectl, "s9", team, "HardwareApproved", "ApprovalNotEnforced")
        assert "sandbox-operator-approval is not installed" in refused["message"]
        assert "kubectl apply -f deploy/approval-policy.yaml" in refused["message"]
        events = kubectl.json("get", "events", "-n", team, "--field-selector", "involvedObject.name=s9")[
            "items"
        ]
        assert any(e["reason"] == "ApprovalNotEnforced" and e["type"] == "Warning" for e in events)

        # The fix the condition names, as written; bob's approval, admitted while nobody checked, is still
        # not acted on: bob may not approve (the SubjectAccessReview).
        run_shell(control_plane, "kubectl apply -f deploy/approval-policy.yaml")
        wait_condition_reason(kubectl, "s9", team, "HardwareApproved", "ApproverNotAuthorized")
        assert paid_hardware_calls(hub_admin, space_id) == []
        assert upgraded_to(hub_admin, space_id, "cpu-basic")
    finally:
        install_approval_policy(control_plane)


def test_an_approval_by_a_revoked_approver_is_not_acted_on(
    kubectl: Kubectl, hub_admin: HubSimAdmin, operator: OperatorProcess, team: str
) -> None:
    kubectl("create", "rolebinding", "dave-approves", "-n", team, "--clusterrole=sandbox-operator-approver",
            "--user=dave")  # fmt: skip
    kubectl("apply", "-f", "-", "--as=bob", stdin=session_manifest("s10", team, hardware="t4-small"))
    space_id = wait_ready(kubectl, "s10", team)["status"]["spaceId"]
    patch_as(kubectl, "dave", "s10", team, approve_patch(None, "dave", maxUsdPerHour=2))
    wait_for(lambda: upgraded_to(hub_admin, space_id, "t4-small"), 60, "the approved t4-small")

    kubectl("delete", "rolebinding", "dave-approves", "-n", team)
    time.sleep(
        1.5
    )  # longer than the tests' operator reuses an approver check (approval recheck interval 1 s)
    patch_as(kubectl, "bob", "s10", team, '{"spec":{"hardware":"a10g-small"}}')  # within dave's $2/h
    refused = wait_condition_reason(kubectl, "s10", team, "HardwareApproved", "ApproverNotAuthorized")
    assert "dave" in refused["message"] and "every hardware flavor" in refused["message"]
    wait_for(lambda: upgraded_to(hub_admin, space_id, "cpu-basic"), 60, "the return to cpu-basic")
    assert "a10g-small" not in paid_hardware_calls(hub_admin, space_id)


def test_rights_held_through_a_group_count_when_the_approval_names_it(
    control_plane: ControlPlane,
    kubectl: Kubectl,
    hub_admin: HubSimAdmin,
    operator: OperatorProcess,
    team: str,
    tmp_path: Path,
) -> None:
    kubectl("create", "rolebinding", "gpu-approvers-t4", "-n", team, f"--clusterrole={FLAVOR_ROLE}",
            "--group=gpu-approvers")  # fmt: skip
    kubectl("apply", "-f", "-", "--as=bob", stdin=session_manifest("s11", team, hardware="t4-small"))
    space_id = wait_ready(kubectl, "s11", team)["status"]["spaceId"]

    # Admitted (the API server sees erin's group), but the operator's check of "erin" alone says no.
    kubectl("patch", "ags", "s11", "-n", team, "--type=merge", "-p", approve_patch("t4-small", "erin"),
            "--as=erin", "--as-group=gpu-approvers")  # fmt: skip
    wait_condition_reason(kubectl, "s11", team, "HardwareApproved", "ApproverNotAuthorized")
    assert paid_hardware_calls(hub_admin, space_id) == []

    # A group erin is not in is refused by the API server.
    claimed = approve_patch("t4-small", "erin", approverGroups=["system:masters"])
    refused = kubectl("patch", "ags", "s11", "-n", team, "--type=merge", "-p", claimed, "--as=erin",
                      "--as-group=gpu-approvers", check=False)  # fmt: skip
    assert refused.returncode != 0
    assert "approverGroups may name only groups you are in: system:masters" in refused.stderr

    # `sandbox-operator approve` names erin's groups (from a SelfSubjectReview): acted on.
    erin = control_plane.write_user_kubeconfig(tmp_path / "erin.kubeconfig", "erin", ["gpu-approvers"])
    cli = run_cli(erin, "approve", "s11", "-n", team, "--hardware", "t4-small")
    assert cli.returncode == 0, cli.stderr
    wait_for(lambda: upgraded_to(hub_admin, space_id, "t4-small"), 60, "the t4-small erin approved")
    session = get_session(kubectl, "s11", team)
    assert session is not None and "gpu-approvers" in session["spec"]["approval"]["approverGroups"]


def test_namespace_scoped_approver_works_as_documented(
    control_plane: ControlPlane,
    kubectl: Kubectl,
    hub_admin: HubSimAdmin,
    operator: OperatorProcess,
    team: str,
    pytestconfig: pytest.Config,
) -> None:
    """The RBAC lines of docs/approvals.md as written: carol may approve t4-small in team-a only."""
    kubectl("create", "namespace", "team-a")
    page = pytestconfig.rootpath / "docs" / "approvals.md"
    commands = readme_block("kubectl create rolebinding carol-t4 -n team-a", page)
    try:
        for command in commands:
            run_shell(control_plane, command)
        kubectl("create", "rolebinding", "bob-edits", "-n", "team-a",
                "--clusterrole=sandbox-operator-session-editor", "--user=bob")  # fmt: skip
        kubectl("apply", "-f", "-", "--as=bob", stdin=session_manifest("gpu", "team-a", hardware="t4-small"))
        space_id = wait_ready(kubectl, "gpu", "team-a")["status"]["spaceId"]
        patch_as(kubectl, "carol", "gpu", "team-a", approve_patch("t4-small", "carol"))
        wait_for(lambda: upgraded_to(hub_admin, space_id, "t4-small"), 60, "carol's t4-small in team-a")

        # Not in another namespace, even where carol may edit sessions.
        editor = "--clusterrole=sandbox-operator-session-editor"
        kubectl("create", "rolebinding", "carol-edits", "-n", team, editor, "--user=carol")
        kubectl(
            "apply", "-f", "-", "--as=bob", stdin=session_manifest("elsewhere", team, hardware="t4-small")
        )
        refused = patch_as(
            kubectl, "carol", "elsewhere", team, approve_patch("t4-small", "carol"), check=False
        )
        assert refused.returncode != 0
        assert f'user "carol" may not approve hardware t4-small in namespace {team}' in refused.stderr
    finally:
        kubectl("delete", "namespace", "team-a", "--wait=false")
        kubectl("delete", "clusterrolebinding", "alice-approves", "--ignore-not-found")


@pytest.fixture
def fast_spend_operator(operator_process: OperatorProcess, tmp_path: Path) -> Iterator[OperatorProcess]:
    """The operator with spend brought up to date every second, in place of the shared one."""
    with replacing(operator_process, tmp_path, SANDBOX_OPERATOR_SPEND_INTERVAL="1") as fast:
        yield fast


def test_an_approved_gpu_space_sleeps_and_costs_nothing_while_asleep(
    kubectl: Kubectl, hub_admin: HubSimAdmin, fast_spend_operator: OperatorProcess, team: str
) -> None:
    manifest = session_manifest("s7", team, hardware="a10g-small", sleepTimeSeconds=900)
    kubectl("apply", "-f", "-", "--as=bob", stdin=manifest)
    space_id = wait_ready(kubectl, "s7", team)["status"]["spaceId"]
    patch_as(kubectl, "alice", "s7", team, approve_patch("a10g-small", "alice"))
    wait_for(lambda: hub_admin.space(space_id)["hardware"]["current"] == "a10g-small", 60, "the upgrade")
    # Paid hardware never sleeps unless told to: the request carried the session's sleep time.
    assert hub_admin.space(space_id)["sleepTime"] == 900

    def spend() -> float:
        session = get_session(kubectl, "s7", team) or {}
        return float(session.get("status", {}).get("spend", {}).get("estimatedUsd", 0.0))

    first = spend()
    wait_for(lambda: spend() > first, 30, "spend to grow while the GPU runs")

    hub_admin.set_stage(space_id, "SLEEPING")  # as the Hub does after the sleep time without requests
    asleep = wait_condition_reason(kubectl, "s7", team, "Ready", "SandboxSleeping")
    assert asleep["status"] == "True"
    session = get_session(kubectl, "s7", team)
    assert session is not None and session["status"]["phase"] == "Sleeping"
    assert session["status"]["spend"]["usdPerHour"] == 0
    hub_admin.clear_calls()
    slept = spend()
    # Several spend intervals later (one a second) nothing more is billed, the spend is not rewritten
    # for a figure that cannot move, and nothing woke the Space.
    time.sleep(5)
    asleep_spend = (get_session(kubectl, "s7", team) or {})["status"]["spend"]
    assert asleep_spend["lastObservedTime"] == session["status"]["spend"]["lastObservedTime"]
    time.sleep(3)
    assert spend() == slept
    assert hub_admin.space(space_id)["stage"] == "SLEEPING"
    touched = [call["route"] for call in hub_admin.calls() if space_id in call["path"]]
    assert "health" not in touched and "restart" not in touched and "hardware" not in touched


#: The operator's cadence out of the box: how often it polls a Space that changes and lists the owner's.
DEFAULT_CADENCE = {
    f"SANDBOX_OPERATOR_{name.upper()}": str(OperatorConfig.model_fields[name].default)
    for name in ("poll_interval", "observe_interval", "spend_interval")
}
#: How long after the Hub's bill reaches a budget the paid hardware may still bill.
BUDGET_SLACK_SECONDS = 10
#: A budget spent well within the operator's default spend interval (60 s): enforced on the Hub's clock,
#: not at the next spend update.
BUDGET_USD = 0.0075


@pytest.fixture
def default_cadence_operator(
    operator_process: OperatorProcess, hub: HubSimServer, tmp_path: Path
) -> Iterator[OperatorProcess]:
    """The operator with its default cadence, in place of the shared (fast) one, and the Hub switching
    hardware in its own default time."""
    before = hub.admin.delays()["hardwareSwitch"]
    hub.admin.set_delays(hardware_switch=HubSimConfig.model_fields["hardware_switch_seconds"].default)
    try:
        with replacing(operator_process, tmp_path, **DEFAULT_CADENCE) as own:
            yield own
    finally:
        hub.admin.set_delays(hardware_switch=before)


def test_a_budget_is_enforced_within_seconds_of_being_spent_on_the_hubs_clock(
    kubectl: Kubectl, hub_admin: HubSimAdmin, default_cadence_operator: OperatorProcess, team: str
) -> None:
    """BUDGET_USD on a10g-small ($1/h) is 27 s of the Hub's billing; the Space leaves it within 10 s more."""
    kubectl("apply", "-f", "-", "--as=bob", stdin=session_manifest("s13", team, hardware="a10g-small"))
    space_id = wait_ready(kubectl, "s13", team)["status"]["spaceId"]
    patch_as(kubectl, "alice", "s13", team, approve_patch("a10g-small", "alice", budgetUsd=BUDGET_USD))
    wait_for(lambda: upgraded_to(hub_admin, space_id, "a10g-small"), 60, "the upgrade")
    wait_for(
        lambda: upgraded_to(hub_admin, space_id, "cpu-basic"), 150, "the return to cpu-basic", interval=0.5
    )

    billed = hub_admin.space(space_id)["billing"]["seconds"]["a10g-small"]
    budget_seconds = BUDGET_USD / 1.0 * 3600
    print(f"a10g-small billed {billed:.1f} s for a budget of {budget_seconds:.0f} s")  # the figure, with -s
    assert billed <= budget_seconds + BUDGET_SLACK_SECONDS, billed
    receipts = wait_for(
        lambda: ((get_session(kubectl, "s13", team) or {}).get("status") or {}).get("receipts"), 60, "receipt"
    )
    assert receipts[-1]["endedBy"] == "BudgetSpent"
