"""Observation by the batch (the observer), the shared read of the read token, and Events
only for what a user acts on."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

from sandbox_operator.api import AgentSessionStatus
from sandbox_operator.core import lifecycle
from sandbox_operator.core.conditions import NOTIFIED_REASONS, Reason, Severity
from sandbox_operator.core.model import FailureKind, HubFailure, Observation, Plan, RecordIntent, SpaceView
from sandbox_operator.hub.listing import STALE_INTERVALS, FleetObserver
from sandbox_operator.hub.spaces import Listing
from sandbox_operator.k8s.secret_cache import SecretCache
from sandbox_operator.sessions.loop import SessionLoop, _follow_listing
from tests.support.clock import ManualClock
from tests.support.core import CONFIG, NOW, SPACE_ID, TRUSTED, new_session, space
from tests.support.listing import Hub, observer

OTHER = "agents/ags-other"


def test_sessions_read_their_space_from_one_listing_per_owner() -> None:
    hub, clock = Hub(), ManualClock(100.0)
    watcher = observer(hub, clock)
    hub.spaces = {SPACE_ID: space(), OTHER: space(), "acme/ags-x": space()}
    wakeups = [asyncio.Event() for _ in range(3)]
    for uid, (space_id, wakeup) in enumerate(zip([SPACE_ID, OTHER, "acme/ags-x"], wakeups, strict=True)):
        watcher.watch(str(uid), space_id, wakeup, waiting=False)
    assert watcher.view(SPACE_ID) is None  # no listing yet: the session asks the Hub itself
    for owner in sorted(watcher.owners()):
        asyncio.run(watcher.observe_owner(owner))
    assert hub.calls == ["acme", "agents"]  # one listing per owner, however many sessions
    assert watcher.view(SPACE_ID) == space() and watcher.view("acme/ags-x") == space()


def test_a_listing_wakes_the_loops_whose_space_changed_or_vanished_and_those_that_wait() -> None:
    hub, clock = Hub(), ManualClock(100.0)
    watcher = observer(hub, clock)
    hub.spaces = {
        SPACE_ID: space(),
        OTHER: space(),
        "agents/ags-waits": space("BUILDING"),
        "agents/ags-gone": space(),
    }
    same, changed, gone, waits, never = (asyncio.Event() for _ in range(5))
    watcher.watch("1", SPACE_ID, same, waiting=False)
    watcher.watch("2", OTHER, changed, waiting=False)
    watcher.watch("3", "agents/ags-gone", gone, waiting=False)
    watcher.watch("4", "agents/ags-waits", waits, waiting=True)
    watcher.watch("5", "agents/ags-refused", never, waiting=False)  # its create was refused: in backoff
    asyncio.run(watcher.observe_owner("agents"))
    for event in (same, changed, gone, waits, never):
        event.clear()
    clock.now += 30
    hub.spaces[OTHER] = space("PAUSED")
    del hub.spaces["agents/ags-gone"]
    asyncio.run(watcher.observe_owner("agents"))
    assert not same.is_set()  # converged and unchanged: its loop sleeps on
    assert changed.is_set() and gone.is_set() and waits.is_set()
    assert not never.is_set()  # a Space never seen is no news by being missing: the backoff holds
    assert watcher.view("agents/ags-gone") is None  # not listed: the session confirms with its own read


def test_a_waiting_session_whose_building_space_is_probed_wakes_on_a_change_only() -> None:
    """Its app's answer wakes it (hub/edge_probe.py): the same view again is no news, nor a pass each
    for a burst's thousand."""
    hub, clock = Hub(), ManualClock(100.0)
    watcher = observer(hub, clock)
    watcher.probed = lambda uid: uid == "probed"
    hub.spaces = {SPACE_ID: space("BUILDING"), OTHER: space("BUILDING")}
    probed, unprobed = asyncio.Event(), asyncio.Event()
    watcher.watch("probed", SPACE_ID, probed, waiting=True)
    watcher.watch("other", OTHER, unprobed, waiting=True)
    watcher.saw(SPACE_ID, space("BUILDING"))
    watcher.saw(OTHER, space("BUILDING"))
    clock.now += 1
    asyncio.run(watcher.observe_owner("agents"))
    assert not probed.is_set()
    assert unprobed.is_set()  # not probed (a private Space without a read token): the listing polls it
    hub.spaces[SPACE_ID] = space("RUNNING")
    clock.now += 1
    asyncio.run(watcher.observe_owner("agents"))
    assert probed.is_set()


