"""Turns for creates: no more duplicates in flight than the Hub gate can send by their deadline.

A duplicate must leave for the Hub within `duplicate_send_deadline` of its recorded request, or it
is never sent (that bounds how long a Space may appear after its session is deleted). A thousand
sessions applied at once would otherwise queue a thousand duplicates at a gate that sends `hub_rate`
calls a second: all but the first few dozen wait past their deadline, are refused, back off and come
back, and the refusals and re-reads crowd the gate. So a session takes a turn before it records
its request (and its deadline), and the turns in flight are what the gate sends in half a deadline.

While the Hub's window runs low, a create waits for a turn until the window resets: the calls left
are what observation and deletions need until then (hub/gate.py), and a create sent now would be
paced behind them anyway.

It also remembers whose duplicates this process sent: a create record on a session it sent none for
was left by an earlier process, which may have died before sending it (core/lifecycle.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from sandbox_operator.config.settings import OperatorConfig

#: How often a create waiting for the Hub's window to have room looks again.
ROOM_RECHECK = 0.5

#: The share of the send deadline the creates in flight may fill at the gate's rate (the rest is
#: left for the other calls waiting before them).
DEADLINE_SHARE = 0.5


@dataclass
class CreateSlots:
    """At most `size` creates in flight; None: no limit (an unlimited gate)."""

    size: int | None = None
    #: Calls the Hub's window has to spare for creates (`HubGate.spare`); None: no such limit.
    spare: Callable[[], int | None] = lambda: None
    #: Creates holding a turn: each will spend a call of the window.
    _held: int = field(default=0, init=False, repr=False)
    #: Creates holding a turn or waiting for one: each will spend a call of the window.
    _asking: int = field(default=0, init=False, repr=False)
    _free: asyncio.Semaphore | None = field(default=None, init=False, repr=False)
    #: Sessions (UIDs) whose duplicate this process sent (or may have): their create record is its own.
    _sent: set[str] = field(default_factory=set, init=False, repr=False)

    @classmethod
    def for_config(
        cls, config: OperatorConfig, spare: Callable[[], int | None] = lambda: None
    ) -> CreateSlots:
        if config.hub_rate <= 0:
            return cls(spare=spare)
        return cls(max(1, int(config.hub_rate * config.duplicate_send_deadline * DEADLINE_SHARE)), spare)

    def __post_init__(self) -> None:
        if self.size is not None:
            self._free = asyncio.Semaphore(self.size)

    @asynccontextmanager
    async def turn(self, needed: bool) -> AsyncIterator[bool]:
        """Hold a turn for the block (none unless `needed`), given back however the block ends;
        yields whether it had to wait for it (a decision made before is stale by now)."""
        if not needed or self._free is None:
            yield False
            return
        waited = self._free.locked()
        self._asking += 1
        try:
            await self._free.acquire()
            try:
                while not self._room():
                    waited = True
                    await asyncio.sleep(ROOM_RECHECK)
                self._held += 1
                try:
                    yield waited
                finally:
                    self._held -= 1
            finally:
                self._free.release()
        finally:
            self._asking -= 1

    def demand(self) -> int:
        """Creates holding a turn or waiting for one: calls of the Hub's window they will spend."""
        return self._asking

    def sending(self) -> bool:
        """Whether creates are being sent: some hold turns, or queue for turns the Hub's window has
        room for (not those waiting for it to reset). A listing started now would miss their Spaces."""
        return self._held > 0 or (self._asking > self._held and self._room())

    def _room(self) -> bool:
        """Whether the Hub's window has a call to spare for one more create than those holding turns."""
        spare = self.spare()
        return spare is None or spare > self._held

    def sent(self, uid: str) -> None:
        """This process sent the session's duplicate (whatever the answer): it may land, and is waited for."""
        self._sent.add(uid)

    def sent_here(self, uid: str) -> bool:
        """Whether the session's create record, if any, is this process's own: one left by an earlier
        process (killed between the record and the send, maybe) is sent again, not waited out."""
        return uid in self._sent

    def forget(self, uid: str) -> None:
        self._sent.discard(uid)
