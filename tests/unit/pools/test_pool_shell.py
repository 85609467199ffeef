"""The pool shell in process (pools/book, claim, loop) on fake Hub and Kubernetes adapters: a pool
fills with a built, healthy Space, and a session naming the pool claims it instead of creating one."""

from __future__ import annotations

import asyncio
from typing import Any

from sandbox_operator import api
from sandbox_operator.core import pool as core
from sandbox_operator.k8s.transport import ApiError
from sandbox_operator.pools.book import claiming
from sandbox_operator.pools.loop import finalize_pool, pool_pass
from sandbox_operator.runtime import Runtime
from sandbox_operator.sessions import loop
from tests.support.shell import FakeHub, FakeKube, kopf_events, runtime

NS, POOL, SESSION = "team-a", "warm", "demo"


def _pool_of_one() -> tuple[FakeHub, FakeKube, Runtime, dict[str, Any]]:
    """Fakes of the Hub and Kubernetes, the runtime on them, and a pool of one replica in them."""
    hub, kube = FakeHub(), FakeKube()
    kube.add(api.POOL_PLURAL, NS, POOL, {"replicas": 1})
    return hub, kube, runtime(hub, kube), kube.objects[(api.POOL_PLURAL, NS, POOL)]


async def _built(hub: FakeHub, kube: FakeKube, rt: Runtime) -> str:
    """Two passes of the pool of one: its Space created, then built and ready. The Space's id."""
    await pool_pass(rt, kube.body(api.POOL_PLURAL, NS, POOL), full=True)
    hub.finish_builds()
    await pool_pass(rt, kube.body(api.POOL_PLURAL, NS, POOL), full=True)
    [space_id] = hub.called("duplicate")
    return space_id


def test_a_pool_fills_and_a_session_claims_its_space() -> None:
    asyncio.run(_fill_and_claim())


async def _fill_and_claim() -> None:
    hub, kube, rt, pool = _pool_of_one()
    with kopf_events() as events:
        await pool_pass(rt, kube.body(api.POOL_PLURAL, NS, POOL), full=True)
        [space_id] = hub.called("duplicate")
        assert kube.writes == [("create_secret", f"{POOL}-pool-token"), ("patch_pool_status", POOL)]
        key = kube.data(NS, f"{POOL}-pool-token")["token"]
        assert hub.tokens[space_id] == core.pooled_token(key, space_id)  # built with its own token
        assert [(e["spaceId"], e["state"]) for e in pool["status"]["spaces"]] == [(space_id, "Creating")]
        hub.finish_builds()
        await pool_pass(rt, kube.body(api.POOL_PLURAL, NS, POOL), full=True)
        assert pool["status"]["ready"] == 1 and pool["status"]["spaces"][0]["state"] == "Ready"
        assert events.reasons() == ["PoolFilling", "PoolReady"]

        kube.add(api.PLURAL, NS, SESSION, {"poolRef": {"name": POOL}})
        await loop.reconcile(rt, kube.body(api.PLURAL, NS, SESSION), loop.SessionLoop())
    session = kube.objects[(api.PLURAL, NS, SESSION)]["status"]
    assert pool["status"]["spaces"][0]["claimedBy"] == {"name": SESSION, "uid": f"uid-{SESSION}"}
    assert (session["spaceId"], session["launchType"], session["phase"]) == (space_id, "warm", "Ready")
    connection = kube.data(NS, session["connectionSecret"])
    assert connection is not None and connection["token"] == hub.tokens[space_id]  # handed over as built
    assert hub.called("claim_marker") == [space_id] and hub.markers[space_id].session_uid == f"uid-{SESSION}"
    assert hub.called("duplicate") == [space_id] and hub.called("set_token") == []  # no cold create
    assert "WarmSpaceClaimed" in events.reasons()


def test_a_claims_event_waits_until_the_burst_of_claims_has_passed() -> None:
    asyncio.run(_event_after_burst())


async def _event_after_burst() -> None:
    """The session is Ready while other claims are under way; its WarmSpaceClaimed Event (a write the
    burst's other claims would queue behind) is posted once none is, before the marker moves."""
    hub, kube, rt, _ = _pool_of_one()
    with kopf_events() as events:
        space_id = await _built(hub, kube, rt)
        kube.add(api.PLURAL, NS, SESSION, {"poolRef": {"name": POOL}})
        async with claiming(rt.pools, (NS, POOL)):  # another session's claim, under way throughout
            task = asyncio.ensure_future(
                loop.reconcile(rt, kube.body(api.PLURAL, NS, SESSION), loop.SessionLoop())
            )
            for _ in range(100):
                await asyncio.sleep(0.01)
                if kube.objects[(api.PLURAL, NS, SESSION)].get("status", {}).get("phase") == "Ready":
                    break
            assert kube.objects[(api.PLURAL, NS, SESSION)]["status"]["phase"] == "Ready"
            assert "WarmSpaceClaimed" not in events.reasons() and hub.called("claim_marker") == []
        await task
    assert "WarmSpaceClaimed" in events.reasons() and hub.called("claim_marker") == [space_id]


def test_a_pool_key_made_anew_replaces_the_spaces_built_with_the_old_one() -> None:
    asyncio.run(_key_made_anew())


