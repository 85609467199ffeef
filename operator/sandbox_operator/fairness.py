"""Who goes next when many wait: namespaces take turns, and within one, first come, first served.

In a burst of a thousand sessions every call used to queue FIFO: each session advanced one stage
per round, and all were Ready together at the end. Calls now wait in order. Namespaces take turns
(round-robin), so one namespace's burst cannot starve another namespace's single session; within a
namespace the session created first (creationTimestamp, then name) goes first, so a session's later
calls overtake the first calls of sessions created after it, and sessions are Ready in the order
they were created. Calls made for no session (the finalizer, leases, listings, the sweeper) go
before any session's: they are few, and a deletion or a lease renewal must not wait for a burst.

The order is kept wherever the calls of many sessions queue: the Kubernetes API client's
connections and the Hub client's workers (`FairLimiter`), and the Hub gate's queue (hub/gate.py,
which orders by its own priorities first). A session's loop says who it is with `serve_session`.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, order=True)
class Turn:
    """Whose call this is: a session's namespace, and its place in that namespace's order."""

    namespace: str
    #: (creationTimestamp as RFC 3339, name): the earliest created goes first.
    order: tuple[str, str]


#: The session the current task works for (set in its reconcile loop); None: no session's call.
CURRENT_TURN: ContextVar[Turn | None] = ContextVar("sandbox_operator_turn", default=None)

#: Queue levels: lower first. Calls made for no session go before every session's.
OPERATOR_LEVEL = 0
SESSION_LEVEL = 1


def serve_session(namespace: str, name: str, created: str | None) -> None:
    """Make the current task's calls (and those of tasks it starts) queue as this session's."""
    CURRENT_TURN.set(Turn(namespace, (created or "", name)))


def current_level() -> int:
    return OPERATOR_LEVEL if CURRENT_TURN.get() is None else SESSION_LEVEL


@dataclass
class FairQueue(Generic[T]):
    """Waiting items: the lowest level first; within a level, tenants take turns (round-robin, in the
    order they first queued), and within a tenant the smallest key goes first (ties: arrival)."""

    #: Per level, per tenant: a heap of (key, arrival, item).
    _heaps: dict[int, dict[str, list[tuple[Any, int, T]]]] = field(default_factory=dict)
    #: Per level: tenants with waiting items, the next to be served first.
    _turns: dict[int, deque[str]] = field(default_factory=dict)
    _arrivals: itertools.count[int] = field(default_factory=itertools.count)
    _size: int = 0

    def __len__(self) -> int:
        return self._size

    def push(self, item: T, *, tenant: str, key: Any, level: int = 0) -> None:
        tenants = self._heaps.setdefault(level, {})
        heap = tenants.get(tenant)
        if heap is None:
            heap = tenants[tenant] = []
            self._turns.setdefault(level, deque()).append(tenant)
        heapq.heappush(heap, (key, next(self._arrivals), item))
        self._size += 1

    def _head(self) -> tuple[int, str] | None:
        if not self._size:
            return None
        level = min(level for level, turns in self._turns.items() if turns)
        return level, self._turns[level][0]

    def peek(self) -> T | None:
        """The item that goes next, left in the queue."""
        head = self._head()
        if head is None:
            return None
        level, tenant = head
        return self._heaps[level][tenant][0][2]

    def pop(self) -> T:
        """Take the next item; its tenant's next turn comes after every other waiting tenant's."""
        head = self._head()
        if head is None:
            raise IndexError("pop from an empty FairQueue")
        level, tenant = head
        turns = self._turns[level]
        turns.popleft()
        heap = self._heaps[level][tenant]
        _, _, item = heapq.heappop(heap)
        if heap:
            turns.append(tenant)
        else:
            del self._heaps[level][tenant]
        self._size -= 1
        return item

    def remove(self, item: T) -> bool:
        """Take `item` out wherever it waits (it gave up); its tenant keeps its place in the turns."""
        for level, tenants in self._heaps.items():
            for tenant, heap in tenants.items():
                for index, entry in enumerate(heap):
                    if entry[2] == item:
                        heap.pop(index)
                        heapq.heapify(heap)
                        if not heap:
                            del tenants[tenant]
                            self._turns[level].remove(tenant)
                        self._size -= 1
                        return True
        return False


@dataclass
class FairLimiter:
    """At most `size` holders at once; waiters get their turn in `FairQueue` order of the session
    their task serves (`CURRENT_TURN`; calls for no session first). Must be used in one event loop."""

    size: int
    _held: int = 0
    _waiting: FairQueue[asyncio.Future[None]] = field(default_factory=FairQueue)

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        if self._held < self.size and not self._waiting:
            self._held += 1
        else:
            turn = CURRENT_TURN.get()
            ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiting.push(
                ready,
                tenant=turn.namespace if turn is not None else "",
                key=turn.order if turn is not None else ("", ""),
                level=current_level(),
            )
            try:
                await ready  # the releasing holder passed its place on: _held already counts this one
            except BaseException:
                if not self._waiting.remove(ready):  # granted, but cancelled before it ran: pass it on
                    self._release()
                raise
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        while self._waiting:
            ready = self._waiting.pop()
            if not ready.done():
                ready.set_result(None)
                return
        self._held -= 1
