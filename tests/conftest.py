"""Shared test set-up: the Hub client must never reach the real Hub from tests."""

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

INTEGRATION = Path(__file__).parent / "integration"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In parallel workers (`make test`), the files marked `long` first, then the other integration tests:
    the long ones start early and the short ones fill in at the end, rather than a long file starting
    last and every other worker waiting for it."""
    if hasattr(config, "workerinput"):
        items.sort(
            key=lambda item: (
                item.get_closest_marker("long") is None,
                not item.path.is_relative_to(INTEGRATION),
            )
        )
