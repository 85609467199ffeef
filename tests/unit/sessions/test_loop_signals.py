"""A session loop's wake-ups (sessions/loop.py `Signal`): one event waited on while it sleeps, woken by
each signal that goes from clear to set and by nothing else; and the copy of its last status write
let go as soon as the watch delivers that write."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import kopf

from sandbox_operator.api import AgentSessionStatus
from sandbox_operator.sessions.loop import SessionLoop, _sleep, session_loop

#: Longer than any wake-up takes here, far shorter than the sleeps asked for.
PROMPT = 0.5


async def _woken_after(loop: SessionLoop, delay: float | None, wake: Callable[[], object]) -> float:
    """Seconds a sleep of `delay` lasted when `wake()` runs while it sleeps."""
    started = time.monotonic()
    sleeping = asyncio.ensure_future(_sleep(loop, delay))
    await asyncio.sleep(0.01)
    wake()
    await asyncio.wait_for(sleeping, 10)
    return time.monotonic() - started


def test_each_wakeup_ends_a_sleep_at_once() -> None:
    for signal in ("wakeup", "listed", "stopping"):
        loop = SessionLoop()
        assert asyncio.run(_woken_after(loop, None, getattr(loop, signal).set)) < PROMPT, signal


def test_a_signal_set_before_the_sleep_ends_it_before_it_begins() -> None:
    loop = SessionLoop()
    loop.listed.set()
    assert asyncio.run(_woken_after(loop, 30.0, lambda: None)) < PROMPT


def test_a_sleep_ends_when_its_delay_passes() -> None:
    assert 0.1 <= asyncio.run(_woken_after(SessionLoop(), 0.1, lambda: None)) < PROMPT


def test_the_finalizer_seen_again_at_each_watch_event_does_not_wake_a_sleeping_loop() -> None:
    """Every watch event of a guarded session sets `finalizer_seen`: only its first setting is news."""
    loop = SessionLoop()
    loop.finalizer_seen.set()
    assert 0.2 <= asyncio.run(_woken_after(loop, 0.2, loop.finalizer_seen.set)) < PROMPT


def test_a_signal_a_sleep_does_not_wait_for_does_not_end_it() -> None:
    """The finalizer's first appearance is for a pass waiting to create, not for a sleeping loop."""
    loop = SessionLoop()
    assert 0.2 <= asyncio.run(_woken_after(loop, 0.2, loop.finalizer_seen.set)) < PROMPT


def test_the_loop_state_is_made_once_per_session() -> None:
    memo = kopf.Memo()
    first = session_loop(memo)
    assert session_loop(memo) is first


def test_the_copy_of_a_status_write_goes_once_the_watch_delivers_it() -> None:
    """Kept while the watch has not delivered the write (the next pass decides on it), let go at the
    first event of another version, not at the loop's next pass (minutes away while a Space builds)."""
    loop = SessionLoop()
    loop.unseen_write = ("5", AgentSessionStatus.model_validate({"phase": "Starting"}))
    loop.delivered({"metadata": {"resourceVersion": "5"}})
    assert loop.unseen_write is not None
    loop.delivered({"metadata": {"resourceVersion": "6"}})
    assert loop.unseen_write is None
