"""Shards whose namespaces overlap: the claim on each Lease, the one winner both sides compute, and
the leader election's checks (claim written before the others are read, liveness on our own clock)
against an in-memory API server."""

from __future__ import annotations

import asyncio
import copy
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sandbox_operator.core.conditions import rfc3339
from sandbox_operator.core.shards import (
    ALL_NAMESPACES,
    SERVED_NAMESPACES_ANNOTATION,
    SHARD_LEASE_LABEL,
    Shard,
    Verdict,
    claim_text,
    conflicts,
    last_written,
    may_act,
    overlap,
    parse_claim,
    ranks_first,
    unrenewed_past_duration,
)
from sandbox_operator.hub.gate import HubGate
from sandbox_operator.k8s.leadership import run_as_leader
from sandbox_operator.k8s.lease import LeaderElector, LeaseLost, LeaseSettings, ShardOverlap
from sandbox_operator.k8s.transport import ApiError
from sandbox_operator.observability import metrics
from sandbox_operator.observability.health import Standby


def shard(name: str, serves: frozenset[str] | None, created: str = "2026-11-29T04:00:00Z") -> Shard:
    return Shard("ops", name, f"{name}-pod", created, serves)


# --- pure decisions ---------------------------------------------------------------------------------


def test_the_claim_is_the_sorted_namespaces_or_a_star_for_the_whole_cluster() -> None:
    assert claim_text(["team-b", "team-a", "team-b"]) == "team-a,team-b"
    assert claim_text([]) == ALL_NAMESPACES
    assert parse_claim("team-a,team-b") == {"team-a", "team-b"}
    assert parse_claim(ALL_NAMESPACES) is None
    assert parse_claim(claim_text(["x"])) == {"x"}


@pytest.mark.parametrize(
    ("a", "b", "shared"),
    [
        (frozenset({"a"}), frozenset({"b"}), ()),
        (frozenset({"a", "b"}), frozenset({"b", "c"}), ("b",)),
        (None, frozenset({"c", "b"}), ("b", "c")),
        (frozenset({"c"}), None, ("c",)),
        (None, None, (ALL_NAMESPACES,)),
        (frozenset(), frozenset({"a"}), ()),
    ],
)
def test_overlap(a: frozenset[str] | None, b: frozenset[str] | None, shared: tuple[str, ...]) -> None:
    assert overlap(a, b) == shared == overlap(b, a)


def test_exactly_one_of_two_wins_the_older_lease_then_the_name() -> None:
    old, new = shard("z", None, "2026-11-29T04:00:00Z"), shard("a", None, "2026-11-29T04:00:01Z")
    assert ranks_first(old, new) and not ranks_first(new, old)
    same_a, same_b = shard("a", None), shard("b", None)
    assert ranks_first(same_a, same_b) and not ranks_first(same_b, same_a)


def test_conflicts_are_the_other_overlapping_shards_with_who_wins() -> None:
    me = shard("me", frozenset({"a", "b"}), "2026-11-29T04:00:01Z")
    older = shard("older", frozenset({"b"}), "2026-11-29T04:00:00Z")
    newer_all = shard("newer", None, "2026-11-29T04:00:02Z")
    disjoint = shard("other", frozenset({"c"}))
    found = conflicts(me, [me, older, newer_all, disjoint])
    assert [(c.other.name, c.namespaces, c.we_win) for c in found] == [
        ("older", ("b",), False),
        ("newer", ("a", "b"), True),
    ]
    assert "ops/older" in found[0].describe() and "b" in found[0].describe()


def test_a_loser_never_acts_a_winner_already_acting_goes_on_a_new_one_holds_off() -> None:
    me = shard("me", frozenset({"a"}), "2026-11-29T04:00:01Z")
    lost = conflicts(me, [shard("older", frozenset({"a"}), "2026-11-29T04:00:00Z")])
    for acting in (False, True):
        verdict = may_act(lost, {}, now=100.0, acting=acting, hold_off=30.0)
        assert not verdict.act and verdict.yields_to == lost
    won = conflicts(me, [shard("newer", frozenset({"a"}), "2026-11-29T04:00:02Z")])
    assert may_act(won, {"ops/newer": 100.0}, now=100.0, acting=True, hold_off=30.0).act
    waiting = may_act(won, {"ops/newer": 100.0}, now=129.0, acting=False, hold_off=30.0)
    assert not waiting.act and waiting.waits_for == won
    assert may_act(won, {"ops/newer": 100.0}, now=130.0, acting=False, hold_off=30.0).act
    assert may_act([], {}, now=0.0, acting=False, hold_off=30.0).act


# --- the elector's checks against an in-memory API server -----------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


SERVER_EPOCH = datetime(2026, 11, 29, 4, 0, tzinfo=UTC)


