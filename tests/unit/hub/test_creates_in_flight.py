"""No more duplicates in flight than the Hub gate sends in half their send deadline: a burst of
creates then leaves in turn instead of waiting past its deadline and being refused."""

from __future__ import annotations

import asyncio

from sandbox_operator.config.settings import OperatorConfig
from sandbox_operator.hub.creates_in_flight import ROOM_RECHECK, CreateSlots


def test_the_turns_are_what_the_gate_sends_in_half_a_deadline() -> None:
    assert CreateSlots.for_config(OperatorConfig(hub_rate=3, duplicate_send_deadline=30)).size == 45
    assert CreateSlots.for_config(OperatorConfig(hub_rate=0.01)).size == 1
    assert CreateSlots.for_config(OperatorConfig(hub_rate=0)).size is None  # an unlimited gate: no turns


def test_a_create_waits_for_a_turn_and_says_it_waited() -> None:
    async def scenario() -> list[bool]:
        slots = CreateSlots(2)
        said: list[bool] = []

        async def create(finish: asyncio.Event) -> None:
            async with slots.turn(True) as waited:
                said.append(waited)
                await finish.wait()

        finishes = [asyncio.Event() for _ in range(3)]
        tasks = [asyncio.ensure_future(create(finish)) for finish in finishes]
        await asyncio.sleep(0)
        assert said == [False, False]  # both turns in flight; the third waits
        assert slots.demand() == 3
        finishes[0].set()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        for finish in finishes:
            finish.set()
        await asyncio.gather(*tasks)
        return said

    assert asyncio.run(scenario()) == [False, False, True]  # it waited: its decision is made again


def test_a_turn_is_given_back_however_its_block_ends() -> None:
    async def scenario() -> None:
        slots = CreateSlots(1)
        for _ in range(3):
            try:
                async with slots.turn(True):
                    raise RuntimeError("the decision failed")
            except RuntimeError:
                pass
        async with slots.turn(True) as waited:
            assert not waited  # no turn was leaked

    asyncio.run(scenario())


def test_without_a_limit_or_a_create_nothing_waits() -> None:
    async def scenario() -> list[bool]:
        taken = []
        for slots, needed in ((CreateSlots(), True), (CreateSlots(1), False)):
            for _ in range(50):
                async with slots.turn(needed) as waited:
                    taken.append(waited)
        return taken

    assert asyncio.run(scenario()) == [False] * 100


def test_creates_wait_while_the_hubs_window_has_no_call_to_spare() -> None:
    """Creates stop short of the calls observation keeps, and go again once the window resets."""

    async def scenario() -> list[bool]:
        spare: list[int | None] = [1]
        slots = CreateSlots(5, spare=lambda: spare[0])
        said: list[bool] = []
        release = asyncio.Event()

        async def create() -> None:
            async with slots.turn(True) as waited:
                said.append(waited)
                await release.wait()

        tasks = [asyncio.ensure_future(create()) for _ in range(3)]
        await asyncio.sleep(0.1)
        assert said == [False]  # one call to spare: one create holds it, the others wait
        assert slots.demand() == 3  # each will spend a call of the window: listings leave them room
        spare[0] = None  # the window reset: no limit stated until the next answer
        await asyncio.sleep(2 * ROOM_RECHECK)
        release.set()
        await asyncio.gather(*tasks)
        assert slots.demand() == 0
        return said

    assert asyncio.run(scenario()) == [False, True, True]  # they waited: decided again


def test_creates_are_being_sent_while_they_hold_turns_or_queue_for_turns_with_room() -> None:
    """A listing waits for the creates being sent, not for those that wait for the window's reset."""

    async def scenario() -> list[bool]:
        spare: list[int | None] = [10]
        slots = CreateSlots(1, spare=lambda: spare[0])
        release = asyncio.Event()
        seen = [slots.sending()]  # nothing asks

        async def create() -> None:
            async with slots.turn(True):
                await release.wait()

        tasks = [asyncio.ensure_future(create()) for _ in range(2)]
        await asyncio.sleep(0)
        seen.append(slots.sending())  # one in flight, one waits for its turn
        release.set()
        spare[0] = 0  # the first spent the window's last spare call: the second waits for the reset
        await asyncio.sleep(ROOM_RECHECK / 2)
        seen.append(slots.sending())
        spare[0] = None  # the window reset
        await asyncio.gather(*tasks)
        seen.append(slots.sending())
        return seen

    assert asyncio.run(scenario()) == [False, True, False, False]


def test_a_create_record_is_this_process_s_own_only_once_it_sent_the_duplicate() -> None:
    """A record on the object that this process did not send is an earlier process's: sent again."""
    slots = CreateSlots(2)
    assert not slots.sent_here("uid-1")  # a restarted process: any record is inherited
    slots.sent("uid-1")
    assert slots.sent_here("uid-1") and not slots.sent_here("uid-2")
    slots.forget("uid-1")  # the session's loop ended
    assert not slots.sent_here("uid-1")
