"""The pure state machine on a fake clock: exact transition times, no HTTP, no sleeping."""

from __future__ import annotations

import pytest

from sandbox_testbench.hubsim.config import HubSimConfig
from sandbox_testbench.hubsim.state import HubSimError, HubState, KeyValue
from tests.support.clock import ManualClock

TEMPLATE = "tmpl/box"


@pytest.fixture
def state(clock: ManualClock) -> HubState:
    config = HubSimConfig(
        tokens={"t": "alice"}, templates=[TEMPLATE], build_seconds=10, hardware_switch_seconds=4
    )
    return HubState(config, clock=clock)


def _duplicate(state: HubState, target: str, hardware: str | None = None) -> None:
    state.duplicate(
        "alice",
        TEMPLATE,
        target_id=target,
        visibility=None,
        hardware=hardware,
        sleep_time=None,
        secrets=[],
        variables=[],
    )


def _observe(state: HubState, space_id: str) -> tuple[str, str | None, str | None]:
    space = state.visible_space("alice", space_id)
    return space.stage, space.current, space.requested


def test_build_timeline(state: HubState, clock: ManualClock) -> None:
    _duplicate(state, "alice/a", "t4-small")
    assert _observe(state, "alice/a") == ("BUILDING", None, "t4-small")
    clock.now += 4.99
    assert _observe(state, "alice/a")[0] == "BUILDING"
    clock.now += 0.01
    assert _observe(state, "alice/a") == ("APP_STARTING", None, "t4-small")
    clock.now += 5
    assert _observe(state, "alice/a") == ("RUNNING", "t4-small", "t4-small")
    history = state.spaces["alice/a"].hardware_history()
    assert [(h.monotonic, h.current) for h in history] == [(1000.0, None), (1010.0, "t4-small")]


def test_late_read_stamps_history_at_the_due_time(state: HubState, clock: ManualClock) -> None:
    _duplicate(state, "alice/a")
    clock.now += 500
    assert _observe(state, "alice/a")[0] == "RUNNING"
    assert state.spaces["alice/a"].hardware_history()[-1].monotonic == 1010.0


def test_hardware_switch_timeline(state: HubState, clock: ManualClock) -> None:
    _duplicate(state, "alice/a")
    clock.now += 10
    state.request_hardware("alice", "alice/a", "l4x1", None)
    assert _observe(state, "alice/a") == ("RUNNING_APP_STARTING", "cpu-basic", "l4x1")
    clock.now += 4
    assert _observe(state, "alice/a") == ("RUNNING", "l4x1", "l4x1")
    samples = [(h.monotonic, h.current, h.requested) for h in state.spaces["alice/a"].hardware_history()]
    assert samples[-2:] == [(1010.0, "cpu-basic", "l4x1"), (1014.0, "l4x1", "l4x1")]


def test_same_flavor_on_running_space_is_a_no_op(state: HubState, clock: ManualClock) -> None:
    _duplicate(state, "alice/a")
    clock.now += 10
    state.request_hardware("alice", "alice/a", "cpu-basic", None)
    assert _observe(state, "alice/a") == ("RUNNING", "cpu-basic", "cpu-basic")


def test_switch_stage_is_configurable(clock: ManualClock) -> None:
    config = HubSimConfig(
        tokens={"t": "alice"}, templates=[TEMPLATE], build_seconds=0, hardware_switch_stage="RUNNING"
    )
    state = HubState(config, clock=clock)
    _duplicate(state, "alice/a")
    state.request_hardware("alice", "alice/a", "t4-small", None)
    assert _observe(state, "alice/a") == ("RUNNING", "cpu-basic", "t4-small")  # the ml-intern trap


def test_hardware_request_while_paused_waits_for_restart(state: HubState, clock: ManualClock) -> None:
    _duplicate(state, "alice/a")
    clock.now += 10
    state.pause("alice", "alice/a")
    state.request_hardware("alice", "alice/a", "t4-small", None)
    clock.now += 100
    assert _observe(state, "alice/a") == ("PAUSED", None, "t4-small")
    state.restart("alice", "alice/a")
    clock.now += 10
    assert _observe(state, "alice/a") == ("RUNNING", "t4-small", "t4-small")


