"""What a process knows of its warm pools, and the only writes of a pool's status.

Every write of a pool's status carries the resourceVersion it was decided on (optimistic
concurrency): a claim and a pool pass that raced, in this process or a stale leader's, make the
second writer read again and decide again, never hand one Space twice. In this process the
writes to one pool are serialized (`PoolBook.locks`) and claims are batched (pools/claim.py).
While claims are under way (and for REPLENISH_AFTER after the last), the claimed Spaces' handovers
and `WarmSpaceClaimed` Events and the pool's replenishing wait, at most BURST_LONGEST, so the
sessions of a burst are Ready first.

Each pooled Space is built with its own sandbox token (`core.pooled_token`, from the pool's key in
the Secret `<pool>-pool-token`): a running app sees a new secret only after the Hub restarts it
(fidelity row F42), so the claim hands that token over as it is and never writes the Space's secrets.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from sandbox_operator import api
from sandbox_operator.config.settings import OperatorConfig
from sandbox_operator.core import pool as core
from sandbox_operator.core.conditions import Reason
from sandbox_operator.hub.client import HubClient
from sandbox_operator.hub.edge_probe import EdgeProber
from sandbox_operator.hub.listing import FleetObserver
from sandbox_operator.k8s.client import KEY_TOKEN, KubeClient, new_token, owned_secret
from sandbox_operator.k8s.transport import ApiError, KubeApi

#: The pool's key, from which each pooled Space's sandbox token is derived, is kept in this Secret.
POOL_TOKEN_SUFFIX = "-pool-token"
#: Seconds after the last claim of a burst before its pool's loop runs (a burst wakes it once).
REPLENISH_AFTER = 0.5
#: Longest a burst of claims holds the pool's replenishing (or the claimed Spaces' handovers) back.
#: A replacement takes a whole build (a minute or more) to be claimable, so a few seconds more cost
#: the pool little; started while 200 claims are still under way on a slow machine, its duplicates
#: and marker writes took the CPU the claims needed (their p99 went from under 2 s to 5-9 s).
BURST_LONGEST = 10.0
#: Kubernetes calls of claims in flight at once (a claim is a few writes; the pool's own are batched).
CLAIM_WORKERS = 16
#: Conflicting writes of a pool's status (another writer got there first) retried at once.
CAS_ATTEMPTS = 8


def pool_from_body(body: Any, *, deleting: bool = False) -> core.Pool:
    """The pool as the operator reads it; a spec that does not parse is carried as its problem (for
    the core to report), never an error that stops the pool's loop or its finalizer."""
    meta = body.get("metadata") or {}
    spec, problem = api.read_pool_spec(body.get("spec") or {})
    return core.Pool(
        name=meta["name"],
        namespace=meta["namespace"],
        uid=meta["uid"],
        generation=int(meta.get("generation", 1)),
        spec=spec,
        status=api.AgentSessionPoolStatus.model_validate(body.get("status") or {}),
        deleting=deleting or bool(meta.get("deletionTimestamp")),
        spec_problem=problem,
    )


def _status_patch(status: api.AgentSessionPoolStatus) -> dict[str, Any]:
    return status.model_dump(by_alias=True, mode="json")


@dataclass(frozen=True)
class ClaimAnswer:
    """A pooled Space for the session, or why it gets none (it then creates one of its own)."""

    entry: api.PooledSpace | None
    reason: Reason = Reason.NO_WARM_SPACE
    message: str = ""
    #: The pool's key the Space was chosen under (`build_hash`): its token derives from it.
    pool_key: str = ""


#: A claim waiting for its pool: the request, the session's spec, and where its answer goes.
Waiter = tuple[core.ClaimRequest, api.AgentSessionSpec, asyncio.Future[ClaimAnswer]]


@dataclass
class PoolBook:
    """Per-process coordination of pool status writers: one lock per pool, the claims waiting for
    it, and each pool loop's wake-up (a claim makes the pool replenish at once)."""

    locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=lambda: defaultdict(asyncio.Lock))
    waiting: dict[tuple[str, str], list[Waiter]] = field(default_factory=lambda: defaultdict(list))
    wakeups: dict[tuple[str, str], asyncio.Event] = field(default_factory=lambda: defaultdict(asyncio.Event))
    custom: KubeApi | None = None
    #: Each pool as this process last wrote it: a claim batch writes on its resourceVersion without
    #: reading first (a 409 says another writer came between, and the pool is read again).
    latest: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    #: Claims under way per pool (from the request to the session's Ready), and the event set when
    #: none are: handovers and replenishing wait for it, so a burst's claims go first.
    claiming: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    settled: dict[tuple[str, str], asyncio.Event] = field(default_factory=lambda: defaultdict(asyncio.Event))
    burst_began: dict[tuple[str, str], float] = field(default_factory=dict)
    burst_ended: dict[tuple[str, str], float] = field(default_factory=dict)
    #: The names under which each pool's unclaimed Spaces are handed to the observer.
    followed: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    #: Each pool's key (by namespace, name and UID), read once: a burst of claims reads no Secret.
    keys: dict[tuple[str, str, str], str] = field(default_factory=dict)
    #: Sessions with a poolRef this process has reconciled before (after that, kopf's view may lag
    #: what this process wrote).
    passed: set[str] = field(default_factory=set)
    _kube: KubeClient | None = None

    @property
    def kube(self) -> KubeClient:
        """A client of the claims' own: a burst of claims does not queue behind every session's reads."""
        if self._kube is None:
            self._kube = KubeClient(self.api())
        return self._kube

    def api(self) -> KubeApi:
        if self.custom is None:
            self.custom = KubeApi(connections=CLAIM_WORKERS)
        return self.custom

    async def close(self) -> None:
        if self.custom is not None:
            await self.custom.close()


