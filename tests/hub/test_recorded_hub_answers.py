"""The Hub's recorded Space-API answers, replayed against the emulator (fidelity F14, F8, F10, F21, F22).

Source: huggingface/huggingface_hub, tests/cassettes/TestSpaceAPIProduction.*.yaml at commit
aef0d8d83590629a9f06e846c66f48d4d777795d (recorded 2025-03-07 against huggingface.co; unchanged
up to main ee0a4510f4bc15e26cb722be2efc2bdb01383ca0). No huggingface_hub sdist ships the
cassettes (checked: the 2.4.0 sdist on PyPI has tests/*.py but no tests/cassettes/), so the
responses below are transcribed by hand: every interaction of the five cassettes on a route the
emulator serves, with its request and recorded status and body. The preupload, commit and
`revision/main?expand=xetEnabled` interactions (the test fixture's upload of app.py) are left out:
the emulator does not serve commits (F42).

For each interaction, the same request (same method, path and body, as user `user`) is sent to the
emulator; both answers must have the recorded status, parse with the client's own parsers, and
have the same keys with the same JSON types.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest
from huggingface_hub import SpaceRuntime, SpaceVariable
from huggingface_hub.hf_api import RepoUrl

from sandbox_testbench.hubsim import HubSimServer

CASSETTES = "huggingface_hub@aef0d8d8:tests/cassettes/TestSpaceAPIProduction"
RECORDED_ENDPOINT = "https://huggingface.co"
SPACE = "user/tmp_test_space"
STATIC_SPACE = "victor/static-space"
URL = f"{RECORDED_ENDPOINT}/spaces/{SPACE}"
CREATE = {"name": "tmp_test_space", "organization": "user", "private": True, "type": "space", "sdk": "gradio"}
DELETE = {"name": "tmp_test_space", "organization": "user", "type": "space"}
BUILDING = (
    '{"stage":"BUILDING","hardware":{"current":null,"requested":"cpu-basic"},"storage":null,'
    '"gcTimeout":172800,"replicas":{"requested":1},"devMode":false,'
    '"domains":[{"domain":"user-tmp-test-space.hf.space","stage":"READY"}]}'
)
PAUSED = BUILDING.replace('"stage":"BUILDING"', '"stage":"PAUSED"', 1)
FOO = '"foo":{"value":"123","updatedAt":"2025-03-07T12:24:18.657Z"}'
REPO = '"MODEL_REPO_ID":{"value":"user/repo","updatedAt":"2025-03-07T12:24:19.140Z"}'
PAPER = (
    '"MODEL_PAPER":{"value":"arXiv","description":"found it there","updatedAt":"2025-03-07T12:24:19.337Z"}'
)
FOO_456 = '"foo":{"value":"456","updatedAt":"2025-03-07T12:24:19.651Z"}'
FOO_DESC = '"foo":{"value":"456","description":"updated description","updatedAt":"2025-03-07T12:24:19.875Z"}'


@dataclass(frozen=True)
class Recorded:
    """One recorded interaction: the request sent and the Hub's answer."""

    method: str
    path: str
    body: dict[str, Any] | None
    status: int
    answer: str


def _runtime(text: str, endpoint: str) -> object:
    return SpaceRuntime(json.loads(text))


def _variables(text: str, endpoint: str) -> object:
    return {key: SpaceVariable(key, value) for key, value in json.loads(text).items()}


def _repo_url(text: str, endpoint: str) -> object:
    return RepoUrl(json.loads(text)["url"], endpoint=endpoint)


def _no_parser(text: str, endpoint: str) -> object:
    """The client reads nothing from these answers (secrets, delete): only the status counts."""
    return text


#: The client's parser for each route, as the HfApi method that calls it uses it (with its endpoint).
PARSERS: dict[str, Callable[[str, str], object]] = {
    "runtime": _runtime,
    "pause": _runtime,
    "restart": _runtime,
    "variables": _variables,
    "create": _repo_url,
    "secrets": _no_parser,
    "delete": _no_parser,
}


def _route(path: str) -> str:
    """create, delete, runtime, pause, ...: the last path segment names the route here."""
    return path.rsplit("/", 1)[-1]


SECRETS = "/api/spaces/user/tmp_test_space/secrets"
VARIABLES = "/api/spaces/user/tmp_test_space/variables"
CREATED = Recorded(
    "POST",
    "/api/repos/create",
    CREATE,
    200,
    f'{{"url":"{URL}","name":"{SPACE}","id":"67cae56f9b4f4ee4713c83e7"}}',
)
DELETED = Recorded("DELETE", "/api/repos/delete", DELETE, 200, "OK")

