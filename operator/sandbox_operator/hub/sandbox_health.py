"""The sandbox's health check: a plain HTTP call to the Space's app through the Hub's edge, not the
Hub API (no Hub call, no gate, no thread). A private Space's edge wants a Hub token that may read the
Space in `Authorization`; the sandbox server reads its own token from `X-Sandbox-Authorization`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime

import aiohttp

from sandbox_operator.api import parse_rfc3339
from sandbox_operator.core.model import HealthResult

#: The header the sandbox server reads its own API token from; `Authorization` belongs to the edge.
SANDBOX_AUTH_HEADER = "X-Sandbox-Authorization"
#: The key of a sandbox's health answer that says when it was last used (RFC 3339), where the template
#: reports it (an assumption of ours: docs/hub-fidelity.md F41).
LAST_ACTIVITY_KEY = "lastActivityTime"


def last_activity(body: str) -> datetime | None:
    """When the sandbox was last used, from its health answer; None when it does not say."""
    value = (sandbox_answer(body) or {}).get(LAST_ACTIVITY_KEY)
    try:
        return parse_rfc3339(str(value)) if value else None
    except ValueError:
        return None


def sandbox_answer(body: str) -> Mapping[str, object] | None:
    """The sandbox server's health answer, a JSON object; None for anything else (a page of the edge
    for a Space that does not run yet may come with a 200 too: docs/hub-fidelity.md F36)."""
    try:
        answer = json.loads(body)
    except ValueError:
        return None
    return answer if isinstance(answer, dict) else None


async def check_health(http: aiohttp.ClientSession, url: str, token: str, hub_token: str) -> HealthResult:
    """GET the sandbox's health endpoint `url`; anything but 200 with the sandbox's JSON is unhealthy.

    `hub_token` passes the Hub's edge of a private Space (`Authorization`); the sandbox server
    checks `token`, its own API token, in `X-Sandbox-Authorization`.
    """
    headers = {SANDBOX_AUTH_HEADER: f"Bearer {token}"}
    if hub_token:
        headers["Authorization"] = f"Bearer {hub_token}"
    try:
        async with http.get(url, headers=headers) as response:
            if response.status == 200:
                body = await response.text()
                if sandbox_answer(body) is None:
                    return HealthResult(False, f"{url} answered 200 without the sandbox's JSON", 200)
                return HealthResult(True, "200 OK", 200, last_activity(body))
            return HealthResult(False, f"{url} answered {response.status}", response.status)
    except (aiohttp.ClientError, TimeoutError) as error:
        return HealthResult(False, f"{url} unreachable: {error or type(error).__name__}")
