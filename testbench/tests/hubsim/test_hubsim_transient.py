"""Transient errors after a private duplicate (fidelity F36), as the real client raises them."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from huggingface_hub import HfApi, SpaceHardware, SpaceRuntime
from huggingface_hub.errors import RepositoryNotFoundError

from sandbox_testbench.hubsim import HubSimAdmin, HubSimServer
from sandbox_testbench.hubsim.state import TRANSIENT_STATUS
from tests.support import wait_until


def _status_of(call: Callable[[], object]) -> int:
    with pytest.raises(RepositoryNotFoundError) as caught:
        call()
    return caught.value.response.status_code


def _duplicate(api: HfApi, template: str, space_id: str, *, private: bool = True) -> None:
    api.duplicate_repo(
        template,
        space_id,
        repo_type="space",
        private=private,
        space_hardware=SpaceHardware.T4_SMALL,
        space_sleep_time=600,
        space_variables=[{"key": "MARK", "value": "m"}],
    )


def _runtime_or_none(api: HfApi, space_id: str) -> SpaceRuntime | None:
    try:
        return api.get_space_runtime(space_id)
    except RepositoryNotFoundError:
        return None


def test_fresh_private_duplicate_fails_hardware_secrets_runtime_and_info_for_a_while(
    alice: HfApi, admin: HubSimAdmin, template: str
) -> None:
    admin.set_delays(transient_errors=0.5)
    _duplicate(alice, template, "alice/ghost")
    assert _status_of(lambda: alice.request_space_hardware("alice/ghost", SpaceHardware.A10G_SMALL)) == 401
    with pytest.raises(RepositoryNotFoundError) as caught:
        alice.add_space_secret("alice/ghost", "K", "v")
    assert caught.value.server_message == "Invalid username or password."
    assert _status_of(lambda: alice.get_space_runtime("alice/ghost")) == 404
    assert _status_of(lambda: alice.space_info("alice/ghost")) == 404
    assert _status_of(lambda: alice.wait_for_space("alice/ghost", timeout=1)) == 404  # it does not wait
    assert alice.get_space_variables("alice/ghost")["MARK"].value == "m"  # other routes answer
    runtime = wait_until(
        lambda: _runtime_or_none(alice, "alice/ghost"),
        lambda r: r is not None,
        3.0,
        "the runtime",
        interval=0.02,
    )
    # What the duplicate asked for holds, without any /hardware call.
    assert (runtime.stage, runtime.hardware, runtime.sleep_time) == ("RUNNING", "t4-small", 600)
    assert set(TRANSIENT_STATUS) == {"hardware", "secrets", "runtime", "space_info"}


def test_the_window_can_be_counted_in_calls(hub_factory: Callable[..., HubSimServer], template: str) -> None:
    hub = hub_factory(transient_error_calls=2)
    alice = HfApi(endpoint=hub.url, token="hf_alice")
    _duplicate(alice, template, "alice/ghost")
    assert _status_of(lambda: alice.get_space_runtime("alice/ghost")) == 404
    assert _status_of(lambda: alice.request_space_hardware("alice/ghost", SpaceHardware.T4_SMALL)) == 401
    assert alice.get_space_runtime("alice/ghost").stage == "RUNNING"


def test_public_duplicates_and_other_callers_see_no_transient_errors(
    alice: HfApi, bob: HfApi, admin: HubSimAdmin, template: str
) -> None:
    admin.set_delays(transient_errors=30, transient_error_calls=5)
    _duplicate(alice, template, "alice/open", private=False)
    assert alice.get_space_runtime("alice/open").stage == "RUNNING"
    _duplicate(alice, template, "alice/ghost")
    assert _status_of(lambda: bob.get_space_runtime("alice/ghost")) == 404  # invisible anyway
    admin.set_delays(transient_errors=0, transient_error_calls=0)
    _duplicate(alice, template, "alice/later")
    assert alice.get_space_runtime("alice/later").stage == "RUNNING"


def test_off_by_default_in_these_tests(alice: HfApi, template: str) -> None:
    _duplicate(alice, template, "alice/box")
    assert alice.request_space_hardware("alice/box", SpaceHardware.T4_SMALL).requested_hardware == "t4-small"
