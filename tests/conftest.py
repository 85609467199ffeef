"""Shared test set-up: the Hub client must never reach the real Hub from tests."""

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

INTEGRATION = Path(__file__).parent / "integration"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In parallel workers (`make test`), the integration tests first: they are the long ones, so they
    start early and the short ones fill in at the end, rather than a long file starting last."""
    if hasattr(config, "workerinput"):
        items.sort(key=lambda item: not item.path.is_relative_to(INTEGRATION))
