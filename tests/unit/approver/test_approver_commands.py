"""The approver's commands without a server: what they write, how they print, whom they act as."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sandbox_operator.approver.approvals import (
    Caller,
    CommandError,
    DenialRequest,
    Identity,
    age,
    build_denial,
    connect,
    parse_duration,
    server_error,
    table,
    waiting,
)
from sandbox_operator.approver.approve import ApprovalRequest, build_approval
from sandbox_operator.approver.cli import plugin
from sandbox_operator.cli.main import main

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
ALICE = Identity("alice", ["gpu-leads"])


def test_a_denial_names_who_why_and_when_and_withdraws_the_approval_of_that_flavor() -> None:
    spec = {"hardware": "a10g-small", "approval": {"hardware": "a10g-small", "approvedBy": "carol"}}
    patch = build_denial(DenialRequest("demo", "team-a", "too big", None), spec, ALICE, NOW)
    assert patch == {
        "denial": {
            "hardware": "a10g-small",
            "deniedBy": "alice",
            "approverGroups": ["gpu-leads"],
            "reason": "too big",
            "deniedAt": "2026-11-26T12:00:00Z",
        },
        "approval": None,
    }


def test_a_standing_budget_is_not_withdrawn_by_a_denial_of_one_flavor() -> None:
    spec = {"hardware": "a10g-small", "approval": {"maxUsdPerHour": 2, "approvedBy": "carol"}}
    assert "approval" not in build_denial(DenialRequest("demo", "team-a", "no", None), spec, ALICE, NOW)


@pytest.mark.parametrize(
    ("spec", "hardware", "says"),
    [
        ({"hardware": "a10g-small"}, "t4-small", "requests a10g-small, not t4-small"),
        ({"hardware": "cpu-basic"}, None, "nothing to deny"),
        ({}, None, "nothing to deny"),
    ],
)
def test_a_denial_is_for_the_requested_paid_flavor(
    spec: dict[str, Any], hardware: str | None, says: str
) -> None:
    with pytest.raises(CommandError, match=says):
        build_denial(DenialRequest("demo", "team-a", "no", hardware), spec, ALICE, NOW)


def test_an_approval_carries_its_expiry_and_warning() -> None:
    request = ApprovalRequest(
        "demo", "team-a", "a10g-small", None, 20.0, "eval", "2026-11-26T12:02:00Z", 15.0
    )
    approval = build_approval(request, {"hardware": "a10g-small"}, ALICE, NOW)
    assert approval["expiresAt"] == "2026-11-26T12:02:00Z" and approval["warnAtUsd"] == 15.0
    assert approval["hardware"] == "a10g-small" and approval["approvedBy"] == "alice"


@pytest.mark.parametrize(
    ("spec", "hardware", "expires_at", "says"),
    [
        ({}, "gpu", None, "'gpu' is not a paid flavor: approve one of cpu-upgrade, zero-a10g, t4-small"),
        ({}, "a10g-small", None, "requests cpu-basic, not a10g-small: .* have spec.hardware set to a10g"),
        ({"hardware": "t4-small"}, "a10g-small", None, "approve t4-small, or have spec.hardware set"),
        (
            {"hardware": "t4-small"},
            "t4-small",
            "2020-01-01T00:00:00Z",
            "--expires-at 2020-01-01T00:00:00Z is in the past",
        ),
        ({"hardware": "t4-small"}, "t4-small", "tomorrow", "--expires-at 'tomorrow' is not an RFC 3339 time"),
    ],
)
def test_an_approval_that_cannot_hold_says_why(
    spec: dict[str, Any], hardware: str | None, expires_at: str | None, says: str
) -> None:
    request = ApprovalRequest("demo", "team-a", hardware, None, None, None, expires_at)
    with pytest.raises(CommandError, match=says):
        build_approval(request, spec, ALICE, NOW)


def test_approvals_everywhere_falls_back_to_the_context_namespace_when_nothing_wider_is_readable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sandbox_operator.approver import approvals as approvals_command

    asked: list[str | None] = []

    def list_sessions(_: Any, namespace: str | None) -> list[dict[str, Any]]:
        asked.append(namespace)
        if namespace is None:
            raise approvals_command.NamespacesHidden("Error from server (Forbidden): cluster scope")
        return [waiting_session("demo", namespace, "2026-11-26T11:59:00Z", requestedBy="bob")]

    monkeypatch.setattr(approvals_command, "list_sessions", list_sessions)
    result = CliRunner().invoke(plugin, ["approvals", "-A", "--kubeconfig", str(kubeconfig(tmp_path))])
    assert result.exit_code == 0, result.output
    assert asked == [None, "team-one"]
    assert "listing the team-one namespace only" in result.output
    assert result.output.splitlines()[-1].split()[:2] == ["team-one", "demo"]


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("2m", 120), ("1h30m", 5400), ("7d", 604800), ("1.5h", 5400)]
)
def test_durations_read_as_kubectl_writes_them(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "2", "m", "2 m", "2x", "0s", "-1m", "1h junk"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(CommandError):
        parse_duration(text)


def waiting_session(name: str, namespace: str, since: str, **pending: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace},
        "status": {
            "pendingApproval": {
                "hardware": "a10g-small",
                "usdPerHour": 1.0,
                "requestedTime": since,
                **pending,
            },
            "conditions": [{"type": "HardwareApproved", "reason": "AwaitingApproval"}],
            "spaceId": f"agents/ags-{name}",
        },
    }


def test_approvals_lists_only_waiting_sessions_longest_waiting_first() -> None:
    sessions = [
        waiting_session("late", "team-a", "2026-11-26T11:59:00Z", requestedBy="bob"),
        {"metadata": {"name": "approved", "namespace": "team-a"}, "status": {}},
        waiting_session("early", "team-b", "2026-11-26T09:00:00Z"),
    ]
    found = waiting(sessions)
    assert [s["metadata"]["name"] for s in found] == ["early", "late"]
    lines = table(found, NOW, all_namespaces=True, wide=False).splitlines()
    assert lines[0].split() == ["NAMESPACE", "NAME", "HARDWARE", "USD/H", "REQUESTED", "BY", "WAITING"]
    assert lines[1].split() == ["team-b", "early", "a10g-small", "1.00", "<unknown>", "3h"]
    assert lines[2].split() == ["team-a", "late", "a10g-small", "1.00", "bob", "60s"]
    wide = table(found, NOW, all_namespaces=False, wide=True).splitlines()
    assert wide[0].split()[-2:] == ["REASON", "SPACE"] and wide[1].split()[-2:] == [
        "AwaitingApproval",
        "agents/ags-early",
    ]


@pytest.mark.parametrize(
    ("since", "shown"),
    [
        (NOW - timedelta(seconds=5), "5s"),
        (NOW - timedelta(minutes=12), "12m"),
        (NOW - timedelta(days=3), "3d"),
    ],
)
def test_waiting_times_read_like_kubectl_ages(since: datetime, shown: str) -> None:
    assert age(since.strftime("%Y-%m-%dT%H:%M:%SZ"), NOW) == shown


def test_api_errors_read_as_kubectl_prints_them() -> None:
    error = ApiException(status=404, reason="Not Found")
    error.body = (
        '{"reason": "NotFound", "message": "agentsessions.agents.sandbox-operator.dev \\"x\\" not found"}'
    )
    assert str(server_error(error)) == (
        'Error from server (NotFound): agentsessions.agents.sandbox-operator.dev "x" not found'
    )


def kubeconfig(tmp_path: Path) -> Path:
    path = tmp_path / "config"
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: one\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {token: abc}}]\n"
        "contexts: [{name: one, context: {cluster: c, user: u, namespace: team-one}},"
        " {name: two, context: {cluster: c, user: u, namespace: team-two}}]\n"
    )
    return path


class Sent(Exception):
    """Raised by the fake transport with the headers a request carried."""


def test_impersonation_sends_one_header_per_group(tmp_path: Path) -> None:
    api_client = connect(Caller(str(kubeconfig(tmp_path)), None, "alice", ("gpu-leads", "team-a")))

    def capture(method: str, url: str, **kwargs: Any) -> Any:
        raise Sent(kwargs["headers"])

    api_client.rest_client.pool_manager.request = capture
    with pytest.raises(Sent) as sent:
        client.VersionApi(api_client).get_code()
    headers = sent.value.args[0]
    assert headers["Impersonate-User"] == "alice"
    assert headers.getlist("Impersonate-Group") == ["gpu-leads", "team-a"]
    assert headers["authorization"] == "Bearer abc"


def test_a_group_without_a_user_is_refused_as_kubectl_refuses_it() -> None:
    with pytest.raises(CommandError, match="--as-group needs --as"):
        connect(Caller(as_groups=("g",)))


def test_the_context_picks_the_namespace(tmp_path: Path) -> None:
    from sandbox_operator.approver.approvals import kubeconfig_namespace

    path = str(kubeconfig(tmp_path))
    assert kubeconfig_namespace(Caller(path)) == "team-one"
    assert kubeconfig_namespace(Caller(path, "two")) == "team-two"


@pytest.mark.parametrize("group", [main, plugin])
def test_the_commands_take_kubectls_flags_in_both_places(group: Any) -> None:
    runner = CliRunner()
    for command in ("approvals", "approve", "deny"):
        result = runner.invoke(group, [command, "--help"])
        assert result.exit_code == 0, result.output
        for flag in ("-n, --namespace", "--context", "--as ", "--as-group", "-o, --output", "--kubeconfig"):
            assert flag in result.output, (command, flag)
    assert "-A, --all-namespaces" in runner.invoke(group, ["approvals", "--help"]).output


def test_an_error_exits_1_with_kubectls_wording(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        plugin, ["deny", "x", "--reason", "r", "--kubeconfig", str(tmp_path / "none")]
    )
    assert result.exit_code == 1 and result.output.startswith("error: ")


def test_deny_needs_a_reason() -> None:
    result = CliRunner().invoke(plugin, ["deny", "x"])
    assert result.exit_code == 2 and "--reason" in result.output


def test_approving_lifts_a_denial_of_that_flavor_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from sandbox_operator.approver import approve as approve_command

    patches: list[dict[str, Any]] = []
    spec = {
        "hardware": "a10g-small",
        "denial": {"hardware": "a10g-small", "deniedBy": "carol", "reason": "x"},
    }
    monkeypatch.setattr(approve_command, "get_session", lambda *_: {"spec": spec})
    monkeypatch.setattr(approve_command, "current_identity", lambda _: ALICE)
    monkeypatch.setattr(approve_command, "patch_spec", lambda _a, _n, _s, patch: patches.append(patch) or {})
    request = ApprovalRequest("demo", "team-a", "a10g-small", None, None, "ok after all")
    approve_command.approve(object(), request)  # type: ignore[arg-type]
    assert patches[-1]["denial"] is None and patches[-1]["approval"]["hardware"] == "a10g-small"

    spec["denial"]["hardware"] = "t4-small"
    approve_command.approve(object(), request)  # type: ignore[arg-type]
    assert "denial" not in patches[-1]


def test_an_approval_names_the_flavor_the_approver_named_never_whatever_is_asked_by_then() -> None:
    """The approver saw t4-small; the editor switched to a100x8 since: approving without naming a flavor,
    or naming the one seen, approves nothing."""
    switched = {"hardware": "a100x8"}
    for hardware, says in ((None, "name the flavor you approve: team-a/demo requests a100x8 now"),
                           ("t4-small", "requests a100x8, not t4-small")):  # fmt: skip
        with pytest.raises(CommandError, match=says):
            build_approval(
                ApprovalRequest("demo", "team-a", hardware, None, None, None), switched, ALICE, NOW
            )
    standing = build_approval(ApprovalRequest("demo", "team-a", None, 1.0, None, None), switched, ALICE, NOW)
    assert standing["hardware"] is None and standing["maxUsdPerHour"] == 1.0


def _approving(monkeypatch: pytest.MonkeyPatch, session: dict[str, Any]) -> list[dict[str, Any]]:
    from sandbox_operator.approver import approve as approve_command

    patches: list[dict[str, Any]] = []
    monkeypatch.setattr(approve_command, "get_session", lambda *_: session)
    monkeypatch.setattr(approve_command, "current_identity", lambda _: ALICE)
    monkeypatch.setattr(approve_command, "patch_spec", lambda _a, _n, _s, patch: patches.append(patch) or {})
    return patches


def test_an_interactive_approver_confirms_the_flavor_shown_with_its_price(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sandbox_operator.approver import approve as approve_command

    session = {
        "spec": {"hardware": "t4-small"},
        "status": {"pendingApproval": {"hardware": "t4-small", "usdPerHour": 0.45}},
    }
    patches = _approving(monkeypatch, session)
    asked: list[str] = []
    request = ApprovalRequest("demo", "team-a", None, None, None, None)
    written, _, price = approve_command.approve(object(), request, lambda q: asked.append(q) or True)  # type: ignore[arg-type]
    assert asked == ["team-a/demo requests t4-small ($0.45/h): approve it?"]
    assert written["hardware"] == "t4-small" == patches[-1]["approval"]["hardware"] and price == 0.45

    with pytest.raises(CommandError, match="not approved"):
        approve_command.approve(object(), request, lambda _: False)  # type: ignore[arg-type]
    assert len(patches) == 1


def test_approve_prints_the_flavor_and_its_price(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not a terminal: the flavor must be named; the line printed says what was approved at what price
    (the published one when the operator recorded none for it)."""
    from sandbox_operator.approver import approvals as approvals_command
    from sandbox_operator.approver import approve as approve_command

    _approving(monkeypatch, {"spec": {"hardware": "a100x8"}})
    monkeypatch.setattr(approvals_command, "connect", lambda _: object())
    runner = CliRunner()
    named = runner.invoke(plugin, ["approve", "demo", "-n", "team-a", "--hardware", "a100x8"])
    assert named.exit_code == 0, named.output
    assert named.output == "approved a100x8 ($20.00/h) for team-a/demo as alice\n"
    unnamed = runner.invoke(plugin, ["approve", "demo", "-n", "team-a"])
    assert unnamed.exit_code == 1 and "--hardware a100x8" in unnamed.output
    assert approve_command.price_of({}, "no-such-flavor") is None


def test_approve_prints_budgets_in_dollars_and_cents(monkeypatch: pytest.MonkeyPatch) -> None:
    from sandbox_operator.approver import approvals as approvals_command

    _approving(monkeypatch, {"spec": {"hardware": "a10g-small"}})
    monkeypatch.setattr(approvals_command, "connect", lambda _: object())
    runner = CliRunner()
    budget = ["--hardware", "a10g-small", "--budget-usd", "20", "--reason", "eval run"]
    result = runner.invoke(plugin, ["approve", "demo", "-n", "team-a", *budget])
    assert result.exit_code == 0, result.output
    assert result.output == "approved a10g-small ($1.00/h) within $20.00 for team-a/demo as alice\n"
    standing = runner.invoke(plugin, ["approve", "demo", "-n", "team-a", "--max-usd-per-hour", "2.5"])
    assert standing.exit_code == 0, standing.output
    assert standing.output == "approved any flavor up to $2.50/h for team-a/demo as alice\n"