class FakeLeases:
    """Leases as the API server keeps them: resourceVersion guards writes, creationTimestamp is set on
    create (from a counter, so creation order is clear), label selectors on a namespace's list."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.store: dict[tuple[str, str], dict[str, Any]] = {}
        self.version = 0
        self.lists = 0
        #: With a clock, every write is stamped with the server's time of it, as managedFields are.
        self.clock = clock

    def _stamp(self, body: Any) -> Any:
        self.version += 1
        body = copy.deepcopy(body)
        body["metadata"]["resourceVersion"] = str(self.version)
        if self.clock is not None:
            written = SERVER_EPOCH + timedelta(seconds=int(self.clock.now))
            body["metadata"]["managedFields"] = [{"manager": "Python", "time": rfc3339(written)}]
        return body

    async def read_namespaced_lease(self, name: str, namespace: str) -> Any:
        if (namespace, name) not in self.store:
            raise ApiError(404, "Not Found")
        return copy.deepcopy(self.store[namespace, name])

    async def create_namespaced_lease(self, namespace: str, body: Any) -> Any:
        name = body["metadata"]["name"]
        if (namespace, name) in self.store:
            raise ApiError(409, "Conflict")
        body = self._stamp(body)
        body["metadata"]["creationTimestamp"] = f"2026-11-29T04:{self.version:02d}:00Z"
        self.store[namespace, name] = body
        return copy.deepcopy(body)

    async def replace_namespaced_lease(self, name: str, namespace: str, body: Any) -> Any:
        current = self.store[namespace, name]
        if body["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict")
        body = self._stamp(body)
        body["metadata"]["creationTimestamp"] = current["metadata"]["creationTimestamp"]
        self.store[namespace, name] = body
        return copy.deepcopy(body)

    async def patch_namespaced_lease(self, name: str, namespace: str, body: Any) -> Any:
        """A merge patch of the spec: a replace of the Lease with it merged in, at the patch's version."""
        merged = copy.deepcopy(self.store[namespace, name])
        merged["metadata"]["resourceVersion"] = body["metadata"]["resourceVersion"]
        merged["spec"].update(body["spec"])
        return await self.replace_namespaced_lease(name, namespace, merged)

    async def list_namespaced_lease(self, namespace: str, label_selector: str) -> Any:
        self.lists += 1
        key, _, value = label_selector.partition("=")
        items = [
            lease
            for (where, _), lease in self.store.items()
            if where == namespace and (lease["metadata"].get("labels") or {}).get(key) == value
        ]
        return {"items": copy.deepcopy(items)}

    async def close(self) -> None:
        pass


def elector(api: FakeLeases, clock: Clock, name: str, *serves: str) -> LeaderElector:
    settings = LeaseSettings(name, "ops", f"{name}-pod", 10.0, 8.0, 0.001, serves=serves)
    made = LeaderElector(settings, clock=clock)
    made._api = api  # type: ignore[assignment]
    return made


def test_the_claim_and_the_shard_label_are_written_with_the_lease() -> None:
    api, clock = FakeLeases(), Clock()
    asyncio.run(elector(api, clock, "team-a", "b", "a").try_acquire_or_renew())
    metadata = api.store["ops", "team-a"]["metadata"]
    assert metadata["labels"] == {SHARD_LEASE_LABEL: "true"}
    assert metadata["annotations"] == {SERVED_NAMESPACES_ANNOTATION: "a,b"}


def test_two_starting_at_once_with_overlapping_namespaces_never_both_act() -> None:
    api, clock = FakeLeases(), Clock()
    a, b = elector(api, clock, "team-a", "shared", "a"), elector(api, clock, "team-b", "shared")
    disjoint = elector(api, clock, "team-c", "c")

    async def scenario() -> None:
        # Both write their claims, then both read: neither can miss the other.
        for one in (a, b, disjoint):
            assert (await one.try_acquire_or_renew()).ours
        verdict_a, verdict_b = await a.check_shards(acting=False), await b.check_shards(acting=False)
        assert not isinstance(verdict_a, str) and not isinstance(verdict_b, str)
        assert not verdict_a.act and [c.other.name for c in verdict_a.waits_for] == ["team-b"]
        assert not verdict_b.act and [(c.other.name, c.namespaces) for c in verdict_b.yields_to] == [
            ("team-a", ("shared",))
        ]
        assert (await disjoint.check_shards(acting=False)).act  # type: ignore[union-attr]
        # b stays a standby and renews; once a loser could have noticed, a (created first) acts.
        clock.now += 10.0
        for one in (b, a):
            assert (await one.try_acquire_or_renew()).ours
        assert not (await b.check_shards(acting=False)).act  # type: ignore[union-attr]
        assert (await a.check_shards(acting=False)).act  # type: ignore[union-attr]
        # a dies: b sees a's Lease unrenewed for its duration, on b's own clock, and takes over.
        clock.now += 9.0
        await b.try_acquire_or_renew()
        assert not (await b.check_shards(acting=False)).act  # type: ignore[union-attr]
        clock.now += 1.5
        await b.try_acquire_or_renew()
        assert (await b.check_shards(acting=False)).act  # type: ignore[union-attr]

    asyncio.run(scenario())


