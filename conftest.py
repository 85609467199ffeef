"""Set-up for every test directory (tests/ and the test bench's own tests)."""

import os
from collections.abc import Iterator

import pytest

os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"  # before huggingface_hub is imported

from huggingface_hub import set_client_factory
from huggingface_hub.utils._http import default_client_factory


@pytest.fixture(autouse=True)
def _default_hub_client() -> Iterator[None]:
    """The operator's Hub client installs its gate in huggingface_hub's process-wide client; the next
    test starts from the default whatever this one built (parallel workers run files in any order)."""
    yield
    set_client_factory(default_client_factory)
