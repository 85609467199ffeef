"""A Space this process just duplicated is confirmed by the next listing, shared by the whole burst,
instead of a read each; without such a listing the session reads its Space itself."""

from __future__ import annotations

import asyncio

from sandbox_operator.hub.listing import (
    CREATES_SENT_RECHECK,
    LISTING_SPACING,
    LISTING_SPACING_WITH_ROOM,
    STALE_INTERVALS,
    FleetObserver,
)
from tests.support.clock import ManualClock
from tests.support.core import SPACE_ID, space
from tests.support.listing import Hub, observer


def test_a_fresh_duplicate_waits_for_a_listing_sent_after_it() -> None:
    hub, clock = Hub(), ManualClock(100.0)
    watcher = observer(hub, clock)
    asyncio.run(watcher.observe_owner("agents"))  # a listing before the duplicate: it cannot show it
    clock.now += 1
    watcher.created(SPACE_ID)
    watcher.acted(SPACE_ID)
    hub.spaces = {SPACE_ID: space("BUILDING")}
    clock.now += 1
    assert asyncio.run(watcher.after_action(SPACE_ID)) == space("BUILDING")
    assert hub.calls == ["agents", "agents"]  # one listing more, not a read of the Space


def test_many_fresh_duplicates_share_one_listing() -> None:
    hub, clock = Hub(), ManualClock(100.0)
    watcher = observer(hub, clock)
    ids = [f"agents/ags-{n}" for n in range(50)]
    for space_id in ids:
        watcher.created(space_id)
        watcher.acted(space_id)
    hub.spaces = {space_id: space("BUILDING") for space_id in ids}
    hub.gate_wait = 1.0

    async def burst() -> list[object]:
        return list(await asyncio.gather(*(watcher.after_action(space_id) for space_id in ids)))

    assert all(view is not None for view in asyncio.run(burst()))
    assert hub.calls == ["agents"]


def test_without_a_usable_listing_the_session_reads_its_space_itself() -> None:
    hub, clock = Hub(), ManualClock(100.0)
    watcher = observer(hub, clock)
    watcher.acted(SPACE_ID)
    hub.failing = True
    assert asyncio.run(watcher.after_action(SPACE_ID)) is None  # the listing failed
    hub.failing = False
    assert asyncio.run(watcher.after_action(SPACE_ID)) is None  # the listing does not show it yet
    off = FleetObserver(hub.list_spaces, "ags-", 0.0, clock=clock)
    assert asyncio.run(off.after_action(SPACE_ID)) is None  # observation by the batch is off


def test_a_listing_right_after_another_waits_its_spacing_and_is_shared() -> None:
    hub, clock = Hub(), ManualClock(100.0)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await asyncio.sleep(0)

    watcher = FleetObserver(hub.list_spaces, "ags-", 30.0, clock=clock, sleep=sleep)
    asyncio.run(watcher.observe_owner("agents"))
    assert slept == []  # the first listing goes at once
    clock.now += 0.25

    async def burst() -> None:
        await asyncio.gather(*(watcher.observe_owner("agents") for _ in range(20)))

    asyncio.run(burst())
    assert slept == [LISTING_SPACING - 0.25] and hub.calls == ["agents", "agents"]
    clock.now += LISTING_SPACING
    asyncio.run(watcher.observe_owner("agents"))
    assert slept == [LISTING_SPACING - 0.25]  # spaced enough already: no wait
    short = FleetObserver(hub.list_spaces, "ags-", 0.5, clock=clock, sleep=sleep)
    asyncio.run(short.observe_owner("agents"))
    asyncio.run(short.observe_owner("agents"))
    assert slept[-1] == 0.5  # never longer than the interval


def test_listings_follow_each_other_closer_while_the_hubs_window_pays_for_it() -> None:
    hub, clock = Hub(), ManualClock(100.0)
    hub.pages = 2  # a fleet of more than one page: each listing is two calls
    asked: list[float] = []
    room = True

    def affords(calls_per_second: float) -> bool:
        asked.append(calls_per_second)
        return room

    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await asyncio.sleep(0)

    watcher = FleetObserver(hub.list_spaces, "ags-", 30.0, clock=clock, sleep=sleep, affords=affords)
    asyncio.run(watcher.observe_owner("agents"))
    asyncio.run(watcher.observe_owner("agents"))
    assert slept == [LISTING_SPACING_WITH_ROOM]
    assert asked == [2 / LISTING_SPACING_WITH_ROOM]  # the last listing's calls, that often
    room = False  # a window that cannot pay for it keeps its calls for creates and the rest of it
    asyncio.run(watcher.observe_owner("agents"))
    assert slept[-1] == LISTING_SPACING


