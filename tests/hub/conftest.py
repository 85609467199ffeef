"""The operator's Hub client against the Hub emulator (the fixtures: tests/support/hubsim.py)."""

from tests.support.hubsim import (  # noqa: F401 (fixtures)
    admin,
    alice,
    anonymous,
    bob,
    client,
    hub,
    hub_factory,
    no_telemetry,
    template,
)
