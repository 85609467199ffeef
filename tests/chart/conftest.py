"""Fixtures for the chart and image tests; they use the real helm binary and never skip without it."""

from __future__ import annotations

import pytest
from helm_chart import Helm


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm.create(tmp_path_factory.mktemp("helm"))
