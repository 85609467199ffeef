"""Shared test set-up: the Hub client must never reach the real Hub from tests."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"  # before huggingface_hub is imported

from huggingface_hub import set_client_factory
from huggingface_hub.utils._http import default_client_factory

INTEGRATION = Path(__file__).parent / "integration"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In parallel workers (`make test`), the integration tests first: they are the long ones, so they
    start early and the short ones fill in at the end, rather than a long file starting last."""
    if hasattr(config, "workerinput"):
        items.sort(key=lambda item: not item.path.is_relative_to(INTEGRATION))


@pytest.fixture(autouse=True)
def _default_hub_client() -> Iterator[None]:
    """The operator's Hub client installs its gate in huggingface_hub's process-wide client; the next
    test starts from the default whatever this one built (parallel workers run files in any order)."""
    yield
    set_client_factory(default_client_factory)