#: cassette -> its interactions on emulated routes, in recorded order.
RECORDINGS: dict[str, list[Recorded]] = {
    "test_manage_secrets": [
        Recorded(
            "POST", "/api/repos/create", CREATE, 409,
            f'{{"error":"You already created this space repo","url":"{URL}"}}',
        ),
        Recorded("POST", SECRETS, {"key": "foo", "value": "123"}, 200, "{}"),
        Recorded(
            "POST", SECRETS, {"key": "bar", "value": "123", "description": "This is a secret"}, 200, "{}"
        ),
        Recorded("POST", SECRETS, {"key": "foo", "value": "456"}, 200, "{}"),
        Recorded("DELETE", SECRETS, {"key": "gh_api_key"}, 200, "{}"),
        Recorded("DELETE", SECRETS, {"key": "missing_key"}, 200, "{}"),
        DELETED,
    ],
    "test_manage_variables": [
        CREATED,
        Recorded("GET", VARIABLES, None, 200, "{}"),
        Recorded("POST", VARIABLES, {"key": "foo", "value": "123"}, 200, f"{{{FOO}}}"),
        Recorded("POST", VARIABLES, {"key": "MODEL_REPO_ID", "value": "user/repo"}, 200, f"{{{FOO},{REPO}}}"),
        Recorded(
            "POST", VARIABLES, {"key": "MODEL_PAPER", "value": "arXiv", "description": "found it there"},
            200, f"{{{FOO},{REPO},{PAPER}}}",
        ),
        Recorded("POST", VARIABLES, {"key": "foo", "value": "456"}, 200, f"{{{FOO_456},{REPO},{PAPER}}}"),
        Recorded(
            "POST", VARIABLES, {"key": "foo", "value": "456", "description": "updated description"},
            200, f"{{{FOO_DESC},{REPO},{PAPER}}}",
        ),
        Recorded("DELETE", VARIABLES, {"key": "gh_api_key"}, 200, f"{{{FOO_DESC},{REPO},{PAPER}}}"),
        Recorded("DELETE", VARIABLES, {"key": "missing_key"}, 200, f"{{{FOO_DESC},{REPO},{PAPER}}}"),
        Recorded("GET", VARIABLES, None, 200, f"{{{FOO_DESC},{REPO},{PAPER}}}"),
        DELETED,
    ],
    "test_pause_and_restart_space": [
        CREATED,
        Recorded("GET", "/api/spaces/user/tmp_test_space/runtime", None, 200, BUILDING),
        Recorded("POST", "/api/spaces/user/tmp_test_space/pause", None, 200, PAUSED),
        Recorded("POST", "/api/spaces/user/tmp_test_space/restart", None, 200, BUILDING),
        Recorded("GET", "/api/spaces/user/tmp_test_space/runtime", None, 200, BUILDING),
        DELETED,
    ],
    "test_space_runtime": [
        CREATED,
        Recorded("GET", "/api/spaces/user/tmp_test_space/runtime", None, 200, BUILDING),
        DELETED,
    ],
    "test_static_space_runtime": [
        CREATED,
        Recorded(
            "GET", f"/api/spaces/{STATIC_SPACE}/runtime", None, 200,
            '{"stage":"RUNNING","hardware":{"current":null,"requested":null},"storage":null,'
            '"replicas":{"requested":1,"current":1}}',
        ),
        DELETED,
    ],
}  # fmt: skip


def shape(value: Any) -> Any:
    """Keys and JSON types, recursively: what a parser depends on, not the values."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(item) for item in value]
    return type(value).__name__


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


@pytest.mark.parametrize("cassette", sorted(RECORDINGS))
def test_recorded_answers_and_the_emulators_parse_alike(
    cassette: str, hub_factory: Callable[..., HubSimServer]
) -> None:
    # Slow builds: the recorded Space was still BUILDING (after its app.py upload) when read.
    hub = hub_factory(tokens={"hf_fake_token": "user"}, build_seconds=600, templates=[])
    hub.admin.plant_space(STATIC_SPACE, sdk="static")
    if cassette == "test_manage_secrets":  # the Space existed before the recording (409 on create)
        httpx2.post(
            f"{hub.url}/api/repos/create", json=CREATE, headers={"Authorization": "Bearer hf_fake_token"}
        )
    with httpx2.Client(base_url=hub.url, headers={"Authorization": "Bearer hf_fake_token"}) as http:
        for step, recorded in enumerate(RECORDINGS[cassette]):
            where = f"{CASSETTES}.{cassette}.yaml, interaction {step}: {recorded.method} {recorded.path}"
            answer = http.request(recorded.method, recorded.path, json=recorded.body)
            assert answer.status_code == recorded.status, where
            parse = PARSERS[_route(recorded.path)]
            parse(recorded.answer, RECORDED_ENDPOINT)  # the client accepts what the Hub said ...
            parse(answer.text, hub.url)  # ... and what the emulator says
            expected, got = _json_or_text(recorded.answer), _json_or_text(answer.text)
            if isinstance(expected, str):
                assert got == expected, where
            else:
                assert shape(got) == shape(expected), where


def test_every_route_with_a_recording_has_a_parser() -> None:
    routes = {_route(recorded.path) for recordings in RECORDINGS.values() for recorded in recordings}
    assert routes == set(PARSERS)
