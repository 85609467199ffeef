"""Hub failures against the real operator: rate limits, outages, the transient 404, bad input."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sandbox_operator.config.settings import OperatorConfig
from sandbox_testbench.controlplane import Kubectl
from sandbox_testbench.hubsim import HubSimAdmin
from tests.support import wait_for
from tests.support.harness import (
    OperatorProcess,
    get_session,
    session_manifest,
    spaces_of,
    wait_condition_reason,
    wait_ready,
)
from tests.support.kube import wait_for_events

#: Hub calls the operator has in flight at once (OperatorConfig.hub_concurrency): when the first
#: 429 is answered, at most this many others can already be on their way.
HUB_CONCURRENCY = OperatorConfig().hub_concurrency
#: Long enough to see every session wait; the pause's length changes nothing else (the test took 76 s at 60).
RETRY_AFTER = 20


def hub_api_calls(admin: HubSimAdmin) -> list[dict[str, Any]]:
    """The emulator's log without the sandbox health checks, which go to the Space, not the Hub API."""
    return [call for call in admin.calls() if call["route"] != "health"]


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_429_pauses_every_hub_call_until_retry_after_then_all_sessions_get_ready(
    kubectl: Kubectl, hub_admin: HubSimAdmin, operator: OperatorProcess, namespace: str
) -> None:
    names = [f"limited-{n}" for n in range(3)]
    hub_admin.clear_calls()
    hub_admin.add_fault("*", 429, seconds=RETRY_AFTER, retry_after=RETRY_AFTER)
    for name in names:
        kubectl("apply", "-f", "-", stdin=session_manifest(name, namespace))

    waiting = wait_condition_reason(kubectl, names[-1], namespace, "Ready", "HubRateLimited")
    assert "paused" in waiting["message"] or "rate limited" in waiting["message"]
    assert "next try in" in waiting["message"]
    session = get_session(kubectl, names[-1], namespace)
    assert session is not None
    next_try = parse_time(session["status"]["nextRetryTime"])
    wait_for_events(kubectl, names[-1], namespace, "HubRateLimited")

    for name in names:
        wait_ready(kubectl, name, namespace, timeout=RETRY_AFTER + 90)

    calls = hub_api_calls(hub_admin)
    limited = [call for call in calls if call["status"] == 429]
    assert limited, "the fault answered no call"
    first = limited[0]
    # The Hub said "not before first + RETRY_AFTER". Only calls already on their way when that answer
    # arrived may follow it; they were refused too, each extending the pause by its own RETRY_AFTER.
    in_flight = [c for c in calls if first["monotonic"] < c["monotonic"] < first["monotonic"] + RETRY_AFTER]
    assert all(call["status"] == 429 for call in in_flight), in_flight
    assert len(in_flight) <= HUB_CONCURRENCY - 1, in_flight
    told = max(call["monotonic"] for call in limited) + RETRY_AFTER
    early = [c for c in calls if first["monotonic"] < c["monotonic"] < told and c not in in_flight]
    assert early == [], f"sent before the Retry-After time: {early}"
    resumed = min(call["monotonic"] for call in calls if call["monotonic"] >= told)
    assert any(call["monotonic"] >= told and call["status"] < 400 for call in calls)
    # The condition's "next try" time is never before the end of the pause (RFC 3339 has whole seconds).
    assert next_try + timedelta(seconds=1) >= parse_time(first["time"]) + timedelta(seconds=RETRY_AFTER)
    print(
        f"429 check: {len(limited)} call(s) answered 429, {len(in_flight)} of them in flight after the "
        f"first; the next Hub call came {resumed - first['monotonic']:.2f}s after the first 429 "
        f"(Retry-After {RETRY_AFTER}s); {len(calls)} Hub calls in all; {len(names)} sessions Ready"
    )


def test_delete_while_the_hub_is_down_keeps_the_finalizer_and_completes_when_it_is_back(
    kubectl: Kubectl, hub_admin: HubSimAdmin, operator: OperatorProcess, namespace: str
) -> None:
    kubectl("apply", "-f", "-", stdin=session_manifest("outage", namespace))
    uid = wait_ready(kubectl, "outage", namespace)["metadata"]["uid"]
    hub_admin.add_fault("*", 503)
    try:
        kubectl("delete", "ags", "outage", "-n", namespace, "--wait=false")
        ready = wait_condition_reason(kubectl, "outage", namespace, "Ready", "HubUnavailable")
        assert "cannot delete Space" in ready["message"] and "503" in ready["message"]
        assert "next try in" in ready["message"]
        session = get_session(kubectl, "outage", namespace)
        assert session is not None and session["metadata"].get("deletionTimestamp")
        assert session["status"]["phase"] == "Deleting"
        wait_for_events(kubectl, "outage", namespace, "HubUnavailable")
        assert len(spaces_of(hub_admin, uid)) == 1
    finally:
        hub_admin.clear_faults()
    wait_for(lambda: get_session(kubectl, "outage", namespace) is None, 90, "the session to go")
    assert spaces_of(hub_admin, uid) == []


