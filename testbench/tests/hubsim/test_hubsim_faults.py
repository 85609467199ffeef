"""Fault injection as the real client experiences it: raised on lifecycle calls, retried on list pages."""

from __future__ import annotations

import time

import httpx2
import pytest
from huggingface_hub import HfApi, SpaceHardware
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError
from huggingface_hub.utils import parse_ratelimit_headers

from sandbox_testbench.hubsim import HubSimAdmin, HubSimAdminError, HubSimServer


def test_429_surfaces_with_retry_after_until_count_exhausts(
    alice: HfApi, admin: HubSimAdmin, template: str
) -> None:
    admin.add_fault("runtime", 429, count=2, retry_after=7)
    for _ in range(2):
        with pytest.raises(HfHubHTTPError) as caught:
            alice.get_space_runtime(template)
        response = caught.value.response
        assert response.status_code == 429
        assert response.headers["Retry-After"] == "7"
        assert response.headers["RateLimit"] == '"api";r=0;t=7'
        assert "Retry after 7 seconds" in str(caught.value)
    assert alice.get_space_runtime(template).stage == "RUNNING"
    assert admin.faults() == []
    assert [c["faulted"] for c in admin.calls() if c["route"] == "runtime"] == [True, True, False]


def test_fault_without_retry_after_does_not_ask_to_wait(
    alice: HfApi, admin: HubSimAdmin, template: str
) -> None:
    admin.add_fault("space_info", 500, count=1)
    with pytest.raises(HfHubHTTPError) as caught:
        alice.space_info(template)
    assert caught.value.response.status_code == 500
    assert "Retry-After" not in caught.value.response.headers
    standing = parse_ratelimit_headers(caught.value.response.headers)
    assert standing is not None and standing.remaining > 0


def test_timed_fault_expires(alice: HfApi, admin: HubSimAdmin) -> None:
    admin.add_fault("whoami", 503, seconds=2.0, retry_after=1)  # long enough to be met on a busy machine
    with pytest.raises(HfHubHTTPError) as caught:
        alice.whoami()
    assert caught.value.response.status_code == 503
    assert caught.value.response.headers["Retry-After"] == "1"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the fault ends by itself
        try:
            assert alice.whoami()["name"] == "alice"
            return
        except HfHubHTTPError as refused:
            assert refused.response.status_code == 503
            time.sleep(0.2)
    pytest.fail("the timed fault did not expire")


def test_wildcard_covers_api_routes_but_not_the_sandbox(
    hub: HubSimServer, alice: HfApi, template: str
) -> None:
    alice.duplicate_repo(
        template, "alice/box", repo_type="space", space_secrets=[{"key": "SANDBOX_API_TOKEN", "value": "t"}]
    )
    hub.admin.add_fault("*", 503)
    for call in (alice.whoami, lambda: alice.request_space_hardware("alice/box", SpaceHardware.T4_SMALL)):
        with pytest.raises(HfHubHTTPError) as caught:
            call()
        assert caught.value.response.status_code == 503
    health = httpx2.get(
        f"{hub.url}/_sandbox/alice-box/health", headers={"X-Sandbox-Authorization": "Bearer t"}
    )
    assert health.status_code == 200
    hub.admin.clear_faults()
    assert alice.whoami()["name"] == "alice"


def test_health_fault_targets_the_sandbox(hub: HubSimServer, alice: HfApi, template: str) -> None:
    alice.duplicate_repo(
        template, "alice/box", repo_type="space", space_secrets=[{"key": "SANDBOX_API_TOKEN", "value": "t"}]
    )
    hub.admin.add_fault("health", 502, count=1)
    url = f"{hub.url}/_sandbox/alice-box/health"
    assert httpx2.get(url, headers={"X-Sandbox-Authorization": "Bearer t"}).status_code == 502
    assert httpx2.get(url, headers={"X-Sandbox-Authorization": "Bearer t"}).status_code == 200


def test_404_fault_is_repository_not_found(alice: HfApi, admin: HubSimAdmin, template: str) -> None:
    admin.add_fault("hardware", 404, count=1)
    with pytest.raises(RepositoryNotFoundError):
        alice.request_space_hardware(template, SpaceHardware.T4_SMALL)
    (call,) = [c for c in admin.calls() if c["route"] == "hardware"]
    assert call["flavor"] == "t4-small" and call["faulted"] is True and call["status"] == 404


def test_list_spaces_pages_are_retried_honouring_retry_after(
    alice: HfApi, admin: HubSimAdmin, template: str
) -> None:
    """huggingface_hub 2.4 fetches every list page through http_backoff: it sleeps Retry-After + 1 s."""
    admin.add_fault("list_spaces", 429, count=1, retry_after=0)
    started = time.monotonic()
    assert [s.id for s in alice.list_spaces()] == [template]
    assert time.monotonic() - started >= 1.0
    calls = [c for c in admin.calls() if c["route"] == "list_spaces"]
    assert [c["status"] for c in calls] == [429, 200]


def test_fault_validation(admin: HubSimAdmin) -> None:
    with pytest.raises(HubSimAdminError) as caught:
        admin.add_fault("no_such_route", 500)
    assert caught.value.status == 400
    with pytest.raises(HubSimAdminError):
        admin.add_fault("runtime", 200)