def test_a_listing_older_than_the_last_action_or_stale_is_not_used() -> None:
    hub, clock = Hub(), ManualClock(100.0)
    watcher = observer(hub, clock)
    hub.spaces = {SPACE_ID: space("PAUSED")}
    watcher.watch("1", SPACE_ID, asyncio.Event(), waiting=False)
    asyncio.run(watcher.observe_owner("agents"))
    clock.now += 1
    watcher.acted(SPACE_ID)  # a restart: the listing does not show it yet
    assert watcher.view(SPACE_ID) is None
    clock.now += 1
    hub.spaces = {SPACE_ID: space("APP_STARTING")}
    asyncio.run(watcher.observe_owner("agents"))
    assert watcher.view(SPACE_ID) == space("APP_STARTING")
    hub.failing = True
    clock.now += STALE_INTERVALS * 30 + 1
    asyncio.run(watcher.observe_owner("agents"))  # fails: the old listing is kept, but too old to use
    assert watcher.view(SPACE_ID) is None


def test_a_listing_that_waited_at_the_gate_is_as_fresh_as_its_sending() -> None:
    """While creates hold the gate, a listing asked for earlier still shows what this
    operator did before it was sent, so sessions read it instead of their own Space."""
    hub, clock = Hub(), ManualClock(100.0)
    watcher = observer(hub, clock)
    hub.spaces = {SPACE_ID: space("BUILDING")}
    wakeup = asyncio.Event()
    watcher.watch("1", SPACE_ID, wakeup, waiting=True)
    hub.gate_wait = 40.0
    hub.meanwhile = lambda: watcher.acted(SPACE_ID)  # the duplicate returned while the listing waited
    asyncio.run(watcher.observe_owner("agents"))
    assert watcher.view(SPACE_ID) == space("BUILDING") and wakeup.is_set()


def test_a_listing_wakes_a_loop_only_with_news_to_it() -> None:
    """A session that already saw its Space RUNNING (its own read) is not woken again (and does not
    check its health again) by a listing that shows what it saw; one it could not use wakes no one."""
    hub, clock = Hub(), ManualClock(100.0)
    watcher = observer(hub, clock)
    hub.spaces = {SPACE_ID: space("BUILDING")}
    wakeup = asyncio.Event()
    watcher.watch("1", SPACE_ID, wakeup, waiting=False)
    asyncio.run(watcher.observe_owner("agents"))
    clock.now += 1
    hub.spaces = {SPACE_ID: space()}
    watcher.saw(SPACE_ID, replace(space(), marker_uid="u"))
    wakeup.clear()
    clock.now += 30
    asyncio.run(watcher.observe_owner("agents"))
    assert not wakeup.is_set()  # BUILDING -> RUNNING between listings, but the session saw RUNNING
    hub.spaces = {SPACE_ID: space("PAUSED")}
    clock.now += 30
    asyncio.run(watcher.observe_owner("agents"))
    assert wakeup.is_set()  # drift: news
    wakeup.clear()
    watcher.watch("1", SPACE_ID, wakeup, waiting=True)
    hub.meanwhile = lambda: watcher.acted(SPACE_ID)  # acted on it after the listing was sent
    hub.gate_wait = 0.0
    asyncio.run(watcher.observe_owner("agents"))
    assert not wakeup.is_set() and watcher.view(SPACE_ID) is None


