"""The Hub emulator as pytest fixtures, driven through the real huggingface_hub client, and the
operator's Hub client on it.

Shared by the emulator's own tests (testbench/tests/hubsim) and the operator's Hub client tests
(tests/hub): each conftest.py there imports the fixtures it offers from here.
"""

from __future__ import annotations

import os

# Set before huggingface_hub is imported, else it fetches /api/agent-harnesses from huggingface.co (doc §1.6).
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

import asyncio
import time
from collections.abc import Iterator
from typing import Any, Protocol

import pytest
from huggingface_hub import HfApi, constants, set_client_factory
from huggingface_hub.utils._http import default_client_factory

from sandbox_operator.hub.client import HubClient
from sandbox_testbench.hubsim import HubSimAdmin, HubSimConfig, HubSimServer
from tests.support.clock import ManualClock
from tests.support.hub import client_for

TEMPLATE = "sandbox-templates/agent-sandbox"
TOKENS = {"hf_alice": "alice", "hf_bob": "bob"}


class HubFactory(Protocol):
    def __call__(self, **overrides: Any) -> HubSimServer: ...


def _config(**overrides: Any) -> HubSimConfig:
    """Two users, alice in org `acme`, one template, and no delays unless a test asks for them."""
    settings: dict[str, Any] = {
        "tokens": TOKENS,
        "orgs": {"alice": ["acme"]},
        "templates": [TEMPLATE],
        "build_seconds": 0,
        "hardware_switch_seconds": 0,
        "wake_seconds": 0,
        "transient_error_seconds": 0,
    }
    settings.update(overrides)
    return HubSimConfig(**settings)


@pytest.fixture(autouse=True, scope="session")
def no_telemetry() -> None:
    """Also flip the module constant, in case another test package imported huggingface_hub first."""
    constants.HF_HUB_DISABLE_TELEMETRY = True


@pytest.fixture
def clock() -> ManualClock:
    """The emulator's clock, moved by the test."""
    return ManualClock(1000.0)


@pytest.fixture
def template() -> str:
    return TEMPLATE


@pytest.fixture
def hub_factory() -> Iterator[HubFactory]:
    """Start extra emulators with config overrides; all are stopped at teardown."""
    servers: list[HubSimServer] = []

    def start(**overrides: Any) -> HubSimServer:
        server = HubSimServer(_config(**overrides)).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def hub(hub_factory: HubFactory) -> HubSimServer:
    return hub_factory()


@pytest.fixture
def admin(hub: HubSimServer) -> HubSimAdmin:
    return hub.admin


@pytest.fixture
def alice(hub: HubSimServer) -> HfApi:
    return HfApi(endpoint=hub.url, token="hf_alice")


@pytest.fixture
def bob(hub: HubSimServer) -> HfApi:
    return HfApi(endpoint=hub.url, token="hf_bob")


@pytest.fixture
def anonymous(hub: HubSimServer) -> HfApi:
    return HfApi(endpoint=hub.url, token=False)


@pytest.fixture
def client(hub: HubSimServer, template: str) -> Iterator[HubClient]:
    """The operator's Hub client; it installs its gate in huggingface_hub's global client, so other
    tests get the default back."""
    hub_client = client_for(hub.url, template)
    yield hub_client
    asyncio.run(hub_client.close())
    set_client_factory(default_client_factory)


def early_in_a_window(admin: HubSimAdmin, needed: float = 20.0) -> None:
    """Rate-limit windows are aligned on the emulator's clock: a test counting calls in one window
    starts with `needed` seconds of it left, rather than across its end (once in a few hundred runs)."""
    standing = admin.rate_limit()
    left = standing["window"] - standing["intoWindow"]
    if left < needed:
        time.sleep(left + 0.1)
