"""A Hub listing the test sets by hand, and the fleet observer that lists through it."""

from __future__ import annotations

from collections.abc import Callable

from sandbox_operator.core.model import FailureKind, HubFailure, SpaceView
from sandbox_operator.hub.errors import HubError
from sandbox_operator.hub.listing import FleetObserver
from sandbox_operator.hub.spaces import Listing
from tests.support.clock import ManualClock


class Hub:
    """A listing that answers what the test sets, and counts the calls."""

    def __init__(self) -> None:
        self.spaces: dict[str, SpaceView] = {}
        self.calls: list[str] = []
        self.failing = False
        self.clock = ManualClock(0.0)
        #: Seconds each listing waits at the gate before it is sent (the clock moves on meanwhile).
        self.gate_wait = 0.0
        #: Runs while the listing waits at the gate (what the operator does meanwhile).
        self.meanwhile: Callable[[], None] = lambda: None
        #: Hub API calls each listing takes (its pages).
        self.pages = 1

    async def list_spaces(self, owner: str, prefix: str) -> Listing:
        self.calls.append(owner)
        self.meanwhile()
        self.clock.now += self.gate_wait
        if self.failing:
            raise HubError("list_spaces", HubFailure(FailureKind.UNAVAILABLE, "down"))
        sent = self.clock.now
        listed = {k: v for k, v in self.spaces.items() if k.startswith(f"{owner}/{prefix}")}
        return Listing(sent, listed, calls=self.pages)


def observer(hub: Hub, clock: ManualClock) -> FleetObserver:
    """The fleet observer listing through `hub`, on `clock`, every 30 s."""
    hub.clock = clock
    return FleetObserver(hub.list_spaces, "ags-", 30.0, clock=clock)
