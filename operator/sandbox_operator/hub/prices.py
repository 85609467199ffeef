"""Hardware prices: the Hub's live catalog, cached, with the static fallback of
`core/prices.py`.

Budgets and the price shown to approvers must not depend on the catalog being reachable at
the moment, so a failed fetch falls back to the published prices and is retried later.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

from sandbox_operator.core.prices import FALLBACK_USD_PER_HOUR

log = logging.getLogger(__name__)

_SECONDS_PER_UNIT = {"second": 1 / 3600, "minute": 1 / 60, "hour": 1.0, "day": 24.0}


class CatalogRow(Protocol):
    """The fields of huggingface_hub's JobHardwareInfo that prices come from."""

    name: str
    unit_cost_usd: float
    unit_label: str


def hourly_prices(rows: Iterable[CatalogRow]) -> dict[str, float]:
    """USD per hour per flavor; rows with a unit we do not know are skipped, not guessed."""
    prices = {}
    for row in rows:
        factor = _SECONDS_PER_UNIT.get(row.unit_label)
        if factor is None:
            log.warning(
                "hardware catalog: unknown unit %r for %s; using the fallback price", row.unit_label, row.name
            )
            continue
        prices[row.name] = round(row.unit_cost_usd / factor, 6)
    return prices


class PriceCatalog:
    """Prices from the Hub, refreshed at most every `ttl` seconds, merged over the fallback table."""

    def __init__(
        self,
        fetch: Callable[[], Awaitable[dict[str, float]]],
        ttl: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._ttl = ttl
        self._clock = clock
        self._prices: dict[str, float] = dict(FALLBACK_USD_PER_HOUR)
        self._fetched_at: float | None = None
        self.source = "fallback"

    async def prices(self) -> dict[str, float]:
        now = self._clock()
        if self._fetched_at is None or now - self._fetched_at >= self._ttl:
            self._fetched_at = now  # also after a failure: retry after ttl, not on every reconcile
            try:
                live = await self._fetch()
            except Exception as error:  # any failure: the fallback table keeps budgets working
                log.warning("hardware catalog unavailable (%s); using fallback prices", error)
            else:
                self._prices = {**FALLBACK_USD_PER_HOUR, **live}
                self.source = "hub"
        return self._prices