def test_a_secret_change_restarts_a_running_app_and_a_variable_change_does_not(
    state: HubState, clock: ManualClock
) -> None:
    """fidelity: F42. A running app reads its secrets at its start, and the Hub restarts it for any
    change: the new token is never live in the running app, which answers nothing until it is back."""

    def answers(token: str) -> int:
        try:
            state.check_sandbox("alice/a", token)
        except HubSimError as error:
            return error.status
        return 200

    state.duplicate(
        "alice", TEMPLATE, target_id="alice/a", visibility=None, hardware=None, sleep_time=None,
        secrets=[KeyValue(key="SANDBOX_API_TOKEN", value="built")], variables=[],
    )  # fmt: skip
    clock.now += 10
    assert answers("built") == 200

    state.set_entry("alice", "alice/a", "variables", KeyValue(key="ANY", value="v"))
    assert (_observe(state, "alice/a")[0], answers("built")) == ("RUNNING", 200)

    state.set_entry("alice", "alice/a", "secrets", KeyValue(key="SANDBOX_API_TOKEN", value="new"))
    assert _observe(state, "alice/a") == ("BUILDING", None, "cpu-basic")  # a restart, as POST /restart
    assert (answers("built"), answers("new")) == (503, 503)
    clock.now += 10
    assert (answers("built"), answers("new")) == (401, 200)

    state.delete_entry("alice", "alice/a", "secrets", "OTHER")  # nothing to delete: no change
    assert _observe(state, "alice/a")[0] == "RUNNING"
    state.delete_entry("alice", "alice/a", "secrets", "SANDBOX_API_TOKEN")
    assert (_observe(state, "alice/a")[0], answers("new")) == ("BUILDING", 503)
    clock.now += 10
    state.pause("alice", "alice/a")
    state.set_entry("alice", "alice/a", "secrets", KeyValue(key="SANDBOX_API_TOKEN", value="later"))
    assert _observe(state, "alice/a")[0] == "PAUSED"  # not running: taken at its next start
    state.restart("alice", "alice/a")
    clock.now += 10
    assert answers("later") == 200


def test_build_failures_only_consume_builds_that_would_run(state: HubState, clock: ManualClock) -> None:
    state.build_failures.count = 1
    state.create_space(
        "alice",
        namespace=None,
        name="readme-only",
        repo_type="space",
        sdk="docker",
        visibility=None,
        hardware=None,
        sleep_time=None,
        secrets=[KeyValue(key="K", value="v")],
        variables=[],
    )
    clock.now += 10
    assert _observe(state, "alice/readme-only")[0] == "NO_APP_FILE"
    assert state.build_failures.count == 1
    _duplicate(state, "alice/a")
    clock.now += 10
    assert _observe(state, "alice/a") == ("BUILD_ERROR", None, "cpu-basic")
    assert state.build_failures.count == 0


def test_refusal_order(state: HubState) -> None:
    _duplicate(state, "alice/a")
    with pytest.raises(HubSimError) as caught:
        state.request_hardware(None, "alice/a", "t4-small", None)
    assert caught.value.status == 401
    with pytest.raises(HubSimError) as caught:
        state.request_hardware("alice", "alice/missing", "t4-small", None)
    assert (caught.value.status, caught.value.code) == (404, "RepoNotFound")
    with pytest.raises(HubSimError) as caught:
        state.request_hardware("bob", "alice/a", "t4-small", None)
    assert caught.value.status == 403


def test_config_rejects_bad_templates() -> None:
    with pytest.raises(ValueError, match="namespace/name"):
        HubSimConfig(templates=["no-namespace"])
    with pytest.raises(ValueError):
        HubSimConfig(build_seconds=-1)


def _build_end(state: HubState, clock: ManualClock, space_id: str) -> float:
    _duplicate(state, space_id)
    return state.spaces[space_id].pending[-1].due - clock.now


def test_build_times_drawn_from_a_seeded_range(clock: ManualClock) -> None:
    def durations(seed: int) -> list[float]:
        config = HubSimConfig(
            tokens={"t": "alice"},
            templates=[TEMPLATE],
            build_seconds=60,
            build_seconds_max=120,
            build_seed=seed,
        )
        state = HubState(config, clock=clock)
        return [_build_end(state, clock, f"alice/s{i}") for i in range(20)]

    first = durations(7)
    assert all(60 <= d <= 120 for d in first) and len(set(first)) == 20
    assert durations(7) == first and durations(8) != first


def test_reset_restarts_the_build_time_sequence(clock: ManualClock) -> None:
    config = HubSimConfig(tokens={"t": "alice"}, templates=[TEMPLATE], build_seconds=1, build_seconds_max=9)
    state = HubState(config, clock=clock)
    before = [_build_end(state, clock, f"alice/s{i}") for i in range(3)]
    state.reset()
    assert [_build_end(state, clock, f"alice/s{i}") for i in range(3)] == before
