"""Driving the operator's Hub client against the emulator."""

from __future__ import annotations

import asyncio
from datetime import datetime

import pytest

from sandbox_operator.config.settings import OperatorConfig
from sandbox_operator.hub.client import HubClient
from sandbox_operator.hub.errors import HubError
from sandbox_testbench.hubsim.views import sandbox_url_template


def client_for(hub_url: str, template: str) -> HubClient:
    """The operator's Hub client acting as the emulator user `alice`, owner of the Spaces it makes."""
    config = OperatorConfig(
        hub_endpoint=hub_url,
        sandbox_url_template=sandbox_url_template(hub_url),
        hub_token="hf_alice",
        default_owner="alice",
        default_template=template,
        cluster_id="c1",
    )
    return HubClient(config)


def failure_of(call: object) -> HubError:
    """The HubError a client call raises (it fails the test if it raises none)."""
    with pytest.raises(HubError) as raised:
        asyncio.run(call)  # type: ignore[arg-type]
    return raised.value


def duplicate(
    client: HubClient, template: str, space_id: str, uid: str = "u1", send_by: datetime | None = None
) -> None:
    """Duplicate `template` as the private Space of session `team/s` (UID `uid`), as the operator does."""
    asyncio.run(
        client.duplicate(
            template=template,
            space_id=space_id,
            private=True,
            token="sbx_t",
            secrets={},
            session_uid=uid,
            session_ref="team/s",
            send_by=send_by,
        )
    )
