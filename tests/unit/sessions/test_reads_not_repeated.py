"""A pass asks the Hub and the sandbox only what the latest listing, its own last read and a recent
health check do not already say; a deletion reads no marker the session already saw."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from sandbox_operator.api import AgentSessionSpec
from sandbox_operator.core.model import HealthResult, SpaceView
from sandbox_operator.core.reads import CheckedHealth, health_still_holds, marker_known
from sandbox_operator.hub.listing import STALE_INTERVALS, FleetObserver
from tests.support.clock import ManualClock
from tests.support.core import CONFIG, HEALTHY, NOW, SANDBOX, SPACE_ID, new_session, space
from tests.support.listing import Hub, observer

SPEC = AgentSessionSpec()
CHECKED = CheckedHealth(HEALTHY, NOW, "t", "r", SANDBOX, space())


def holds(checked: CheckedHealth = CHECKED, **change: Any) -> bool:
    """Whether `checked` still holds for the running Space, `change`d, a minute later."""
    seen = change.pop("space", space())
    now = change.pop("now", NOW + timedelta(minutes=1))
    spec = change.pop("spec", SPEC)
    config = CONFIG.model_copy(update=change.pop("config", {}))
    tokens = {"token": "t", "hub_token": "r", **change}
    return health_still_holds(checked, seen, tokens["token"], tokens["hub_token"], spec, config, now)


def test_a_healthy_answer_holds_while_the_space_runs_as_it_did() -> None:
    assert holds()
    # What the listing shows beside the runtime (privacy, sleep time, no marker) is no reason to ask.
    assert holds(space=replace(space(), marker_uid=None, sleep_time=600, private=None))


@pytest.mark.parametrize(
    "change",
    [
        {"token": "rotated"},
        {"hub_token": "another read token"},
        {"space": replace(space(), sandbox_url="http://hub/_sandbox/agents/moved")},
        {"space": space("RUNNING", "cpu-basic", "t4-small")},  # a hardware switch asked for
        {"space": space("RUNNING", "t4-small", "t4-small")},
        {"space": space("APP_STARTING")},
    ],
)
def test_a_new_token_address_or_runtime_is_checked_again(change: dict[str, Any]) -> None:
    assert not holds(**change)


def test_an_unhealthy_answer_never_holds() -> None:
    assert not holds(replace(CHECKED, result=HealthResult(False, "503", 503)))


def test_an_answer_holds_no_longer_than_a_resync() -> None:
    resync = timedelta(seconds=CONFIG.resync_interval)
    assert holds(now=NOW + resync - timedelta(seconds=1))
    assert not holds(now=NOW + resync)
    assert not holds(now=NOW - timedelta(seconds=1))  # a clock step back: ask
    assert holds(now=NOW + 10 * resync, config={"resync_interval": 0})  # no resync: until the Space changes


def test_an_idle_pause_is_decided_on_a_fresh_answer_only() -> None:
    idle = AgentSessionSpec.model_validate({"idle": {"pauseAfterSeconds": 600}})
    used = replace(CHECKED, result=HealthResult(True, "200 OK", 200, NOW))
    assert holds(used, spec=idle, now=NOW + timedelta(seconds=599))
    # By the old answer the sandbox would be idle long enough to pause: it may have been used since.
    assert not holds(used, spec=idle, now=NOW + timedelta(seconds=600))
    assert holds(used, spec=SPEC, now=NOW + timedelta(seconds=600))  # no idle pause: no matter


CONFIRMED = {"spaceId": SPACE_ID, "spaceConfirmedTime": "2026-11-26T12:00:00.000000Z"}


@pytest.mark.parametrize(
    ("fields", "spec", "known"),
    [
        ({**CONFIRMED, "markerClusterId": "c1"}, {}, True),
        ({**CONFIRMED, "markerClusterId": "default"}, {}, True),  # 0.1.0's id: still this installation's
        ({**CONFIRMED, "markerClusterId": "another-cluster"}, {}, False),
        (CONFIRMED, {}, False),  # the cluster the marker names was never seen
        ({"spaceId": SPACE_ID, "markerClusterId": "c1"}, {}, False),  # never seen carrying the marker
        ({**CONFIRMED, "markerClusterId": "c1"}, {"deletionPolicy": "Orphan"}, False),  # kept: read it
        # A Space whose name is not the session's own: claimed from a pool, or a status copied from
        # another session (a restore): its marker is read before anything is deleted.
        ({**CONFIRMED, "spaceId": "agents/warm-pool-3", "markerClusterId": "c1"}, {}, False),
        ({**CONFIRMED, "spaceId": "agents/ags-another-uid", "markerClusterId": "c1"}, {}, False),
        ({"spaceConfirmedTime": CONFIRMED["spaceConfirmedTime"], "markerClusterId": "c1"}, {}, False),
    ],
)
def test_a_deletion_skips_the_marker_read_only_for_its_own_space_seen_carrying_it(
    fields: dict[str, str], spec: dict[str, str], known: bool
) -> None:
    assert marker_known(new_session(spec, fields), CONFIG) is known


def test_a_read_of_its_own_serves_the_next_passes_until_a_newer_listing() -> None:
    """An unhealthy or starting session polls: its own read of the Space serves its next passes as a
    listing asked for at that time would, instead of a read each poll."""
    hub, clock = Hub(), ManualClock(100.0)
    watcher = observer(hub, clock)
    hub.spaces = {SPACE_ID: space("APP_STARTING")}
    asyncio.run(watcher.observe_owner("agents"))
    clock.now += 1
    watcher.acted(SPACE_ID)  # a restart: the listing does not show it
    assert watcher.view(SPACE_ID) is None  # so the session reads its Space itself
    clock.now += 1
    watcher.read(SPACE_ID, space("RUNNING"), clock.now)
    clock.now += 5
    assert watcher.view(SPACE_ID) == space("RUNNING")  # the next poll: no read
    hub.spaces = {SPACE_ID: space("PAUSED")}
    asyncio.run(watcher.observe_owner("agents"))
    assert watcher.view(SPACE_ID) == space("PAUSED")  # a newer listing wins
    watcher.read(SPACE_ID, space("RUNNING"), clock.now - 10)  # asked before that listing was sent
    assert watcher.view(SPACE_ID) == space("PAUSED")


@pytest.mark.parametrize(
    "moving",
    [space("BUILDING", None), space("APP_STARTING", None), space("RUNNING", "cpu-basic", "a10g-small")],
)
def test_a_read_of_a_space_in_transition_is_asked_again_at_each_poll(moving: SpaceView) -> None:
    """A paid switch's end starts its bill, and a budget is enforced on time only if that end is seen
    on time: a read showing the Space on its way serves no later pass."""
    hub, clock = Hub(), ManualClock(100.0)
    watcher = observer(hub, clock)
    watcher.read(SPACE_ID, moving, clock.now)
    clock.now += 2
    assert watcher.view(SPACE_ID) is None


def test_a_listing_showing_a_hardware_switch_does_not_serve_the_passes_that_wait_for_its_end() -> None:
    """A listing sent during a switch would otherwise stand for every poll until the next listing (30 s
    later), and the switch's end, which starts or stops the bill, would be seen that late."""
    hub, clock = Hub(), ManualClock(100.0)
    watcher = observer(hub, clock)
    watcher.acted(SPACE_ID)  # the downgrade asked for
    clock.now += 1
    watcher.read(SPACE_ID, space("RUNNING_APP_STARTING", "a10g-small", "cpu-basic"), clock.now)
    clock.now += 1
    hub.spaces = {SPACE_ID: space("RUNNING_APP_STARTING", "a10g-small", "cpu-basic")}
    asyncio.run(watcher.observe_owner("agents"))
    assert watcher.view(SPACE_ID) is None  # the next poll reads the Space itself
    clock.now += 2
    watcher.read(SPACE_ID, space("RUNNING", "cpu-basic", "cpu-basic"), clock.now)
    assert watcher.view(SPACE_ID) == space("RUNNING", "cpu-basic", "cpu-basic")
    # A building Space (no current flavor yet) is still served by the listing: the edge prober sees its end.
    clock.now += 1
    hub.spaces = {SPACE_ID: space("BUILDING", None)}
    asyncio.run(watcher.observe_owner("agents"))
    assert watcher.view(SPACE_ID) == space("BUILDING", None)