def test_a_wake_up_by_a_listing_the_pass_itself_made_useless_is_dropped() -> None:
    """A listing sent while the session's duplicate waited at the gate does not show the Space and
    wakes the waiting session; the duplicate then returns in the same pass: that listing cannot serve
    the next pass (it would read its own Space and check its health again), so the wake-up is dropped.
    A session that does not wait is not woken by a Space it never saw missing (its backoff holds)."""
    hub, clock = Hub(), ManualClock(100.0)
    watcher = observer(hub, clock)
    wakeup = asyncio.Event()
    watcher.acted(SPACE_ID)  # an earlier duplicate, refused at the gate
    watcher.watch("1", SPACE_ID, wakeup, waiting=False)
    clock.now += 10
    asyncio.run(watcher.observe_owner("agents"))
    assert not wakeup.is_set()  # never seen, so missing is no news
    watcher.watch("1", SPACE_ID, wakeup, waiting=True)
    clock.now += 10
    asyncio.run(watcher.observe_owner("agents"))
    assert wakeup.is_set()  # a waiting session is woken by every listing
    clock.now += 5
    watcher.acted(SPACE_ID)  # this pass's duplicate returned
    watcher.watch("1", SPACE_ID, wakeup, waiting=True)
    assert not wakeup.is_set()
    clock.now += 30
    hub.spaces = {SPACE_ID: space("BUILDING")}
    asyncio.run(watcher.observe_owner("agents"))
    watcher.watch("1", SPACE_ID, wakeup, waiting=True)
    assert wakeup.is_set()  # a listing sent after the action is kept


def test_a_session_the_latest_listing_serves_does_not_wait_for_the_one_under_way() -> None:
    """Pages paced by the Hub's window: a listing takes half a minute, and an app answering meanwhile
    would wait with the session's pass."""

    async def scenario() -> tuple[SpaceView | None, bool]:
        hub, clock = Hub(), ManualClock(100.0)
        watcher = observer(hub, clock)
        hub.spaces = {SPACE_ID: space("BUILDING")}
        watcher.watch("1", SPACE_ID, asyncio.Event(), waiting=True)
        await watcher.observe_owner("agents")
        clock.now += 10
        gate = asyncio.Event()  # the next listing waits at the Hub's gate
        listing = hub.list_spaces

        async def paced(owner: str, prefix: str) -> Listing:
            await gate.wait()
            return await listing(owner, prefix)

        watcher.list_spaces = paced
        under_way = asyncio.ensure_future(watcher.observe_owner("agents"))
        await asyncio.sleep(0)
        seen = await asyncio.wait_for(watcher.listed(SPACE_ID), 1.0)
        waited = under_way.done()
        gate.set()
        await under_way
        return seen, waited

    seen, waited = asyncio.run(scenario())
    assert seen == space("BUILDING") and not waited


def test_a_session_shares_the_listing_under_way_instead_of_reading_its_own_space() -> None:
    """A listing gone stale while the gate is busy: the session waits for the listing under way."""

    async def scenario() -> tuple[SpaceView | None, list[str]]:
        hub, clock = Hub(), ManualClock(100.0)
        watcher = observer(hub, clock)
        hub.spaces = {SPACE_ID: space("BUILDING")}
        watcher.watch("1", SPACE_ID, asyncio.Event(), waiting=True)
        await watcher.observe_owner("agents")
        clock.now += STALE_INTERVALS * 30 + 1
        assert watcher.view(SPACE_ID) is None  # stale
        hub.spaces = {SPACE_ID: space("APP_STARTING")}
        under_way = asyncio.ensure_future(watcher.observe_owner("agents"))
        await asyncio.sleep(0)
        seen = await watcher.listed(SPACE_ID)
        await under_way
        return seen, hub.calls

    seen, calls = asyncio.run(scenario())
    assert seen == space("APP_STARTING") and calls == ["agents", "agents"]


def test_a_forgotten_session_is_not_listed_for() -> None:
    hub, clock = Hub(), ManualClock(100.0)
    watcher = observer(hub, clock)
    watcher.watch("1", SPACE_ID, asyncio.Event(), waiting=False)
    watcher.forget("1")
    assert watcher.owners() == set()
    assert not FleetObserver(hub.list_spaces, "ags-", 0.0).enabled


