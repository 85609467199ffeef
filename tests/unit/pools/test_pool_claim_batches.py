"""A burst of claims costs one pool write per batch, on the resourceVersion this process last
wrote (no read first); another writer in between (409) or a pool that may have filled makes it read
again, so a Space is never handed out twice and no claim falls back to cold on a stale view."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from sandbox_operator import api
from sandbox_operator.config.settings import OperatorConfig
from sandbox_operator.core import pool as core
from sandbox_operator.core.conditions import Reason
from sandbox_operator.k8s.transport import ApiError
from sandbox_operator.pools import book as pools
from sandbox_operator.pools import claim as claims

NS, POOL = "team", "warm"
#: The pool's key, as its Secret holds it.
KEY = "pool-key"


def _space(i: int, *, ready: bool = True) -> dict[str, Any]:
    return {
        "spaceId": f"org/sbx-{i}",
        "state": "Ready" if ready else "Creating",
        "requestedTime": f"2026-01-01T00:00:{i:02d}Z",
        "sandboxUrl": f"https://org-sbx-{i}.hf.space",
        "specHash": core.build_hash(api.AgentSessionPoolSpec(), OperatorConfig(), KEY),
    }


class FakePools:
    """The pool's API as a claim uses it: reads, and status patches checked against resourceVersion."""

    def __init__(self, spaces: list[dict[str, Any]]) -> None:
        self.rv = 1
        self.status: dict[str, Any] = {"spaces": spaces}
        self.reads = 0
        self.writes = 0

    def _body(self) -> dict[str, Any]:
        return {
            "apiVersion": api.API_VERSION,
            "kind": api.POOL_KIND,
            "metadata": {"name": POOL, "namespace": NS, "uid": "pool-uid", "resourceVersion": str(self.rv)},
            "spec": {"replicas": len(self.status["spaces"])},
            "status": copy.deepcopy(self.status),
        }

    async def get_namespaced_custom_object(self, *_: Any) -> dict[str, Any]:
        await asyncio.sleep(0)  # a call over the network lets other claims run meanwhile
        self.reads += 1
        return self._body()

    async def patch_namespaced_custom_object_status(self, *args: Any) -> dict[str, Any]:
        await asyncio.sleep(0)
        body = args[-1]
        if body["metadata"]["resourceVersion"] != str(self.rv):
            raise ApiError(409, "Conflict")
        self.writes += 1
        self.rv += 1
        self.status = copy.deepcopy(body["status"])
        return self._body()

    def change_behind_our_back(self, spaces: list[dict[str, Any]]) -> None:
        self.rv += 1
        self.status = {"spaces": spaces}


async def _claims(book: pools.PoolBook, uids: list[str]) -> dict[str, str | None]:
    config = OperatorConfig()
    spec = api.AgentSessionSpec.model_validate({"private": True})

    async def one(uid: str) -> tuple[str, str | None]:
        async with pools.claiming(book, (NS, POOL)):
            answer = await claims.claim(book, config, NS, POOL, core.ClaimRequest(uid, uid), spec)
        return uid, answer.entry.space_id if answer.entry else None

    return dict(await asyncio.gather(*(one(uid) for uid in uids)))


def _book(fake: FakePools) -> pools.PoolBook:
    book = pools.PoolBook(custom=fake)  # type: ignore[arg-type]
    book.keys[(NS, POOL, "pool-uid")] = KEY  # read before: a burst reads no Secret
    return book


def test_a_burst_of_claims_is_answered_in_few_writes_and_never_shares_a_space() -> None:
    asyncio.run(_a_burst())


async def _a_burst() -> None:
    fake = FakePools([_space(i) for i in range(6)])
    book = _book(fake)
    answers = await _claims(book, [f"s{i}" for i in range(5)])
    given = [space for space in answers.values() if space is not None]
    assert len(set(given)) == 5  # five Spaces, each to one session
    assert fake.writes <= 2  # one batch, or two when the first claim ran alone
    # The next batch writes on the resourceVersion it last wrote: no read.
    reads = fake.reads
    fake.change_behind_our_back([*fake.status["spaces"], _space(9)])  # a pass of the pool, elsewhere
    writes = fake.writes
    assert await _claims(book, ["late"]) == {"late": "org/sbx-5"}
    assert (fake.reads, fake.writes) == (reads + 1, writes + 1)  # refused (409), read again, claimed
    assert await _claims(book, ["s9", "s10"]) == {"s9": "org/sbx-9", "s10": None}


def test_a_retry_gets_the_same_space_and_an_empty_view_is_read_again_before_cold() -> None:
    asyncio.run(_a_retry())


async def _a_retry() -> None:
    fake = FakePools([_space(0)])
    book = _book(fake)
    assert await _claims(book, ["a"]) == {"a": "org/sbx-0"}
    assert await _claims(book, ["a"]) == {"a": "org/sbx-0"}  # after a crash: the same Space
    # The pool filled since this process last wrote it: the claim reads it before falling back.
    fake.status["spaces"].append(_space(1))  # (the same resourceVersion would be a lie: bump it)
    fake.rv += 1
    assert await _claims(book, ["b"]) == {"b": "org/sbx-1"}


def test_handovers_wait_for_the_burst_and_the_pool_replenishes_after_it() -> None:
    book = pools.PoolBook()
    key = (NS, POOL)

    async def scenario() -> list[str]:
        order: list[str] = []

        async def handover() -> None:
            await pools.burst_passed(book, key)
            order.append("handover")

        async with pools.claiming(book, key):
            task = asyncio.ensure_future(handover())
            await asyncio.sleep(0.01)
            order.append("claim recorded")
        assert not book.wakeups[key].is_set()  # not at once: once the burst has passed
        await asyncio.sleep(pools.REPLENISH_AFTER / 2)
        order.append("quiet for a while")
        await task
        await asyncio.sleep(0.05)
        assert book.wakeups[key].is_set()
        return order

    assert asyncio.run(scenario()) == ["claim recorded", "quiet for a while", "handover"]


def test_a_pool_gone_since_the_last_write_answers_pool_not_found() -> None:
    asyncio.run(_gone())


async def _gone() -> None:
    fake = FakePools([_space(0), _space(1)])
    book = _book(fake)
    assert await _claims(book, ["a"]) == {"a": "org/sbx-0"}

    async def gone(*_: Any) -> Any:
        raise ApiError(404, "Not Found")

    fake.patch_namespaced_custom_object_status = gone  # type: ignore[method-assign]
    fake.get_namespaced_custom_object = gone  # type: ignore[method-assign]
    spec = api.AgentSessionSpec.model_validate({"private": True})
    request = core.ClaimRequest("b", "b")
    answer = await claims.claim(book, OperatorConfig(), NS, POOL, request, spec)
    assert answer.entry is None and answer.reason == Reason.POOL_NOT_FOUND
