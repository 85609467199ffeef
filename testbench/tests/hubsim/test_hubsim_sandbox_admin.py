"""The per-Space sandbox app, the /_sim admin API and the call log."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

import httpx2
import pytest
from huggingface_hub import HfApi, SpaceHardware
from huggingface_hub.errors import HfHubHTTPError

from sandbox_testbench.hubsim import HubSimAdmin, HubSimAdminError, HubSimServer
from tests.support.hubsim import early_in_a_window


def _health(url: str, token: str | None, hub_token: str | None = None) -> httpx2.Response:
    """The sandbox token where the sandbox server reads it; a Hub token for a private Space's edge."""
    headers = {"X-Sandbox-Authorization": f"Bearer {token}"} if token else {}
    if hub_token:
        headers["Authorization"] = f"Bearer {hub_token}"
    return httpx2.get(f"{url}/health", headers=headers)


#: A build long enough to be seen under way on a busy machine.
BUILD_SECONDS = 3.0


def _health_once_built(host: str, token: str | None) -> httpx2.Response:
    """The first answer other than 503 (the app not running yet), within a few builds' time."""
    deadline = time.monotonic() + 5 * BUILD_SECONDS
    answer = _health(host, token)
    while answer.status_code == 503 and time.monotonic() < deadline:
        time.sleep(0.1)
        answer = _health(host, token)
    return answer


def test_health_checks_the_sandbox_token(alice: HfApi, admin: HubSimAdmin, template: str) -> None:
    admin.set_delays(build=BUILD_SECONDS)  # long enough to be read while building on a busy machine
    alice.duplicate_repo(
        template, "alice/box", repo_type="space", space_secrets=[{"key": "SANDBOX_API_TOKEN", "value": "tok"}]
    )
    host = alice.space_info("alice/box").host
    assert host is not None
    assert _health(host, "tok").status_code == 503  # still building

    ok = _health_once_built(host, "tok")
    assert (ok.status_code, ok.json()["status"]) == (200, "ok")
    assert ok.headers["X-Request-Id"]
    assert _health(host, "wrong").status_code == 401
    assert _health(host, None).status_code == 401

    alice.add_space_secret("alice/box", "SANDBOX_API_TOKEN", "rotated")
    assert _health_once_built(host, "rotated").status_code == 200  # after the restart the change made (F42)

    alice.pause_space("alice/box")
    assert _health(host, "rotated").status_code == 503
    alice.delete_repo("alice/box", repo_type="space")
    assert _health(host, "rotated").status_code == 404


def test_health_reports_the_last_use_and_health_checks_are_not_use(
    alice: HfApi, admin: HubSimAdmin, template: str
) -> None:
    admin.set_delays(build=0.1)
    secret = [{"key": "SANDBOX_API_TOKEN", "value": "tok"}]
    alice.duplicate_repo(template, "alice/used", repo_type="space", space_secrets=secret)
    host = alice.space_info("alice/used").host
    assert host is not None
    _health_once_built(host, "tok")

    def last_activity() -> datetime:
        return datetime.fromisoformat(_health(host, "tok").json()["lastActivityTime"].replace("Z", "+00:00"))

    started = last_activity()  # unused so far: when its app started running
    time.sleep(0.05)
    assert last_activity() == started  # a health check is not use
    headers = {"X-Sandbox-Authorization": "Bearer tok"}
    assert httpx2.post(f"{host}/api/bash", headers=headers, json={"command": "ls"}).status_code == 200
    used = last_activity()
    assert used > started and (datetime.now(UTC) - used).total_seconds() < 5
    assert httpx2.post(f"{host}/api/bash", json={}).status_code == 401  # not past the sandbox token: no use
    assert last_activity() == used

    alice.restart_space("alice/used")  # a fresh app process remembers no use
    _health_once_built(host, "tok")
    assert last_activity() > used


def test_a_private_spaces_app_is_reached_only_through_the_edge_with_a_hub_read_token(
    alice: HfApi, template: str
) -> None:
    alice.duplicate_repo(
        template,
        "alice/private-box",
        repo_type="space",
        private=True,
        space_secrets=[{"key": "SANDBOX_API_TOKEN", "value": "tok"}],
    )
    host = alice.space_info("alice/private-box").host
    assert host is not None
    assert _health(host, "tok", hub_token="hf_alice").status_code == 200
    assert _health(host, "tok").status_code == 401  # no Hub token: the edge refuses
    assert _health(host, "tok", hub_token="hf_unknown").status_code == 401
    assert _health(host, "tok", hub_token="hf_bob").status_code == 404  # may not see it
    # The sandbox token in Authorization alone is a bad Hub token at the edge, never the app's token.
    only = httpx2.get(f"{host}/health", headers={"Authorization": "Bearer tok"})
    assert only.status_code == 401
    # Past the edge, the sandbox server checks its own header.
    assert _health(host, "wrong", hub_token="hf_alice").status_code == 401
    assert _health(host, None, hub_token="hf_alice").status_code == 401


def test_health_without_token_secret_is_401(hub: HubSimServer, admin: HubSimAdmin) -> None:
    admin.plant_space("alice/bare")
    assert _health(f"{hub.url}/_sandbox/alice-bare", "anything").status_code == 401


