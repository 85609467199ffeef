"""Secrets every session's pass reads (the Hub read token), read once per short while.

A private session's pass reads the read token's Secret: a thousand sessions polling would read the
same Secret a thousand times a round. Reads of one Secret are shared: within `ttl` seconds the
last answer is reused, and callers that ask while a read is under way wait for that read.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

ReadSecret = Callable[[str, str], Awaitable[dict[str, str] | None]]


class SecretCache:
    """A Secret's decoded data (None: it does not exist), reused for `ttl` seconds."""

    def __init__(self, read: ReadSecret, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._read = read
        self._ttl = ttl
        self._clock = clock
        self._answers: dict[tuple[str, str], tuple[float, asyncio.Future[dict[str, str] | None]]] = {}

    async def get(self, namespace: str, name: str) -> dict[str, str] | None:
        key = (namespace, name)
        now = self._clock()
        cached = self._answers.get(key)
        if cached is None or now - cached[0] >= self._ttl or (cached[1].done() and cached[1].exception()):
            future: asyncio.Future[dict[str, str] | None] = asyncio.ensure_future(self._read(namespace, name))
            self._answers[key] = (now, future)
            cached = (now, future)
        return await asyncio.shield(cached[1])
