"""Rate limits (fidelity F37, F38): headers on every API answer, parsed by the client's own parser."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable

import httpx2
import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils import parse_ratelimit_headers

from sandbox_testbench.hubsim import HubSimAdmin, HubSimServer
from sandbox_testbench.hubsim.ratelimit import UNLIMITED, RateLimiter
from tests.support.hubsim import early_in_a_window


def _standing(response: httpx2.Response) -> tuple[int, int, int, int]:
    info = parse_ratelimit_headers(response.headers)
    assert info is not None, response.headers
    assert info.resource_type == "api"
    assert info.limit is not None and info.window_seconds is not None
    return info.remaining, info.reset_in_seconds, info.limit, info.window_seconds


def test_every_api_answer_carries_the_headers_even_unlimited(hub: HubSimServer, template: str) -> None:
    for path in ("/api/whoami-v2", f"/api/spaces/{template}", "/api/spaces/nobody/missing", "/api/nope"):
        response = httpx2.get(f"{hub.url}{path}", headers={"Authorization": "Bearer hf_alice"})
        remaining, reset, quota, window = _standing(response)
        assert (remaining, quota, window) == (UNLIMITED, UNLIMITED, 300)
        assert 1 <= reset <= 300
    with urllib.request.urlopen(f"{hub.url}/_sim/faults", timeout=5) as admin_answer:
        assert admin_answer.headers.get("RateLimit") is None  # the admin API is not the Hub


def test_quota_per_user_then_429_with_retry_after(
    hub_factory: Callable[..., HubSimServer], template: str
) -> None:
    hub = hub_factory(rate_limit=3)
    early_in_a_window(hub.admin)
    alice = HfApi(endpoint=hub.url, token="hf_alice")
    seen = []
    for _ in range(3):
        response = httpx2.get(
            f"{hub.url}/api/spaces/{template}", headers={"Authorization": "Bearer hf_alice"}
        )
        assert response.status_code == 200
        seen.append(_standing(response)[0])
    assert seen == [2, 1, 0]
    with pytest.raises(HfHubHTTPError) as caught:
        alice.space_info(template)
    response = caught.value.response
    remaining, reset, quota, _ = _standing(response)
    assert (response.status_code, remaining, quota) == (429, 0, 3)
    assert response.headers["Retry-After"] == str(reset)
    assert f"Retry after {reset} seconds" in str(caught.value)  # the client's own 429 message
    bob = HfApi(endpoint=hub.url, token="hf_bob")
    assert bob.space_info(template).id == template  # another user has their own quota
    assert HfApi(endpoint=hub.url, token=False).space_info(template).id == template  # so do anonymous callers
    standing = hub.admin.rate_limit()
    assert standing["usage"]["alice"] == 4 and standing["usage"]["bob"] == 1
    assert 0 <= standing["intoWindow"] < standing["window"]


def test_quota_can_be_switched_on_and_off_at_run_time(
    alice: HfApi, admin: HubSimAdmin, template: str
) -> None:
    assert admin.rate_limit()["quota"] is None
    admin.set_rate_limit(1, window=60)
    early_in_a_window(admin, needed=5.0)
    alice.space_info(template)
    with pytest.raises(HfHubHTTPError) as caught:
        alice.space_info(template)
    assert caught.value.response.status_code == 429
    admin.set_rate_limit(None)
    assert alice.space_info(template).id == template


def test_fixed_windows_reset_on_the_clock() -> None:
    limiter = RateLimiter(2, 300)
    assert [limiter.charge("a", t).allowed for t in (600.0, 700.0, 899.0)] == [True, True, False]
    assert limiter.charge("a", 899.0).reset_seconds == 1
    fresh = limiter.charge("a", 900.0)
    assert (fresh.allowed, fresh.remaining, fresh.reset_seconds) == (True, 1, 300)
    assert limiter.charge("b", 900.0).remaining == 1
    assert (limiter.into_window(900.0), limiter.into_window(1_150.5)) == (0.0, 250.5)