def test_admin_listing_shows_secret_values(alice: HfApi, admin: HubSimAdmin, template: str) -> None:
    alice.duplicate_repo(
        template,
        "alice/box",
        repo_type="space",
        private=True,
        space_hardware=SpaceHardware.T4_SMALL,
        space_secrets=[{"key": "SANDBOX_API_TOKEN", "value": "tok"}],
        space_variables=[{"key": "MODE", "value": "agent"}],
    )
    listed = {space["id"]: space for space in admin.spaces()}
    assert set(listed) == {template, "alice/box"}
    box = admin.space("alice/box")
    assert box.pop("billing")["usd"] == pytest.approx(0, abs=1e-3)  # grows with the clock
    assert box == {key: value for key, value in listed["alice/box"].items() if key != "billing"}
    assert box["secrets"] == {"SANDBOX_API_TOKEN": "tok"}
    assert box["variables"] == {"MODE": "agent"}
    assert box["private"] is True and box["sdk"] == "docker"
    assert box["stage"] == "RUNNING"
    assert box["hardware"] == {"current": "t4-small", "requested": "t4-small"}
    assert box["createdAt"].endswith("Z")
    assert [(h["current"], h["requested"]) for h in box["hardwareHistory"]] == [
        (None, "t4-small"),
        ("t4-small", "t4-small"),
    ]


def test_plant_and_force_stage(alice: HfApi, bob: HfApi, admin: HubSimAdmin) -> None:
    planted = admin.plant_space(
        "bob/planted", private=True, stage="PAUSED", hardware="l4x1", secrets={"K": "v"}
    )
    assert (planted["stage"], planted["hardware"]) == ("PAUSED", {"current": None, "requested": "l4x1"})
    assert bob.get_space_runtime("bob/planted").stage == "PAUSED"
    assert set(bob.get_space_secrets("bob/planted")) == {"K"}

    forced = admin.set_stage("bob/planted", "RUNNING")
    assert forced["hardware"] == {"current": "l4x1", "requested": "l4x1"}
    assert admin.set_stage("bob/planted", "RUNTIME_ERROR")["stage"] == "RUNTIME_ERROR"

    with pytest.raises(HubSimAdminError) as caught:
        admin.plant_space("bob/planted")
    assert caught.value.status == 409
    with pytest.raises(HubSimAdminError) as caught:
        admin.set_stage("bob/planted", "NOT_A_STAGE")
    assert caught.value.status == 400
    with pytest.raises(HubSimAdminError) as caught:
        admin.space("bob/missing")
    assert caught.value.status == 404


def test_delays_get_and_put(admin: HubSimAdmin) -> None:
    zero = {"build": 0, "hardwareSwitch": 0, "wake": 0, "transientErrors": 0, "transientErrorCalls": 0}
    assert admin.delays() == zero
    assert admin.set_delays(build=1.5, transient_error_calls=2) == {
        **zero,
        "build": 1.5,
        "transientErrorCalls": 2,
    }
    with pytest.raises(HubSimAdminError) as caught:
        admin.set_delays(build=-1)
    assert caught.value.status == 400


def test_call_log(hub: HubSimServer, alice: HfApi, admin: HubSimAdmin, template: str) -> None:
    before = time.monotonic()
    alice.duplicate_repo(template, "alice/box", repo_type="space", space_hardware=SpaceHardware.A10G_LARGE)
    alice.request_space_hardware("alice/box", SpaceHardware.A100_LARGE)
    HfApi(endpoint=hub.url, token=False).get_space_runtime(template)
    calls = admin.calls()
    assert [(c["method"], c["route"], c["status"]) for c in calls] == [
        ("POST", "duplicate", 200),
        ("POST", "hardware", 200),
        ("GET", "runtime", 200),
    ]
    duplicate, hardware, runtime = calls
    assert duplicate["path"] == f"/api/spaces/{template}/duplicate"
    assert (duplicate["flavor"], hardware["flavor"], runtime["flavor"]) == ("a10g-large", "a100-large", None)
    assert (duplicate["user"], runtime["user"]) == ("alice", None)
    assert before <= duplicate["monotonic"] <= hardware["monotonic"] <= time.monotonic()
    assert duplicate["time"].endswith("Z") and duplicate["requestId"]
    admin.clear_calls()
    assert admin.calls() == []


def test_reset_restores_the_configured_world(alice: HfApi, admin: HubSimAdmin, template: str) -> None:
    alice.duplicate_repo(template, "alice/box", repo_type="space")
    admin.set_delays(build=9)
    admin.add_fault("whoami", 500)
    admin.set_build_failures(3)
    admin.reset()
    assert [space["id"] for space in admin.spaces()] == [template]
    assert admin.delays()["build"] == 0
    assert admin.faults() == [] and admin.calls() == []
    assert alice.whoami()["name"] == "alice"
    alice.duplicate_repo(template, "alice/box", repo_type="space")
    assert alice.get_space_runtime("alice/box").stage == "RUNNING"


def test_call_log_is_bounded(hub_factory: Callable[..., HubSimServer]) -> None:
    hub = hub_factory(call_log_size=2)
    api = HfApi(endpoint=hub.url, token="hf_alice")
    for _ in range(3):
        api.whoami()
    assert len(hub.admin.calls()) == 2


def test_call_counts_outlive_the_bounded_log_until_reset(hub_factory: Callable[..., HubSimServer]) -> None:
    hub = hub_factory(call_log_size=2, rate_limit=2)
    early_in_a_window(hub.admin)
    api = HfApi(endpoint=hub.url, token="hf_alice")
    for _ in range(2):
        api.whoami()
    with pytest.raises(HfHubHTTPError):
        api.whoami()
    assert hub.admin.call_counts() == [
        {"user": "alice", "route": "whoami", "status": 200, "count": 2},
        {"user": "alice", "route": "whoami", "status": 429, "count": 1},
    ]
    hub.admin.reset()
    assert hub.admin.call_counts() == []
