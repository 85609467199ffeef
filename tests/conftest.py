"""Shared test set-up: the Hub client must never reach the real Hub from tests."""

import os
import sys
from pathlib import Path

os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
# Test helper modules (tests/integration/harness.py) import by name.
sys.path.insert(0, str(Path(__file__).parent / "integration"))
