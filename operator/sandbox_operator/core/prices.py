"""The Hub's published hardware prices: what budgets and receipts fall back on when the live catalog
(`hub/prices.py`) cannot be read, so the core never waits on the Hub to price an hour.
"""

from __future__ import annotations

#: Published Spaces prices (USD per hour); used only when the live catalog cannot be read.
FALLBACK_USD_PER_HOUR: dict[str, float] = {
    "cpu-basic": 0.0,
    "cpu-upgrade": 0.03,
    "zero-a10g": 0.0,
    "t4-small": 0.40,
    "t4-medium": 0.60,
    "l4x1": 0.80,
    "l4x4": 3.80,
    "l40sx1": 1.80,
    "l40sx4": 8.30,
    "l40sx8": 23.50,
    "a10g-small": 1.00,
    "a10g-large": 1.50,
    "a10g-largex2": 3.00,
    "a10g-largex4": 5.00,
    "a100-large": 2.50,
    "a100x4": 10.00,
    "a100x8": 20.00,
    "rtx-pro-6000": 2.50,
    "rtx-pro-6000x2": 5.00,
    "rtx-pro-6000x4": 10.00,
    "rtx-pro-6000x8": 20.00,
}
