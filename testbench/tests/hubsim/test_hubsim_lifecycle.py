"""Space lifecycle through the real client: builds, hardware switches, pause/restart, failures, 404s."""

from __future__ import annotations

import time
from typing import cast

import pytest
from huggingface_hub import HfApi, SpaceHardware, SpaceRuntime
from huggingface_hub.errors import BadRequestError

from sandbox_testbench.hubsim import HubSimAdmin, HubSimServer
from tests.support import wait_until

#: Not a SpaceHardware member: typed as one to reach the server-side validation.
BOGUS_FLAVOR = cast(SpaceHardware, "quantum-xl")


def test_duplicate_builds_then_runs(alice: HfApi, admin: HubSimAdmin, template: str) -> None:
    admin.set_delays(build=1.0)  # long enough to be read while building on a busy machine
    url = alice.duplicate_repo(
        template, "alice/box", repo_type="space", space_hardware=SpaceHardware.T4_SMALL
    )
    assert url.repo_id == "alice/box"
    assert url.repo_type == "space"

    first = alice.get_space_runtime("alice/box")
    assert first.stage in ("BUILDING", "APP_STARTING")  # exact boundaries: test_hubsim_state.py
    assert (first.hardware, first.requested_hardware) == (None, "t4-small")
    assert first.raw["hardware"] == {"current": None, "requested": "t4-small"}

    seen: list[str] = []

    def stage() -> SpaceRuntime:
        runtime = alice.get_space_runtime("alice/box")
        seen.append(runtime.stage)
        return runtime

    final = wait_until(stage, lambda r: r.stage == "RUNNING", 10.0, "RUNNING", interval=0.02)
    assert (final.hardware, final.requested_hardware) == ("t4-small", "t4-small")
    assert set(seen) <= {"BUILDING", "APP_STARTING", "RUNNING"}
    assert seen.index("RUNNING") == len(seen) - 1


def test_zero_delay_runs_on_next_read(alice: HfApi, template: str) -> None:
    alice.duplicate_repo(template, "alice/quick", repo_type="space")
    runtime = alice.get_space_runtime("alice/quick")
    assert runtime.stage == "RUNNING"
    assert (runtime.hardware, runtime.requested_hardware) == ("cpu-basic", "cpu-basic")
    assert runtime.sleep_time == 172800  # free hardware sleeps after 48 h, not configurable


def test_wait_for_space_returns_running_runtime(alice: HfApi, admin: HubSimAdmin, template: str) -> None:
    admin.set_delays(build=0.2)
    alice.duplicate_repo(template, "alice/waited", repo_type="space")
    runtime = alice.wait_for_space("alice/waited", timeout=5, poll_interval=0.05)
    assert runtime.stage == "RUNNING"


def test_space_info_embeds_runtime_and_metadata(alice: HfApi, hub: HubSimServer, template: str) -> None:
    alice.duplicate_repo(template, "alice/info", repo_type="space", private=True)
    info = alice.space_info("alice/info")
    assert info.id == "alice/info"
    assert info.author == "alice"
    assert info.private is True
    assert info.sdk == "docker"
    assert info.subdomain == "alice-info"
    assert info.host == f"{hub.url}/_sandbox/alice-info"
    assert info.created_at is not None and info.last_modified is not None
    assert info.runtime is not None and info.runtime.stage == "RUNNING"
    assert info.card_data is not None and info.card_data.duplicated_from == template
    assert info.siblings is not None and "app.py" in {s.rfilename for s in info.siblings}

    expanded = alice.space_info("alice/info", expand=["runtime", "sdk"])
    assert expanded.runtime is not None and expanded.sdk == "docker"
    assert expanded.host is None  # `expand` answers only the id and what was asked


def test_hardware_switch_requested_first_current_later(
    alice: HfApi, admin: HubSimAdmin, template: str
) -> None:
    alice.duplicate_repo(template, "alice/gpu", repo_type="space")
    assert alice.get_space_runtime("alice/gpu").stage == "RUNNING"
    admin.set_delays(hardware_switch=1.5)  # long enough to be read while switching on a busy machine

    answer = alice.request_space_hardware("alice/gpu", SpaceHardware.A10G_SMALL, sleep_time=3600)
    assert (answer.hardware, answer.requested_hardware) == ("cpu-basic", "a10g-small")
    assert answer.stage == "RUNNING_APP_STARTING"
    assert answer.sleep_time == 3600
    during = alice.get_space_runtime("alice/gpu")
    assert (during.stage, during.hardware, during.requested_hardware) == (
        "RUNNING_APP_STARTING",
        "cpu-basic",
        "a10g-small",
    )

    time.sleep(1.6)
    after = alice.get_space_runtime("alice/gpu")
    assert (after.stage, after.hardware, after.requested_hardware) == ("RUNNING", "a10g-small", "a10g-small")

    history = admin.space("alice/gpu")["hardwareHistory"]
    requested, switched = history[-2], history[-1]
    assert (requested["current"], requested["requested"]) == ("cpu-basic", "a10g-small")
    assert (switched["current"], switched["requested"]) == ("a10g-small", "a10g-small")
    assert switched["monotonic"] - requested["monotonic"] == pytest.approx(1.5)  # stamped at the due time


