"""A pool's unclaimed Spaces are observed through the owner's shared listing (the observer's),
not with a Hub read per building Space per pass; a listing wakes the pool's loop while they build,
and so does the edge prober when a building Space's app first answers its own token."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

from sandbox_operator import api
from sandbox_operator.config.settings import OperatorConfig
from sandbox_operator.core import pool as core
from sandbox_operator.core.model import HealthResult, SpaceView
from sandbox_operator.hub.edge_probe import EdgeProber
from sandbox_operator.hub.listing import FleetObserver
from sandbox_operator.hub.spaces import Listing
from sandbox_operator.pools import loop as pools
from sandbox_operator.pools.book import PoolBook

NS, POOL = "team", "warm"
#: The template a pool with none in its spec duplicates.
DEFAULT_TEMPLATE = "templates/agent-sandbox"


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
        self.asked: list[tuple[str, str]] = []
        self.listings = 0
        self.stages = {f"org/sbx-{i}": "BUILDING" for i in range(4)} | {"org/sbx-0": "RUNNING"}

    def _view(self, space_id: str, url: str | None) -> SpaceView:
        return SpaceView(space_id, self.stages[space_id], "cpu-basic", "cpu-basic", True, sandbox_url=url)

    async def list_spaces(self, owner: str, prefix: str) -> Listing:
        """As the Hub client's: each Space with its app's address, from its subdomain."""
        self.listings += 1
        views = {space_id: self._view(space_id, _url(space_id)) for space_id in self.stages}
        return Listing(time.monotonic(), views)

    async def space(self, space_id: str, *, with_marker: bool = False) -> SpaceView:
        self.reads.append(space_id)
        return self._view(space_id, _url(space_id))

    async def health(self, sandbox_url: str, token: str, hub_token: str) -> HealthResult:
        self.asked.append((sandbox_url, token))
        return HealthResult(ok=True, detail="ok", status=200)


def _url(space_id: str) -> str:
    return f"https://{space_id.replace('/', '-')}.hf.space"


def _runtime(hub: FakeHub, probes_per_second: float = 0.0) -> Any:
    observer = FleetObserver(hub.list_spaces, "sbx-", 30.0)
    prober = EdgeProber(hub.health, rate=probes_per_second, cadence=0.5)
    config = OperatorConfig(default_template=DEFAULT_TEMPLATE)
    return SimpleNamespace(observer=observer, hub=hub, pools=PoolBook(), prober=prober, config=config)


def _pool() -> core.Pool:
    return core.Pool(
        name=POOL,
        namespace=NS,
        uid="pool-uid",
        generation=1,
        spec=api.AgentSessionPoolSpec.model_validate({"replicas": 4}),
        status=api.AgentSessionPoolStatus(),
    )


def test_building_spaces_are_read_from_one_listing_not_one_call_each() -> None:
    hub = FakeHub()
    rt = _runtime(hub)
    entries = [_entry(0), _entry(1), _entry(2), _entry(3, url=False)]

    async def observe() -> list[Any]:
        return list(
            await asyncio.gather(*(pools._observe_space(rt, _pool(), e, "key", "read") for e in entries))
        )

    seen = asyncio.run(observe())
    assert hub.listings == 1  # one listing for the owner, shared
    assert hub.reads == []  # a Space whose address is not recorded yet has it from the listing too
    assert seen[3].space.sandbox_url == "https://org-sbx-3.hf.space"
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


def test_a_building_space_whose_app_answers_its_own_token_wakes_the_pool_and_is_running() -> None:
    hub = FakeHub()
    rt = _runtime(hub, probes_per_second=10.0)
    pool, entry = _pool(), _entry(1)

    async def scenario() -> Any:
        first = await pools._observe_space(rt, pool, entry, "key", "read")
        assert first.space.stage == "BUILDING" and first.health is None  # offered to the prober
        rt.prober.tick()
        await asyncio.wait_for(rt.pools.wakeups[(NS, POOL)].wait(), timeout=5)  # woken by the answer
        return await pools._observe_space(rt, pool, entry, "key", "read")

    seen = asyncio.run(scenario())
    assert (seen.space.stage, seen.space.current_hardware) == ("RUNNING", "cpu-basic") and seen.health.ok
    # Its build time is learned for the template it was duplicated from, the default one (the pool
    # names none): the sessions' cold Spaces of that template are then probed only near its end.
    assert rt.prober.builds.shortest(DEFAULT_TEMPLATE, time.time()) is not None
    # Asked with the Space's own token, derived from the pool's key, never the read token alone.
    assert hub.asked == [("https://org-sbx-1.hf.space", core.pooled_token("key", "org/sbx-1"))]
    pools.follow_spaces(
        rt, (NS, POOL), pool.uid, api.AgentSessionPoolStatus(spaces=[_entry(1, state="Ready")])
    )
    assert rt.prober.answered("pool:pool-uid:org/sbx-1", "org/sbx-1", "cpu-basic") is None  # built: forgotten
