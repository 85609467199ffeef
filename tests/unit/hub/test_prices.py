"""Price catalog: live prices when the Hub answers, the fallback table when it does not."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from sandbox_operator.core.prices import FALLBACK_USD_PER_HOUR
from sandbox_operator.hub.prices import PriceCatalog, hourly_prices
from sandbox_testbench.hubsim import HARDWARE_CATALOG


@dataclass
class Row:
    name: str
    unit_cost_usd: float
    unit_label: str


def test_hourly_prices_convert_units_and_skip_unknown_ones() -> None:
    rows = [Row("a", 0.5 / 60, "minute"), Row("b", 2.0, "hour"), Row("c", 1.0, "fortnight")]
    assert hourly_prices(rows) == {"a": 0.5, "b": 2.0}


def test_fallback_table_matches_the_emulated_catalog() -> None:
    assert FALLBACK_USD_PER_HOUR == HARDWARE_CATALOG


def test_catalog_is_cached_and_falls_back_on_failure() -> None:
    calls = []
    now = [0.0]

    async def fetch() -> dict[str, float]:
        calls.append(now[0])
        if len(calls) == 2:
            raise OSError("hub down")
        return {"a10g-small": 1.25}

    catalog = PriceCatalog(fetch, ttl=60, clock=lambda: now[0])

    async def scenario() -> None:
        assert (await catalog.prices())["a10g-small"] == 1.25
        now[0] = 30
        assert (await catalog.prices())["a10g-small"] == 1.25 and len(calls) == 1
        now[0] = 61
        prices = await catalog.prices()  # fetch fails: previous prices stay
        assert prices["a10g-small"] == 1.25 and len(calls) == 2
        assert prices["t4-small"] == FALLBACK_USD_PER_HOUR["t4-small"]

    asyncio.run(scenario())
