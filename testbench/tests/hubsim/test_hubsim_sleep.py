"""Sleeping (fidelity F30-F35): exact times on a fake clock, then the same through the real client."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from huggingface_hub import HfApi, SpaceHardware

from sandbox_testbench.hubsim import HubSimAdmin, HubSimAdminError, HubSimServer
from sandbox_testbench.hubsim.config import HubSimConfig
from sandbox_testbench.hubsim.state import HubSimError, HubState, KeyValue
from tests.support.clock import ManualClock

TEMPLATE = "tmpl/box"
TOKEN = KeyValue(key="SANDBOX_API_TOKEN", value="sbx")
DAY = 86400.0


@pytest.fixture
def state(clock: ManualClock) -> HubState:
    config = HubSimConfig(
        tokens={"t": "alice"},
        templates=[TEMPLATE],
        build_seconds=10,
        hardware_switch_seconds=4,
        wake_seconds=6,
    )
    return HubState(config, clock=clock)


def _duplicate(state: HubState, target: str, hardware: str, sleep_time: int | None) -> None:
    """Built at 1010 (APP_STARTING from 1005), running on `hardware` from then on."""
    state.duplicate(
        "alice",
        TEMPLATE,
        target_id=target,
        visibility="private",
        hardware=hardware,
        sleep_time=sleep_time,
        secrets=[TOKEN],
        variables=[],
    )


def _stage(state: HubState, space_id: str) -> tuple[str, str | None, str | None]:
    space = state.visible_space("alice", space_id)
    return space.stage, space.current, space.requested


def _app_request(state: HubState, space_id: str) -> int:
    try:
        state.check_sandbox(space_id, "sbx")
    except HubSimError as error:
        return error.status
    return 200


def test_paid_space_sleeps_after_its_idle_time_and_hub_reads_do_not_count(
    state: HubState, clock: ManualClock
) -> None:
    _duplicate(state, "alice/gpu", "t4-small", 600)
    for _ in range(6):  # reads through the Hub API are not visits
        clock.now += 100
        assert _stage(state, "alice/gpu")[0] == "RUNNING"
    clock.now = 1609.9
    assert _stage(state, "alice/gpu") == ("RUNNING", "t4-small", "t4-small")
    clock.now = 5000  # read late: the Space fell asleep at 1610, not now
    assert _stage(state, "alice/gpu") == ("SLEEPING", None, "t4-small")
    space = state.spaces["alice/gpu"]
    assert (space.timeline[-1].monotonic, space.timeline[-1].stage) == (1610.0, "SLEEPING")
    assert space.billed_seconds(clock.now) == {"t4-small": pytest.approx(605.0)}  # APP_STARTING is billed


def test_app_requests_are_activity(state: HubState, clock: ManualClock) -> None:
    _duplicate(state, "alice/gpu", "t4-small", 600)
    clock.now = 1300
    assert _app_request(state, "alice/gpu") == 200
    clock.now = 1899
    assert _stage(state, "alice/gpu")[0] == "RUNNING"
    clock.now = 1900
    assert _stage(state, "alice/gpu")[0] == "SLEEPING"


def test_an_app_request_wakes_a_sleeping_space(state: HubState, clock: ManualClock) -> None:
    _duplicate(state, "alice/gpu", "t4-small", 600)
    clock.now = 2000
    assert _app_request(state, "alice/gpu") == 503  # the waking request finds no app yet
    assert _stage(state, "alice/gpu") == ("APP_STARTING", None, "t4-small")
    clock.now = 2006
    assert _stage(state, "alice/gpu") == ("RUNNING", "t4-small", "t4-small")
    assert _app_request(state, "alice/gpu") == 200
    clock.now = 2606  # asleep again after a full idle period counted from the wake
    assert _stage(state, "alice/gpu")[0] == "SLEEPING"
    billed = state.spaces["alice/gpu"].billed_seconds(clock.now)
    assert billed == {"t4-small": pytest.approx(605.0 + 606.0)}  # nothing while asleep


def test_paid_hardware_never_sleeps_by_default(state: HubState, clock: ManualClock) -> None:
    _duplicate(state, "alice/gpu", "a10g-small", None)
    clock.now += 30 * DAY
    assert _stage(state, "alice/gpu")[0] == "RUNNING"
    assert state.spaces["alice/gpu"].gc_timeout is None


def test_cpu_basic_sleeps_after_48_hours_whatever_was_asked(state: HubState, clock: ManualClock) -> None:
    _duplicate(state, "alice/free", "cpu-basic", 600)
    space = state.spaces["alice/free"]
    assert (space.sleep_time, space.gc_timeout) == (None, 172800)
    state.set_sleep_time("alice", "alice/free", 300)
    assert (space.sleep_time, space.gc_timeout) == (None, 172800)
    clock.now = 1010 + 2 * DAY - 1
    assert _stage(state, "alice/free")[0] == "RUNNING"
    clock.now += 1
    assert _stage(state, "alice/free")[0] == "SLEEPING"
    assert space.billed_seconds(clock.now) == {"cpu-basic": pytest.approx(2 * DAY + 5)}


def test_a_shorter_sleep_time_puts_an_idle_space_to_sleep_now_not_in_the_past(
    state: HubState, clock: ManualClock
) -> None:
    _duplicate(state, "alice/gpu", "t4-small", None)
    clock.now = 5000
    state.set_sleep_time("alice", "alice/gpu", 600)
    assert _stage(state, "alice/gpu")[0] == "SLEEPING"
    assert state.spaces["alice/gpu"].timeline[-1].monotonic == 5000.0


def test_hardware_requested_while_asleep_is_used_at_the_wake(state: HubState, clock: ManualClock) -> None:
    _duplicate(state, "alice/gpu", "t4-small", 600)
    clock.now = 2000
    state.request_hardware("alice", "alice/gpu", "a10g-small", None)
    assert _stage(state, "alice/gpu") == ("SLEEPING", None, "a10g-small")
    _app_request(state, "alice/gpu")
    clock.now = 2006
    assert _stage(state, "alice/gpu") == ("RUNNING", "a10g-small", "a10g-small")


def test_sleep_now_needs_a_running_space(state: HubState, clock: ManualClock) -> None:
    _duplicate(state, "alice/gpu", "t4-small", None)
    with pytest.raises(HubSimError) as building:
        state.sleep_now("alice/gpu")
    assert building.value.status == 409
    clock.now = 1010
    assert state.sleep_now("alice/gpu").stage == "SLEEPING"


def test_pause_and_restart_from_sleep(state: HubState, clock: ManualClock) -> None:
    _duplicate(state, "alice/gpu", "t4-small", 600)
    clock.now = 2000
    assert state.pause("alice", "alice/gpu").stage == "PAUSED"
    assert _app_request(state, "alice/gpu") == 503  # a paused Space is not woken by visits
    assert _stage(state, "alice/gpu")[0] == "PAUSED"
    assert state.restart("alice", "alice/gpu").stage == "BUILDING"


# -- through the real client ---------------------------------------------------------------------


def _health(hub: HubSimServer, space_id: str) -> int:
    request = urllib.request.Request(
        f"{hub.url}/_sandbox/{space_id.replace('/', '-')}/health",
        # Through the edge of a private Space: the owner's Hub token, then the sandbox token.
        headers={"Authorization": "Bearer hf_alice", "X-Sandbox-Authorization": "Bearer sbx"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_sleep_time_through_the_client_and_billing_in_the_admin_view(
    hub: HubSimServer, alice: HfApi, admin: HubSimAdmin, template: str
) -> None:
    alice.duplicate_repo(
        template,
        "alice/gpu",
        repo_type="space",
        private=True,
        space_hardware=SpaceHardware.T4_SMALL,
        space_sleep_time=3600,
        space_secrets=[{"key": "SANDBOX_API_TOKEN", "value": "sbx"}],
    )
    assert alice.get_space_runtime("alice/gpu").sleep_time == 3600  # duplicate accepts it (F35)
    assert alice.set_space_sleep_time("alice/gpu", 900).sleep_time == 900
    runtime = alice.request_space_hardware("alice/gpu", SpaceHardware.T4_SMALL, sleep_time=1200)
    assert runtime.sleep_time == 1200
    admin.sleep("alice/gpu")
    asleep = alice.get_space_runtime("alice/gpu")
    assert (asleep.stage, asleep.hardware, asleep.requested_hardware) == ("SLEEPING", None, "t4-small")
    assert alice.space_info("alice/gpu").runtime.stage == "SLEEPING"  # Hub reads do not wake it
    billed = admin.space("alice/gpu")["billing"]
    assert set(billed["seconds"]) == {"t4-small"} and billed["usd"] > 0
    assert _health(hub, "alice/gpu") == 503  # the waking request finds no app yet
    assert _health(hub, "alice/gpu") == 200  # zero wake delay in these tests
    assert alice.get_space_runtime("alice/gpu").stage == "RUNNING"
    timeline = [sample["stage"] for sample in admin.space("alice/gpu")["timeline"]]
    assert timeline[-3:] == ["SLEEPING", "APP_STARTING", "RUNNING"]
    admin.set_stage("alice/gpu", "BUILDING")
    with pytest.raises(HubSimAdminError) as caught:
        admin.sleep("alice/gpu")
    assert caught.value.status == 409


def test_sleep_time_on_cpu_basic_is_fixed_and_the_client_warns(alice: HfApi, template: str) -> None:
    alice.duplicate_repo(template, "alice/free", repo_type="space", private=True, space_sleep_time=600)
    with pytest.warns(UserWarning, match="48 hours"):
        assert alice.set_space_sleep_time("alice/free", 600).sleep_time == 172800
    with pytest.warns(UserWarning, match="48 hours"):
        alice.request_space_hardware("alice/free", SpaceHardware.CPU_BASIC, sleep_time=600)
    assert alice.get_space_runtime("alice/free").sleep_time == 172800


def test_never_sleep(alice: HfApi, template: str) -> None:
    alice.duplicate_repo(template, "alice/gpu", repo_type="space", space_hardware=SpaceHardware.L4X1)
    assert alice.get_space_runtime("alice/gpu").sleep_time is None
    assert alice.set_space_sleep_time("alice/gpu", 600).sleep_time == 600
    assert alice.set_space_sleep_time("alice/gpu", -1).sleep_time is None


def test_a_switch_that_stays_running_never_puts_sleep_before_it(clock: ManualClock) -> None:
    config = HubSimConfig(
        tokens={"t": "alice"}, templates=[TEMPLATE], build_seconds=10, hardware_switch_stage="RUNNING"
    )
    state = HubState(config, clock=clock)
    _duplicate(state, "alice/gpu", "t4-small", 600)
    clock.now = 1609
    state.request_hardware("alice", "alice/gpu", "a10g-small", None)  # done at 1612, "RUNNING" throughout
    clock.now = 5000
    assert _stage(state, "alice/gpu") == ("SLEEPING", None, "a10g-small")
    timeline = state.spaces["alice/gpu"].timeline
    assert [(s.monotonic, s.stage) for s in timeline[-2:]] == [(1612.0, "RUNNING"), (1612.0, "SLEEPING")]