def test_closing_the_observer_stops_a_listing_in_flight_before_the_hub_client_closes() -> None:
    hub, clock = Hub(), ManualClock(100.0)
    watcher = observer(hub, clock)
    sent = asyncio.Event()
    stopped: list[str] = []

    async def slow_listing(owner: str, prefix: str) -> Listing:
        sent.set()
        try:
            await asyncio.sleep(3600)  # a closed Hub client would be called after this
        except asyncio.CancelledError:
            stopped.append(owner)
            raise
        return Listing(clock.now, {})

    watcher.list_spaces = slow_listing

    async def scenario() -> None:
        waiting = asyncio.ensure_future(watcher.observe_owner("agents"))
        await sent.wait()
        waiting.cancel()  # the session's loop stops; the listing goes on, shielded
        await asyncio.sleep(0)
        assert stopped == []  # still in flight
        await watcher.close()
        assert stopped == ["agents"]

    asyncio.run(scenario())


def test_the_read_token_secret_is_read_once_for_many_sessions_and_again_after_its_ttl() -> None:
    clock = ManualClock(100.0)
    reads: list[str] = []

    async def read(namespace: str, name: str) -> dict[str, str] | None:
        reads.append(name)
        await asyncio.sleep(0)
        return {"token": "hf_read"}

    async def passes() -> list[dict[str, str] | None]:
        cache = SecretCache(read, 10.0, clock=clock)
        first = await asyncio.gather(*(cache.get("ops", "read-token") for _ in range(50)))
        clock.now += 11
        return [*first, await cache.get("ops", "read-token")]

    answers = asyncio.run(passes())
    assert answers == [{"token": "hf_read"}] * 51
    assert reads == ["read-token", "read-token"]


def test_progress_is_no_event_only_what_a_user_acts_on_is() -> None:
    assert all(reason.severity is Severity.NORMAL for reason in NOTIFIED_REASONS)
    session = new_session(status={})
    seen = Observation(read_token="hf_read", **TRUSTED)
    plan = lifecycle.decide(session, seen, CONFIG, NOW)
    assert isinstance(plan.action, RecordIntent)
    assert plan.events == []  # Provisioning, FreeHardware, ReadTokenPublished: progress only
    building = lifecycle.decide(
        replace(session, status=plan.status),
        replace(seen, space=space("BUILDING"), token="t", connection_hub_token="hf_read"),
        CONFIG,
        NOW,
    )
    assert [e.reason for e in building.events] == []
    failing = lifecycle.decide(
        replace(session, status=building.status),
        replace(seen, hub_failure=HubFailure(FailureKind.UNAVAILABLE, "down"), token="t"),
        CONFIG,
        NOW,
    )
    assert [e.reason for e in failing.events] == [Reason.HUB_UNAVAILABLE]


def test_the_intent_writes_the_read_token_with_the_connection_secret() -> None:
    session = new_session(spec={"private": True})
    plan = lifecycle.decide(session, Observation(read_token="hf_read", **TRUSTED), CONFIG, NOW)
    assert isinstance(plan.action, RecordIntent) and plan.action.hub_token == "hf_read"


def test_a_deadline_is_kept_while_the_listing_wakes_a_waiting_session() -> None:
    """A waiting session's timer is only the fallback of listings, stretched to two intervals, but never
    past a deadline (a budget running out, an expiry): that is read on time."""
    hub = Hub()
    rt: Any = SimpleNamespace(observer=observer(hub, ManualClock(100.0)))
    status = AgentSessionStatus.model_validate(
        {"spaceId": "agents/ags-1", "spaceConfirmedTime": "2026-11-26T12:00:00Z"}
    )
    assert _follow_listing(rt, "u", SessionLoop(), Plan(None, status, 2.0)) == 60.0
    assert _follow_listing(rt, "u", SessionLoop(), Plan(None, status, 12.0, deadline=12.0)) == 12.0
