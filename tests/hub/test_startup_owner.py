"""The default owner is found once before the operator starts: the token's user, from the Hub's whoami."""

from __future__ import annotations

import pytest

from sandbox_operator.config.settings import OperatorConfig
from sandbox_operator.startup import token_user
from sandbox_testbench.hubsim import HubSimServer


class Stop(Exception):
    pass


def test_the_default_owner_is_the_tokens_user(hub: HubSimServer) -> None:
    assert token_user(OperatorConfig(hub_endpoint=hub.url, hub_token="hf_bob")) == "bob"


def test_a_rejected_token_is_asked_again_no_sooner_than_the_credentials_backoff(hub: HubSimServer) -> None:
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        raise Stop

    config = OperatorConfig(hub_endpoint=hub.url, hub_token="hf_nobody", credentials_backoff_min=45)
    with pytest.raises(Stop):
        token_user(config, sleep=sleep)
    assert waits == [45]
