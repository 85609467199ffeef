"""Who goes next when many wait: namespaces in turn, the session created first first within one, and
calls made for no session before every session's (fairness.py)."""

from __future__ import annotations

import asyncio
import contextvars

import pytest

from sandbox_operator.fairness import (
    CURRENT_TURN,
    OPERATOR_LEVEL,
    SESSION_LEVEL,
    FairLimiter,
    FairQueue,
    serve_session,
)


def drain(queue: FairQueue[str]) -> list[str]:
    return [queue.pop() for _ in range(len(queue))]


def test_within_a_namespace_the_session_created_first_goes_first_whatever_the_arrival() -> None:
    queue: FairQueue[str] = FairQueue()
    queue.push("late", tenant="team-a", key=("2026-12-06T10:00:02Z", "late"))
    queue.push("early", tenant="team-a", key=("2026-12-06T10:00:00Z", "early"))
    queue.push("b", tenant="team-a", key=("2026-12-06T10:00:01Z", "b"))
    queue.push("a", tenant="team-a", key=("2026-12-06T10:00:01Z", "a"))  # same second: by name
    assert drain(queue) == ["early", "a", "b", "late"]


def test_a_burst_in_one_namespace_does_not_starve_another_namespaces_single_session() -> None:
    queue: FairQueue[str] = FairQueue()
    for i in range(120):
        queue.push(f"burst-{i}", tenant="noisy", key=("2026-12-06T10:00:00Z", f"s-{i:03d}"))
    queue.push("victim", tenant="quiet", key=("2026-12-06T10:00:05Z", "victim"))
    order = drain(queue)
    assert order.index("victim") == 1  # its namespace's first turn: right after the burst's first
    assert order[2:5] == ["burst-1", "burst-2", "burst-3"]


def test_namespaces_take_turns_in_the_order_they_first_queued() -> None:
    queue: FairQueue[str] = FairQueue()
    for tenant in ("a", "b", "c"):
        for i in range(2):
            queue.push(f"{tenant}{i}", tenant=tenant, key=i)
    queue.push("a2", tenant="a", key=2)
    assert drain(queue) == ["a0", "b0", "c0", "a1", "b1", "c1", "a2"]


def test_a_lower_level_goes_first_and_peek_leaves_the_item() -> None:
    queue: FairQueue[str] = FairQueue()
    queue.push("session", tenant="team-a", key=0, level=SESSION_LEVEL)
    queue.push("lease", tenant="", key=5, level=OPERATOR_LEVEL)
    assert queue.peek() == "lease" and len(queue) == 2
    assert drain(queue) == ["lease", "session"]
    assert queue.peek() is None
    with pytest.raises(IndexError):
        queue.pop()


def test_an_item_that_gives_up_leaves_the_others_in_order() -> None:
    queue: FairQueue[str] = FairQueue()
    for name, tenant in (("a0", "a"), ("b0", "b"), ("a1", "a")):
        queue.push(name, tenant=tenant, key=name)
    assert queue.remove("b0") and not queue.remove("b0")
    assert drain(queue) == ["a0", "a1"]


async def _limited(limiter: FairLimiter, turns: list[tuple[str, str, str] | None]) -> list[str]:
    """Each turn (namespace, creationTimestamp, name) asks for the limiter once the first holder has it;
    the order they get it in."""
    served: list[str] = []
    first = asyncio.Event()
    release = asyncio.Event()

    async def hold_first() -> None:
        async with limiter.hold():
            first.set()
            await release.wait()

    async def one(turn: tuple[str, str, str] | None) -> None:
        if turn is not None:
            serve_session(*turn)
        async with limiter.hold():
            served.append(turn[2] if turn is not None else "operator")

    holder = asyncio.create_task(hold_first())
    await first.wait()
    tasks = [asyncio.create_task(one(turn), context=contextvars.Context()) for turn in turns]
    await asyncio.sleep(0)  # every task is waiting now
    release.set()
    await asyncio.gather(holder, *tasks)
    return served


def test_the_limiter_serves_sessions_by_creation_namespaces_in_turn_and_the_operator_first() -> None:
    turns: list[tuple[str, str, str] | None] = [
        ("noisy", "2026-12-06T10:00:02Z", "n2"),
        ("noisy", "2026-12-06T10:00:01Z", "n1"),
        ("noisy", "2026-12-06T10:00:00Z", "n0"),
        ("quiet", "2026-12-06T10:00:09Z", "victim"),
        None,
    ]
    served = asyncio.run(_limited(FairLimiter(1), turns))
    assert served == ["operator", "n0", "victim", "n1", "n2"]


def test_a_waiter_cancelled_after_its_turn_came_passes_it_on() -> None:
    async def scenario() -> tuple[int, bool]:
        limiter = FairLimiter(1)
        entered = asyncio.Event()

        async def waiter() -> None:
            async with limiter.hold():
                entered.set()

        async with limiter.hold():
            first = asyncio.create_task(waiter())
            second = asyncio.create_task(waiter())
            await asyncio.sleep(0)
        first.cancel()  # its turn was handed over, but it never ran: the next one gets it
        await asyncio.gather(first, second, return_exceptions=True)
        return limiter._held, entered.is_set()

    held, entered = asyncio.run(scenario())
    assert held == 0 and entered


def test_calls_outside_a_session_carry_no_turn() -> None:
    assert contextvars.Context().run(CURRENT_TURN.get) is None