def test_a_read_is_not_used_after_an_action_when_stale_or_when_it_found_nothing() -> None:
    hub, clock = Hub(), ManualClock(100.0)
    watcher = observer(hub, clock)
    watcher.read(SPACE_ID, space(), clock.now)
    clock.now += 1
    watcher.acted(SPACE_ID)
    assert watcher.view(SPACE_ID) is None
    watcher.read(SPACE_ID, space(), clock.now - 0.5)  # asked before the action returned
    assert watcher.view(SPACE_ID) is None
    watcher.read(SPACE_ID, space(), clock.now)
    clock.now += STALE_INTERVALS * 30 + 1
    assert watcher.view(SPACE_ID) is None
    watcher.read(SPACE_ID, space(), clock.now)
    watcher.read(SPACE_ID, None, clock.now)  # not found: maybe not visible yet, ask again
    assert watcher.view(SPACE_ID) is None


def test_an_action_on_the_space_drops_its_health_answer_and_forgetting_drops_everything() -> None:
    hub, clock = Hub(), ManualClock(100.0)
    watcher = observer(hub, clock)
    watcher.watch("1", SPACE_ID, asyncio.Event(), waiting=False)
    watcher.checked(SPACE_ID, CHECKED)
    assert watcher.health(SPACE_ID) == CHECKED
    watcher.acted(SPACE_ID)  # e.g. a restart: the sandbox answering before says nothing now
    assert watcher.health(SPACE_ID) is None
    watcher.checked(SPACE_ID, CHECKED)
    watcher.read(SPACE_ID, space(), clock.now + 1)
    watcher.forget("1")
    assert watcher.health(SPACE_ID) is None and watcher.view(SPACE_ID) is None


def test_with_observation_by_the_batch_off_nothing_is_kept() -> None:
    """Each pass then asks the Hub and the sandbox itself, and nothing outlives its session."""
    hub, clock = Hub(), ManualClock(100.0)
    off = FleetObserver(hub.list_spaces, "ags-", 0.0, clock=clock)
    off.read(SPACE_ID, space(), clock.now)
    off.checked(SPACE_ID, CHECKED)
    assert off.view(SPACE_ID) is None and off.health(SPACE_ID) is None
