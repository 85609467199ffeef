"""Fixtures for the chart and image tests; they use the real helm (promtool, kube-score) binaries and never
skip without them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.helm_chart import Helm, built_tool


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm.create(tmp_path_factory.mktemp("helm"))


@pytest.fixture(scope="session")
def promtool() -> Path:
    return built_tool("promtool")


@pytest.fixture(scope="session")
def kube_score() -> Path:
    return built_tool("kube-score")
