"""Shared test set-up: the Hub client must never reach the real Hub from tests."""

import os

os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