async def read_pool(book: PoolBook, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        found: Any = await book.api().get_namespaced_custom_object(
            api.GROUP, api.VERSION, namespace, api.POOL_PLURAL, name
        )
    except ApiError as error:
        if error.status == 404:
            return None
        raise
    return dict(found)


async def write_pool_status(
    book: PoolBook, namespace: str, name: str, resource_version: str, status: api.AgentSessionPoolStatus
) -> None:
    """A status write that fails with 409 unless the pool is still at `resource_version`; the pool
    as written is kept for the next claim batch."""
    body = {"metadata": {"resourceVersion": resource_version}, "status": _status_patch(status)}
    written: Any = await book.api().patch_namespaced_custom_object_status(
        api.GROUP, api.VERSION, namespace, api.POOL_PLURAL, name, body
    )
    book.latest[(namespace, name)] = dict(written)


@asynccontextmanager
async def claiming(book: PoolBook, key: tuple[str, str]) -> AsyncIterator[None]:
    """A claim under way, from its request to its session's Ready: while any is, the pool's handovers
    and its replenishing wait (for at most BURST_LONGEST), so a burst of claims is not held back by
    the work that follows each one. The pool's loop runs once the burst has passed."""
    now = time.monotonic()
    if not book.claiming.get(key):
        book.burst_began[key] = now
    elif now - book.burst_began.get(key, now) > BURST_LONGEST:
        book.burst_began[key] = now  # a burst that does not end: the pool replenishes meanwhile
        book.wakeups[key].set()
    book.claiming[key] += 1
    book.settled[key].clear()
    try:
        yield
    finally:
        book.claiming[key] -= 1
        if book.claiming[key] <= 0:
            del book.claiming[key]
            book.burst_ended[key] = time.monotonic()
            book.settled[key].set()
            asyncio.get_running_loop().call_later(REPLENISH_AFTER, _replenish_if_settled, book, key)


def _replenish_if_settled(book: PoolBook, key: tuple[str, str]) -> None:
    if not book.claiming.get(key):
        book.wakeups[key].set()


async def burst_passed(book: PoolBook, key: tuple[str, str]) -> None:
    """Until no claim on the pool is under way in this process and none ended for REPLENISH_AFTER
    (claims of a burst arrive spread out), at most BURST_LONGEST."""
    deadline = time.monotonic() + BURST_LONGEST
    while (left := deadline - time.monotonic()) > 0:
        if book.claiming.get(key):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(book.settled[key].wait(), left)
            continue
        quiet = book.burst_ended.get(key, 0.0) + REPLENISH_AFTER - time.monotonic()
        if quiet <= 0:
            return
        await asyncio.sleep(min(quiet, left))


class PoolRuntime(Protocol):
    """What the pool shell uses of the operator's runtime (built once in runtime.py)."""

    config: OperatorConfig
    hub: HubClient
    kube: KubeClient
    observer: FleetObserver
    prober: EdgeProber
    pools: PoolBook

    async def platform_read_token(self, namespace: str) -> str | None: ...


async def pool_key(book: PoolBook, namespace: str, name: str, uid: str, *, make: bool = True) -> str:
    """The key each of the pool's Spaces' tokens is derived from (`core.pooled_token`), kept in a
    Secret the pool owns in its namespace (created once, read after a restart). Session editors
    cannot read Secrets; whoever can read this one can read every connection Secret beside it.
    A Secret made anew holds a new key: the Spaces built with the old one are outdated (`build_hash`).
    Without `make` (a pool being deleted builds nothing, and its namespace may be terminating, where
    no Secret can be made) a missing Secret, or someone else's of that name, gives no key: "". Such
    a Secret then stops no deletion: the pool still deletes its Spaces."""
    cached = book.keys.get((namespace, name, uid))
    if cached is not None:
        return cached
    secret_name = f"{name}{POOL_TOKEN_SUFFIX}"
    data = await book.kube.read_secret(namespace, secret_name)
    if data is not None:
        owned = await _owned_by(book.api(), namespace, secret_name, uid)
        if not owned or not data.get(KEY_TOKEN):
            if not make:
                return ""
            raise PoolTokenConflict(
                f"Secret {namespace}/{secret_name} exists and is not this pool's; delete or rename it"
            )
        key = data[KEY_TOKEN]
    elif not make:
        return ""
    else:
        key = new_token()
        owner = (api.POOL_KIND, name, uid)
        body = owned_secret(secret_name, namespace, owner, (api.POOL_LABEL, name), {KEY_TOKEN: key})
        await book.api().create_namespaced_secret(namespace, body)
    book.keys[(namespace, name, uid)] = key
    return key


async def _owned_by(kube: KubeApi, namespace: str, name: str, uid: str) -> bool:
    secret: Any = await kube.read_namespaced_secret(name, namespace)
    return any(ref.get("uid") == uid for ref in secret["metadata"].get("ownerReferences") or [])


class PoolTokenConflict(Exception):
    """A Secret named like the pool's token Secret belongs to someone else."""
