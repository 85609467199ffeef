"""Two deployments sharded by namespace, sharing a Hub owner and a cluster id: each sweeper deletes
only its own shard's orphans, and reads another shard's Space markers once, not every pass."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from sandbox_operator import api
from sandbox_operator.config.settings import OperatorConfig
from sandbox_operator.hub.spaces import ListedSpace, Ownership
from sandbox_operator.sweeper import Sweeper, Verdict

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
CONFIG = OperatorConfig(
    default_owner="agents", default_template="t/t", cluster_id="prod", sweep_grace=60, sweep_max_deletes=10
)


def uid(n: int) -> str:
    return f"00000000-0000-0000-0000-{n:012d}"


def space_id(n: int) -> str:
    return f"agents/ags-{uid(n)}"


class FakeHub:
    """One owner's Spaces with their markers; counts marker reads, records deletes."""

    def __init__(self, markers: dict[int, Ownership]) -> None:
        self.markers = {space_id(n): marker for n, marker in markers.items()}
        self.reads: list[str] = []
        self.deleted: list[str] = []

    async def list_spaces(self, owner: str, prefix: str) -> list[ListedSpace]:
        return [ListedSpace(s, NOW - timedelta(hours=1)) for s in self.markers if owner == "agents"]

    async def ownership(self, space: str, *, deleting: bool = False) -> Ownership | None:
        self.reads.append(space)
        return self.markers.get(space)

    async def delete(self, space: str) -> None:
        self.deleted.append(space)
        del self.markers[space]


class FakeKube:
    """The sessions of the shard's namespaces (the only ones a namespaced deployment may list); no pools."""

    def __init__(self, sessions: list[dict[str, Any]]) -> None:
        self.sessions = sessions

    async def list_sessions(self, namespaces: list[str], plural: str = api.PLURAL) -> list[dict[str, Any]]:
        listed = self.sessions if plural == api.PLURAL else []
        return [s for s in listed if s["metadata"]["namespace"] in namespaces]

    async def post_event(self, **_: Any) -> None:
        return None


def session(n: int, namespace: str) -> dict[str, Any]:
    return {"metadata": {"uid": uid(n), "namespace": namespace, "name": f"s{n}"}, "spec": {}, "status": {}}


def sweeper(hub: FakeHub, kube: FakeKube, namespaces: list[str]) -> Sweeper:
    fake_hub: Any = hub  # the sweeper's three Hub calls and two API calls, nothing else
    fake_kube: Any = kube
    return Sweeper(fake_hub, fake_kube, CONFIG, namespaces)


def pass_of(target: Sweeper) -> dict[str, Verdict]:
    return {d.space_id: d.verdict for d in asyncio.run(target.run_once(lambda: NOW))}


def test_each_shard_deletes_only_its_own_orphans() -> None:
    # 1: live in team-a; 2: live in team-b; 3: orphan of team-a; 4: orphan of team-b.
    hub = FakeHub({n: Ownership(uid(n), "prod", f"team-{'ab'[(n - 1) % 2]}/s{n}") for n in range(1, 5)})
    kube = FakeKube([session(1, "team-a"), session(2, "team-b")])
    shard_a = sweeper(hub, kube, ["team-a"])
    assert pass_of(shard_a) == {
        space_id(1): Verdict.CLAIMED,
        space_id(2): Verdict.OUT_OF_SCOPE,  # live, but its session is invisible to shard a
        space_id(3): Verdict.DELETE,
        space_id(4): Verdict.OUT_OF_SCOPE,
    }
    assert hub.deleted == [space_id(3)]
    assert pass_of(sweeper(hub, kube, ["team-b"]))[space_id(4)] is Verdict.DELETE
    assert hub.deleted == [space_id(3), space_id(4)]
    assert space_id(2) in hub.markers


def test_another_shards_markers_are_read_once() -> None:
    hub = FakeHub({1: Ownership(uid(1), "prod", "team-b/s1"), 2: Ownership(uid(2), "staging", "team-a/s2")})
    shard_a = sweeper(hub, FakeKube([]), ["team-a"])
    for _ in range(3):
        assert pass_of(shard_a) == {space_id(1): Verdict.OUT_OF_SCOPE, space_id(2): Verdict.OTHER_CLUSTER}
    assert sorted(hub.reads) == [space_id(1), space_id(2)]


def test_an_orphan_of_this_shard_is_read_every_pass_until_deleted() -> None:
    """Only foreign verdicts are remembered: a Space that may become this shard's orphan is re-read."""
    hub = FakeHub({1: Ownership(uid(1), "prod", "team-a/s1")})
    kube = FakeKube([session(1, "team-a")])
    shard_a = sweeper(hub, kube, ["team-a"])
    assert pass_of(shard_a) == {space_id(1): Verdict.CLAIMED}
    kube.sessions = []
    assert pass_of(shard_a) == {space_id(1): Verdict.DELETE}
    assert hub.reads == [space_id(1)] and hub.deleted == [space_id(1)]