def test_unknown_flavor_is_rejected(alice: HfApi, template: str) -> None:
    alice.duplicate_repo(template, "alice/flavor", repo_type="space")
    with pytest.raises(BadRequestError) as caught:
        alice.request_space_hardware("alice/flavor", BOGUS_FLAVOR)
    assert caught.value.response.status_code == 400
    with pytest.raises(BadRequestError):
        alice.duplicate_repo(template, "alice/flavor2", repo_type="space", space_hardware=BOGUS_FLAVOR)


def test_hardware_request_during_build_is_picked_up(alice: HfApi, admin: HubSimAdmin, template: str) -> None:
    admin.set_delays(build=1.0)  # long enough to be read while building on a busy machine
    alice.duplicate_repo(template, "alice/mid", repo_type="space", space_hardware=SpaceHardware.T4_SMALL)
    answer = alice.request_space_hardware("alice/mid", SpaceHardware.L4X1)
    assert answer.stage in ("BUILDING", "APP_STARTING")
    assert (answer.hardware, answer.requested_hardware) == (None, "l4x1")
    time.sleep(1.1)
    runtime = alice.get_space_runtime("alice/mid")
    assert (runtime.stage, runtime.hardware) == ("RUNNING", "l4x1")


def test_pause_then_restart(alice: HfApi, admin: HubSimAdmin, template: str) -> None:
    alice.duplicate_repo(template, "alice/nap", repo_type="space", space_hardware=SpaceHardware.T4_MEDIUM)
    paused = alice.pause_space("alice/nap")
    assert paused.stage == "PAUSED"
    assert (paused.hardware, paused.requested_hardware) == (None, "t4-medium")
    assert alice.get_space_runtime("alice/nap").stage == "PAUSED"  # stays paused until restarted

    admin.set_delays(build=1.0)
    restarted = alice.restart_space("alice/nap", factory_reboot=True)
    assert restarted.stage == "BUILDING"
    final = wait_until(
        lambda: alice.get_space_runtime("alice/nap"),
        lambda r: r.stage == "RUNNING",
        10.0,
        "RUNNING",
        interval=0.02,
    )
    assert final.hardware == "t4-medium"


def test_sleep_time(alice: HfApi, template: str) -> None:
    alice.duplicate_repo(template, "alice/sleepy", repo_type="space", space_hardware=SpaceHardware.T4_SMALL)
    assert alice.set_space_sleep_time("alice/sleepy", 600).sleep_time == 600
    assert alice.set_space_sleep_time("alice/sleepy", -1).sleep_time is None
    with pytest.warns(UserWarning, match="48 hours"):
        alice.request_space_hardware("alice/sleepy", SpaceHardware.CPU_BASIC, sleep_time=300)
    with pytest.warns(UserWarning, match="48 hours"):
        assert alice.set_space_sleep_time("alice/sleepy", 300).sleep_time == 172800


def test_build_failures(alice: HfApi, admin: HubSimAdmin, template: str) -> None:
    assert admin.set_build_failures(1) == {"count": 1, "stage": "BUILD_ERROR"}
    alice.duplicate_repo(template, "alice/broken", repo_type="space", space_hardware=SpaceHardware.T4_SMALL)
    broken = alice.get_space_runtime("alice/broken")
    assert (broken.stage, broken.hardware, broken.requested_hardware) == ("BUILD_ERROR", None, "t4-small")

    alice.duplicate_repo(template, "alice/fine", repo_type="space")
    assert alice.get_space_runtime("alice/fine").stage == "RUNNING"  # only the next N builds fail

    alice.restart_space("alice/broken")
    assert alice.get_space_runtime("alice/broken").stage == "RUNNING"


def test_runtime_error_failures_hold_hardware(alice: HfApi, admin: HubSimAdmin, template: str) -> None:
    admin.set_build_failures(1, stage="RUNTIME_ERROR")
    alice.duplicate_repo(template, "alice/crash", repo_type="space", space_hardware=SpaceHardware.L4X1)
    runtime = alice.get_space_runtime("alice/crash")
    assert (runtime.stage, runtime.hardware) == ("RUNTIME_ERROR", "l4x1")
    # A hardware request on a failed Space rebuilds it.
    assert alice.request_space_hardware("alice/crash", SpaceHardware.T4_SMALL).stage == "BUILDING"
    assert alice.get_space_runtime("alice/crash").stage == "RUNNING"


def test_forced_stage_is_sticky(alice: HfApi, admin: HubSimAdmin, template: str) -> None:
    alice.duplicate_repo(template, "alice/stuck", repo_type="space")
    admin.set_stage("alice/stuck", "BUILDING")
    time.sleep(0.05)
    runtime = alice.get_space_runtime("alice/stuck")
    assert (runtime.stage, runtime.hardware) == ("BUILDING", None)


def test_create_repo_without_app_file(alice: HfApi) -> None:
    url = alice.create_repo("alice/empty", repo_type="space", space_sdk="gradio", private=True)
    assert url.repo_id == "alice/empty"
    assert alice.get_space_runtime("alice/empty").stage == "NO_APP_FILE"


def test_static_space_runs_without_hardware(alice: HfApi) -> None:
    alice.create_repo("alice/site", repo_type="space", space_sdk="static")
    runtime = alice.get_space_runtime("alice/site")
    assert (runtime.stage, runtime.hardware, runtime.requested_hardware) == ("RUNNING", None, None)
    with pytest.raises(BadRequestError):
        alice.pause_space("alice/site")
