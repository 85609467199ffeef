"""The Hub emulator's tests drive it through the real huggingface_hub client (tests/support/hubsim.py)."""

from tests.support.hubsim import (  # noqa: F401 (fixtures)
    admin,
    alice,
    anonymous,
    bob,
    clock,
    hub,
    hub_factory,
    no_telemetry,
    template,
)