def test_a_lease_labelled_as_a_shard_outside_the_operators_namespace_never_counts() -> None:
    """A tenant with `edit` in their namespace labels a Lease of theirs as a shard serving every
    namespace, before the operator starts: older, it would win; it is not even read."""
    api, clock = FakeLeases(), Clock()
    tenant = elector(api, clock, "mine", "a")
    tenant.settings = LeaseSettings("mine", "tenant", "mallory", 10.0, 8.0, 0.001)  # serves `*`

    async def scenario() -> None:
        assert (await tenant.try_acquire_or_renew()).ours
        assert api.store["tenant", "mine"]["metadata"]["labels"] == {SHARD_LEASE_LABEL: "true"}
        operator = elector(api, clock, "operator", "a")
        assert (await operator.try_acquire_or_renew()).ours
        verdict = await operator.check_shards(acting=False)
        assert isinstance(verdict, Verdict) and verdict.act and not verdict.waits_for
        assert metrics.SHARD_OVERLAP._value.get() == 0

    asyncio.run(scenario())


def test_a_standby_says_which_shard_it_yields_to_in_a_metric() -> None:
    api, clock = FakeLeases(), Clock()
    old, new = elector(api, clock, "old", "a"), elector(api, clock, "new", "a")

    async def scenario() -> None:
        assert (await old.try_acquire_or_renew()).ours
        assert (await new.try_acquire_or_renew()).ours
        verdict = await new.check_shards(acting=False)
        assert isinstance(verdict, Verdict) and not verdict.act
        assert metrics.SHARD_YIELDING.labels(lease="ops/old")._value.get() == 1
        api.store["ops", "old"]["spec"]["holderIdentity"] = ""  # released
        await new.try_acquire_or_renew()
        assert (await new.check_shards(acting=False)).act  # type: ignore[union-attr]
        assert ("ops/old",) not in metrics.SHARD_YIELDING._metrics

    asyncio.run(scenario())


def test_an_acting_leader_stops_when_an_older_overlapping_shard_comes_back() -> None:
    api, clock = FakeLeases(), Clock()
    old, new = elector(api, clock, "old", "a"), elector(api, clock, "new", "a", "b")

    async def scenario() -> None:
        assert (await old.try_acquire_or_renew()).ours  # created first, then stopped (released)
        api.store["ops", "old"]["spec"]["holderIdentity"] = ""
        await new.acquire()  # a released Lease is not live: new acts
        assert new.holds()
        assert (await old.try_acquire_or_renew()).ours
        assert not (await old.check_shards(acting=False)).act  # type: ignore[union-attr]  # holds off
        with pytest.raises(ShardOverlap, match="ops/old"):
            await new.keep()
        assert not new.holds()

    asyncio.run(scenario())


def test_a_renewal_whose_check_fails_does_not_extend_the_right_to_act() -> None:
    api, clock = FakeLeases(), Clock()
    one = elector(api, clock, "solo", "a")

    async def failing(namespace: str, label_selector: str) -> Any:
        raise ApiError(403, "Forbidden")

    async def scenario() -> None:
        await one.acquire()
        assert one.holds()
        api.list_namespaced_lease = failing  # type: ignore[method-assign]
        clock.now += 9.0  # past the renew deadline of the last renewal whose check succeeded
        with pytest.raises(LeaseLost, match=r"could not renew.*cannot list the other shards"):
            await one.keep()  # its renewal itself succeeds
        assert not one.holds()

    asyncio.run(scenario())


def test_a_standby_shard_that_stops_withdraws_its_claim_at_once() -> None:
    api, clock = FakeLeases(), Clock()
    old, new = elector(api, clock, "old", "a"), elector(api, clock, "new", "a")

    async def scenario() -> None:
        await old.acquire()
        assert (await new.try_acquire_or_renew()).ours
        assert not (await new.check_shards(acting=False)).act  # type: ignore[union-attr]  # yields
        await new.release()  # its Lease names it, though it never acted
        assert api.store["ops", "new"]["spec"]["holderIdentity"] == ""
        assert (await old.check_shards(acting=True)).act  # type: ignore[union-attr]
        await old.release()
        assert api.store["ops", "old"]["spec"]["holderIdentity"] == ""

    asyncio.run(scenario())