async def _key_made_anew() -> None:
    """The key's Secret deleted while the operator runs: the next full pass makes a new key, and the
    Spaces whose tokens derive from the old one are replaced before any is handed out again."""
    hub, kube, rt, pool = _pool_of_one()
    with kopf_events() as events:
        old = await _built(hub, kube, rt)
        old_key = kube.data(NS, f"{POOL}-pool-token")
        del kube.secrets[(NS, f"{POOL}-pool-token")]

        await pool_pass(rt, kube.body(api.POOL_PLURAL, NS, POOL))
        assert hub.called("duplicate") == [old]  # between full passes the key read before holds
        await pool_pass(rt, kube.body(api.POOL_PLURAL, NS, POOL), full=True)
        key = kube.data(NS, f"{POOL}-pool-token")
        assert key is not None and key != old_key
        [_, new] = hub.called("duplicate")
        assert hub.tokens[new] == core.pooled_token(key["token"], new)
        assert pool["status"]["ready"] == 0  # the old Space is kept until its replacement is ready
        hub.finish_builds()
        await pool_pass(rt, kube.body(api.POOL_PLURAL, NS, POOL), full=True)
        assert hub.called("delete") == [old] and pool["status"]["ready"] == 1
        assert events.reasons() == ["PoolFilling", "PoolReady", "PoolFilling", "PoolReady"]

        kube.add(api.PLURAL, NS, SESSION, {"poolRef": {"name": POOL}})
        await loop.reconcile(rt, kube.body(api.PLURAL, NS, SESSION), loop.SessionLoop())
    session = kube.objects[(api.PLURAL, NS, SESSION)]["status"]
    assert (session["spaceId"], session["launchType"], session["phase"]) == (new, "warm", "Ready")
    connection = kube.data(NS, session["connectionSecret"])
    assert connection is not None and connection["token"] == hub.tokens[new]


def test_deleting_a_pool_waits_in_its_finalizer_until_its_spaces_are_gone() -> None:
    asyncio.run(_finalized())


async def _finalized() -> None:
    """The finalizer deletes the unclaimed Spaces and returns once they are gone: it waits between its
    passes itself, never through a kopf retry (which kopf logs at ERROR level)."""
    hub, kube, rt, pool = _pool_of_one()
    with kopf_events() as events:
        space_id = await _built(hub, kube, rt)
        await asyncio.wait_for(finalize_pool(rt, kube.body(api.POOL_PLURAL, NS, POOL)), timeout=10)
    assert hub.called("delete") == [space_id]
    assert "DeletingSpace" in events.reasons() and pool["status"]["spaces"] == []


def test_a_pass_on_a_body_older_than_the_spec_builds_with_the_spec_it_decides_on() -> None:
    asyncio.run(_stale_body())


async def _stale_body() -> None:
    """Hostile: the pool's Secret is dropped from its spec while the loop still holds the body that
    named it. The pass decides on the spec it reads; a replacement built with the old Secret would
    carry the new spec's digest and be handed to a session whose author may not read that Secret."""
    hub, kube, rt, _ = _pool_of_one()
    secret = {"name": "DB", "secretKeyRef": {"name": "db", "key": "pw"}}
    kube.respec(api.POOL_PLURAL, NS, POOL, secrets=[secret])
    with kopf_events():
        old = await _built(hub, kube, rt)
        assert hub.space_secrets[old] == {"DB": "value of DB"}
        stale = kube.body(api.POOL_PLURAL, NS, POOL)
        kube.respec(api.POOL_PLURAL, NS, POOL, secrets=[])
        await pool_pass(rt, stale, full=True)
    [_, new] = hub.called("duplicate")
    assert hub.space_secrets[new] == {}


def test_a_pool_deleted_with_its_namespace_needs_no_key_to_delete_its_spaces() -> None:
    asyncio.run(_namespace_terminating())


async def _namespace_terminating() -> None:
    """Deleting a namespace deletes the pool's key Secret beside the pool, and no Secret can be made
    there any more: the finalizer of a process that has not read the key (restarted since) deletes
    the pool's Spaces without it. Making a new key there would fail for as long as the namespace
    waits on that finalizer."""
    hub, kube, rt, pool = _pool_of_one()
    with kopf_events():
        space_id = await _built(hub, kube, rt)
        del kube.secrets[(NS, f"{POOL}-pool-token")]
        rt.pools.keys.clear()  # a restarted operator

        async def terminating(namespace: str, body: dict[str, Any]) -> Any:
            raise ApiError(403, "Forbidden: namespace is being terminated")

        kube.create_namespaced_secret = terminating  # type: ignore[method-assign]
        await asyncio.wait_for(finalize_pool(rt, kube.body(api.POOL_PLURAL, NS, POOL)), timeout=10)
    assert hub.called("delete") == [space_id] and pool["status"]["spaces"] == []


def test_a_foreign_secret_named_like_the_pools_key_stops_no_deletion() -> None:
    asyncio.run(_foreign_key_secret())


async def _foreign_key_secret() -> None:
    """Hostile: someone who may write Secrets there replaces the pool's key Secret with their own. A pool
    being built again says PoolTokenConflict; a pool being deleted needs no key, and its finalizer
    (here of a restarted operator, which has not read the key) still deletes its Spaces."""
    hub, kube, rt, pool = _pool_of_one()
    with kopf_events():
        space_id = await _built(hub, kube, rt)
        kube.secrets[(NS, f"{POOL}-pool-token")] = {"metadata": {}, "data": {"token": "mallory"}}
        rt.pools.keys.clear()  # a restarted operator
        await asyncio.wait_for(finalize_pool(rt, kube.body(api.POOL_PLURAL, NS, POOL)), timeout=10)
    assert hub.called("delete") == [space_id] and pool["status"]["spaces"] == []