def test_while_the_edge_probes_fall_behind_owners_are_listed_every_spacing_the_window_pays_for() -> None:
    hub, clock = Hub(), ManualClock(100.0)
    hub.pages = 2
    behind, room = True, True
    asked: list[float] = []

    def affords(calls_per_second: float) -> bool:
        asked.append(calls_per_second)
        return room

    end = 0.0
    passed: asyncio.Event | None = None  # the wait of `listed_until`, made on the loop it runs on

    async def sleep(seconds: float) -> None:
        clock.now += seconds
        if clock.now >= end and passed is not None:
            passed.set()
        await asyncio.sleep(0)

    watcher = FleetObserver(
        hub.list_spaces, "ags-", 30.0, clock=clock, sleep=sleep, affords=affords, probes_behind=lambda: behind
    )
    watcher.watch("1", SPACE_ID, asyncio.Event(), waiting=True)

    async def listed_until(until: float) -> list[float]:
        """When the observer's own loop listed, from now until the clock reads `until`."""
        nonlocal end, passed
        end, times, passed = until, [], asyncio.Event()
        hub.clock, hub.meanwhile = clock, lambda: times.append(clock.now)
        task = asyncio.ensure_future(watcher.run())
        await passed.wait()
        task.cancel()
        return times

    times = asyncio.run(listed_until(110.0))
    assert times == [100.0 + n * LISTING_SPACING for n in range(10)]  # the spacing, not the interval
    assert asked[0] == 2 / LISTING_SPACING  # both pages of the last listing, that often
    room = False  # the window keeps its calls for creates: the interval again
    assert asyncio.run(listed_until(200.0)) == [110.0, 140.0, 170.0]
    room, behind = True, False  # the probes keep up: nothing to hurry
    assert len(asyncio.run(listed_until(260.0))) == 2


def test_a_listing_waits_for_the_creates_being_sent_and_then_shows_them_all() -> None:
    """Every call of a listing while creates are sent is a create the Hub's window loses."""
    hub, clock = Hub(), ManualClock(100.0)
    hub.clock = clock
    rechecks = [3]  # while creates are still being sent

    async def sleep(seconds: float) -> None:
        clock.now += seconds
        rechecks[0] -= 1
        await asyncio.sleep(0)

    watcher = FleetObserver(
        hub.list_spaces, "ags-", 30.0, clock=clock, sleep=sleep, creates_sending=lambda: rechecks[0] > 0
    )
    ids = [f"agents/ags-{n}" for n in range(3)]
    hub.spaces = {space_id: space("BUILDING") for space_id in ids}
    for space_id in ids:
        watcher.created(space_id)
        watcher.acted(space_id)

    async def burst() -> list[object]:
        return list(await asyncio.gather(*(watcher.after_action(space_id) for space_id in ids)))

    assert all(view is not None for view in asyncio.run(burst()))
    assert hub.calls == ["agents"] and clock.now == 100.0 + 3 * CREATES_SENT_RECHECK
    rechecks[0] = 10_000  # creates that never stop hold a listing back an interval at most
    watcher.acted(ids[0])
    asyncio.run(watcher.after_action(ids[0]))
    held = clock.now - (100.0 + 3 * CREATES_SENT_RECHECK + LISTING_SPACING)  # after its spacing
    assert hub.calls == ["agents", "agents"] and held == 30.0


def test_a_listing_newer_than_the_last_action_is_news_until_it_goes_stale() -> None:
    hub, clock = Hub(), ManualClock(100.0)
    watcher = observer(hub, clock)
    watcher.acted(SPACE_ID)
    assert not watcher.has_news(SPACE_ID)  # nothing asked for since the action
    clock.now += 1
    hub.spaces = {}
    asyncio.run(watcher.observe_owner("agents"))
    assert watcher.has_news(SPACE_ID) and watcher.view(SPACE_ID) is None  # news: the Space is gone
    clock.now += STALE_INTERVALS * watcher.interval + 1
    assert not watcher.has_news(SPACE_ID)
    off = FleetObserver(hub.list_spaces, "ags-", 0.0, clock=clock)
    assert off.has_news(SPACE_ID)  # observation by the batch is off: the session reads the Hub itself