def test_a_stop_while_waiting_for_the_lease_releases_it_and_never_starts_the_operator() -> None:
    api, clock = FakeLeases(), Clock()
    old, new = elector(api, clock, "old", "a"), elector(api, clock, "new", "a")
    started = []

    async def operator() -> None:
        started.append(True)

    async def scenario() -> None:
        await old.acquire()
        stop_flag = asyncio.Event()
        waiting = asyncio.create_task(run_as_leader(new, HubGate(0, 1), operator(), stop_flag))
        for _ in range(1000):  # until new has written its claim and stands by
            if api.store.get(("ops", "new"), {}).get("spec", {}).get("holderIdentity") == "new-pod":
                break
            await asyncio.sleep(0.001)
        stop_flag.set()  # as SIGTERM does
        await asyncio.wait_for(waiting, 5)
        assert api.store["ops", "new"]["spec"]["holderIdentity"] == ""

    asyncio.run(scenario())
    assert not started


def test_the_servers_last_write_is_the_latest_managed_fields_time() -> None:
    entries = [{"time": "2026-11-29T04:00:09Z"}, {"time": "2026-11-29T04:00:10Z"}, {"manager": "x"}]
    assert last_written({"managedFields": entries}) == "2026-11-29T04:00:10Z"
    assert last_written({}) == ""
    # More than the duration plus a second apart on the server's clock; unknown times prove nothing.
    assert unrenewed_past_duration("2026-11-29T04:00:00Z", "2026-11-29T04:00:12Z", 10)
    assert not unrenewed_past_duration("2026-11-29T04:00:00Z", "2026-11-29T04:00:11Z", 10)
    assert not unrenewed_past_duration("", "2026-11-29T04:10:00Z", 10)


def test_a_lease_left_unrenewed_past_its_duration_on_the_servers_clock_holds_no_one_back() -> None:
    clock = Clock()
    api = FakeLeases(clock)
    killed, alive, new = (elector(api, clock, name, "a") for name in ("killed", "alive", "new"))

    def yields_to(verdict: object) -> list[str]:
        assert isinstance(verdict, Verdict) and not verdict.act
        return sorted(c.other.name for c in verdict.yields_to)

    async def scenario() -> None:
        await killed.acquire()  # then SIGKILLed: its Lease still names it
        clock.now += 5.0
        for one in (alive, new):
            assert (await one.try_acquire_or_renew()).ours
        # 5 s since the killed one's last write on the server's clock: no proof yet, it may be live
        assert yields_to(await new.check_shards(acting=False)) == ["alive", "killed"]
        clock.now += 7.0
        for one in (alive, new):
            assert (await one.try_acquire_or_renew()).ours
        # 12 s > its 10 s + 1: dead, though our own clock has watched it for only 7 s
        assert yields_to(await new.check_shards(acting=False)) == ["alive"]

    asyncio.run(scenario())


async def standing_by(one: LeaderElector, sound: bool) -> Standby:
    """Let `one.acquire()` (a task) run until it stands by as soundly as asked; what it says then."""
    for _ in range(1000):
        if one.standby is not None and one.standby.sound == sound:
            return one.standby
        await asyncio.sleep(0.001)
    raise AssertionError(f"never stood by with sound={sound}: {one.standby}")


def test_a_standby_is_sound_while_it_sees_who_acts_and_unsound_when_it_cannot_reach_the_lease() -> None:
    api, clock = FakeLeases(), Clock()
    leader = elector(api, clock, "so", "a")
    standby = LeaderElector(replace(leader.settings, identity="so-standby"), clock=clock)
    standby._api = api  # type: ignore[assignment]
    assert standby.standby is not None and not standby.standby.sound  # nothing read yet

    async def forbidden(name: str, namespace: str) -> Any:
        raise ApiError(403, "Forbidden")

    async def scenario() -> None:
        await leader.acquire()
        assert leader.standby is None  # it acts
        waiting = asyncio.create_task(standby.acquire())
        assert "held by so-pod" in (await standing_by(standby, sound=True)).reason
        api.read_namespaced_lease = forbidden  # type: ignore[method-assign]
        assert "403 Forbidden" in (await standing_by(standby, sound=False)).reason
        waiting.cancel()

    asyncio.run(scenario())


def test_a_shard_that_yields_to_an_overlapping_one_stands_by_soundly() -> None:
    api, clock = FakeLeases(), Clock()
    old, new = elector(api, clock, "old", "a"), elector(api, clock, "new", "a")

    async def scenario() -> None:
        await old.acquire()
        waiting = asyncio.create_task(new.acquire())
        assert "overlapping shards" in (await standing_by(new, sound=True)).reason
        waiting.cancel()

    asyncio.run(scenario())