def test_transient_404_after_duplicate_is_waited_out_without_a_second_duplicate(
    kubectl: Kubectl, hub_admin: HubSimAdmin, operator: OperatorProcess, namespace: str
) -> None:
    # Windows long enough for the session's own read to fall inside them on a busy machine.
    hub_admin.set_delays(transient_errors=6.0)
    try:
        hub_admin.clear_calls()
        # A fresh duplicate is confirmed by the next listing; when that fails, the session reads its Space.
        hub_admin.add_fault("list_spaces", 401, seconds=10)
        kubectl("apply", "-f", "-", stdin=session_manifest("fresh", namespace))
        session = wait_ready(kubectl, "fresh", namespace)
    finally:
        hub_admin.set_delays(transient_errors=0.0)
    calls = hub_api_calls(hub_admin)
    duplicates = [call for call in calls if call["route"] == "duplicate"]
    assert [call["status"] for call in duplicates] == [200]
    space_path = f"/api/spaces/{session['status']['spaceId']}"
    assert any(call["path"] == space_path and call["status"] == 404 for call in calls), (
        "no transient 404 seen"
    )


def test_session_deleted_before_the_hub_shows_its_space_still_deletes_it(
    kubectl: Kubectl, hub_admin: HubSimAdmin, operator: OperatorProcess, namespace: str
) -> None:
    hub_admin.set_delays(transient_errors=3.0)
    try:
        hub_admin.clear_calls()
        kubectl("apply", "-f", "-", stdin=session_manifest("hasty", namespace))
        wait_for(
            lambda: any(c["route"] == "duplicate" and c["status"] == 200 for c in hub_admin.calls()),
            30,
            "the duplicate",
            interval=0.02,
        )
        session = get_session(kubectl, "hasty", namespace)
        assert session is not None
        kubectl("delete", "ags", "hasty", "-n", namespace, "--wait=false")
        wait_for(lambda: get_session(kubectl, "hasty", namespace) is None, 60, "the session to go")
    finally:
        hub_admin.set_delays(transient_errors=0.0)
    assert spaces_of(hub_admin, session["metadata"]["uid"]) == []


def test_missing_template_is_reported_and_creates_nothing(
    kubectl: Kubectl, hub_admin: HubSimAdmin, operator: OperatorProcess, namespace: str
) -> None:
    manifest = session_manifest("no-template", namespace, template="templates/does-not-exist")
    kubectl("apply", "-f", "-", stdin=manifest)
    ready = wait_condition_reason(kubectl, "no-template", namespace, "Ready", "TemplateNotFound")
    assert "templates/does-not-exist" in ready["message"] and "next try in" in ready["message"]
    session = get_session(kubectl, "no-template", namespace)
    assert session is not None and session["status"]["phase"] == "Failed"
    assert spaces_of(hub_admin, session["metadata"]["uid"]) == []
    assert not any(space["id"].endswith(session["metadata"]["uid"]) for space in hub_admin.spaces())
    wait_for_events(kubectl, "no-template", namespace, "TemplateNotFound")


def test_owner_the_token_cannot_write_is_reported_and_creates_nothing(
    kubectl: Kubectl, hub_admin: HubSimAdmin, operator: OperatorProcess, namespace: str
) -> None:
    kubectl("apply", "-f", "-", stdin=session_manifest("foreign", namespace, owner="someone-else"))
    ready = wait_condition_reason(kubectl, "foreign", namespace, "Ready", "HubForbidden")
    assert "someone-else" in ready["message"] and "next try in" in ready["message"]
    session = get_session(kubectl, "foreign", namespace)
    assert session is not None
    assert not any(space["id"].endswith(session["metadata"]["uid"]) for space in hub_admin.spaces())
    wait_for_events(kubectl, "foreign", namespace, "HubForbidden")
    # Deleting it needs no Hub write: there is no Space.
    kubectl("delete", "ags", "foreign", "-n", namespace, "--timeout=60s")


def test_a_duplicate_the_hub_answers_with_503_is_sent_again_with_attempts_counted(
    kubectl: Kubectl, hub_admin: HubSimAdmin, operator: OperatorProcess, namespace: str
) -> None:
    """The Hub's error answer is recorded (status.duplicateFailure), so the next try sends the duplicate
    again instead of waiting out the window in which a sent duplicate may still appear."""
    # The faults are the Hub's, for every caller: a session of an earlier test (its namespace still
    # terminating) that duplicates now would take one of them. Wait until this one is alone.
    wait_for(lambda: not kubectl.json("get", "agentsessions", "-A")["items"], 60, "earlier sessions gone")
    hub_admin.clear_calls()
    hub_admin.add_fault("duplicate", 503, count=3)
    try:
        kubectl("apply", "-f", "-", stdin=session_manifest("flaky", namespace))
        seen: list[str] = []

        def attempts() -> bool:
            session = get_session(kubectl, "flaky", namespace) or {}
            ready = next(
                (c for c in (session.get("status") or {}).get("conditions", []) if c["type"] == "Ready"), {}
            )
            seen.append(ready.get("message", ""))
            return ready.get("status") == "True"

        wait_for(attempts, 120, "flaky Ready", 0.2)
    finally:
        hub_admin.clear_faults()
    duplicates = [call["status"] for call in hub_api_calls(hub_admin) if call["route"] == "duplicate"]
    assert duplicates == [503, 503, 503, 200]
    assert any("503" in message and "attempt 3" in message for message in seen), seen
    assert not any("does not show" in message for message in seen), seen
