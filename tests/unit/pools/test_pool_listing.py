"""A pool's unclaimed Spaces are observed through the owner's shared listing (the observer's),
not with a Hub read per building Space per pass; a listing wakes the pool's loop while they build."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

from sandbox_operator import api
from sandbox_operator.core.model import HealthResult, SpaceView
from sandbox_operator.hub.listing import FleetObserver
from sandbox_operator.hub.spaces import Listing
from sandbox_operator.pools import loop as pools
from sandbox_operator.pools.book import PoolBook

NS, POOL = "team", "warm"


def _entry(i: int, *, url: bool = True, state: str = "Creating", claimed: bool = False) -> api.PooledSpace:
    return api.PooledSpace.model_validate(
        {
            "spaceId": f"org/sbx-{i}",
            "state": state,
            "requestedTime": "2026-01-01T00:00:00Z",
            **({"sandboxUrl": f"https://org-sbx-{i}.hf.space"} if url else {}),
            **({"claimedBy": {"name": "s", "uid": "u"}} if claimed else {}),
        }
    )


class FakeHub:
    def __init__(self) -> None:
        self.reads: list[str] = []
        self.listings = 0
        self.stages = {f"org/sbx-{i}": "BUILDING" for i in range(4)} | {"org/sbx-0": "RUNNING"}

    def _view(self, space_id: str, url: str | None) -> SpaceView:
        return SpaceView(space_id, self.stages[space_id], "cpu-basic", "cpu-basic", True, sandbox_url=url)

    async def list_spaces(self, owner: str, prefix: str) -> Listing:
        self.listings += 1
        return Listing(time.monotonic(), {space_id: self._view(space_id, None) for space_id in self.stages})

    async def space(self, space_id: str, *, with_marker: bool = False) -> SpaceView:
        self.reads.append(space_id)
        return self._view(space_id, f"https://{space_id.replace('/', '-')}.hf.space")

    async def health(self, sandbox_url: str, token: str, hub_token: str) -> HealthResult:
        return HealthResult(ok=True, detail="ok", status=200)


def _runtime(hub: FakeHub) -> Any:
    observer = FleetObserver(hub.list_spaces, "sbx-", 30.0)
    return SimpleNamespace(observer=observer, hub=hub, pools=PoolBook())


def test_building_spaces_are_read_from_one_listing_not_one_call_each() -> None:
    hub = FakeHub()
    rt = _runtime(hub)
    entries = [_entry(0), _entry(1), _entry(2), _entry(3, url=False)]

    async def observe() -> list[Any]:
        return list(await asyncio.gather(*(pools._observe_space(rt, e, "tok", "read") for e in entries)))

    seen = asyncio.run(observe())
    assert hub.listings == 1  # one listing for the owner, shared
    assert hub.reads == ["org/sbx-3"]  # only the Space whose URL is not known yet (a listing has none)
    assert [s.space.stage for s in seen] == ["RUNNING", "BUILDING", "BUILDING", "BUILDING"]
    assert seen[0].space.sandbox_url == "https://org-sbx-0.hf.space" and seen[0].health.ok
    assert seen[1].health is None  # still building: nothing to check


def test_the_pool_follows_its_unclaimed_spaces_and_a_listing_wakes_it() -> None:
    hub = FakeHub()
    rt = _runtime(hub)
    key = (NS, POOL)
    status = api.AgentSessionPoolStatus(
        spaces=[_entry(0, state="Ready"), _entry(1), _entry(2, claimed=True, state="Ready")]
    )
    pools.follow_spaces(rt, key, "pool-uid", status)
    assert rt.observer.owners() == {"org"}
    assert len(rt.pools.followed[key]) == 2  # the claimed Space is its session's to observe

    async def listing() -> bool:
        await rt.observer.observe_owner("org")
        return rt.pools.wakeups[key].is_set()

    assert asyncio.run(listing())  # sbx-1 is building: each listing wakes the pool
    pools.follow_spaces(rt, key, "", api.AgentSessionPoolStatus())  # the loop stopped
    assert rt.observer.owners() == set() and key not in rt.pools.followed
