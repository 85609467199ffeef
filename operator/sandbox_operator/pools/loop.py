"""The pool's loop and finalizer: observe its Spaces, decide (`core.pool`), write its status
(CAS, pools/book.py), then create, restart or delete Spaces."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import cast

import kopf

from sandbox_operator import api
from sandbox_operator.core import pool as core
from sandbox_operator.core.creation import template_of
from sandbox_operator.core.draft import backoff_delay
from sandbox_operator.core.model import HealthResult, SpaceView
from sandbox_operator.hub.errors import HubError, SpaceExistsError
from sandbox_operator.k8s.transport import ApiError
from sandbox_operator.pools.book import (
    CAS_ATTEMPTS,
    PoolBook,
    PoolRuntime,
    PoolTokenConflict,
    pool_from_body,
    pool_key,
    read_pool,
    write_pool_status,
)

log = logging.getLogger(__name__)


async def _observe_space(
    rt: PoolRuntime, pool: core.Pool, entry: api.PooledSpace, key: str, read_token: str | None
) -> core.PooledObservation:
    """A pooled Space's state; its health only through the edge with the platform's read token, as a
    session's (without one no pooled Space becomes ready, and claims fall back to cold creates)."""
    try:
        if entry.claimed_by is not None:
            space = await rt.hub.space(entry.space_id)
            ownership = await rt.hub.ownership(entry.space_id) if space is not None else None
            if ownership is None:
                return core.PooledObservation(space=None)
            return core.PooledObservation(
                space=space, marker_uid=ownership.session_uid, marker_cluster=ownership.cluster_id
            )
        # From the owner's listing, as a session's Space is: the latest one once the Space's app
        # address is recorded, else the first one sent after its create (shared by every Space created
        # meanwhile; it carries the address); from the Hub when the listing does not show it.
        if entry.sandbox_url:
            listed = await rt.observer.listed(entry.space_id)
            space = replace(listed, sandbox_url=entry.sandbox_url) if listed is not None else None
        else:
            space = await rt.observer.after_action(entry.space_id)
        if space is None:
            space = await rt.hub.space(entry.space_id)
            rt.observer.acted(entry.space_id)
    except HubError as error:
        return core.PooledObservation(failure=error.failure)
    if space is None:
        return core.PooledObservation(space=None)
    token = core.pooled_token(key, entry.space_id)
    space, health = _probed(rt, pool, entry, space, token, read_token)
    if health is None and space.stage == "RUNNING" and space.sandbox_url and read_token:
        health = await rt.hub.health(space.sandbox_url, token, read_token)
    return core.PooledObservation(space=space, health=health)


def _probed(
    rt: PoolRuntime,
    pool: core.Pool,
    entry: api.PooledSpace,
    space: SpaceView,
    token: str,
    read_token: str | None,
) -> tuple[SpaceView, HealthResult | None]:
    """A building pooled Space as its app's edge shows it (`EdgeProber.building_view`), probed with
    its own token: the pool is woken when it answers, not at the next listing. Its build teaches the
    template's build time under the template's name, the default one included, as sessions' do."""
    name = _follow_name(pool.uid, entry.space_id)
    rt.prober.bind(name, rt.pools.wakeups[(pool.namespace, pool.name)])
    since = api.parse_rfc3339(entry.requested_time).timestamp()
    template = template_of(pool.spec.template, rt.config)
    return rt.prober.building_view(
        name, space, token, read_token, private=True, since=since, template=template
    )


async def pool_pass(
    rt: PoolRuntime, body: kopf.Body, *, deleting: bool = False, full: bool = False
) -> core.PoolPlan:
    """One pass of a pool: observe, decide on the freshest status, write it (CAS), then act. The pool
    is observed again when the spec read for the decision is newer than the body observed (kopf's
    view lags a patch): Spaces are built only with the secrets of the spec their digest records."""
    meta = body.get("metadata", {})
    namespace, name = meta["namespace"], meta["name"]
    for _ in range(CAS_ATTEMPTS):
        pool = pool_from_body(body, deleting=deleting)
        observed, token_key, secret_values = await _observe(rt, pool, full)
        decided = await _decide_and_write(rt, pool, observed, deleting=deleting)
        if isinstance(decided, core.PoolPlan):
            break
        body = decided
    else:
        raise ApiError(409, f"pool {namespace}/{name} kept changing")
    follow_spaces(rt, (namespace, name), pool.uid, decided.status)
    for note in decided.events:
        kopf.event(body, type=note.type, reason=note.reason, message=note.message)
    await asyncio.gather(*(_act(rt, pool, action, token_key, secret_values) for action in decided.actions))
    return decided


async def _observe(
    rt: PoolRuntime, pool: core.Pool, full: bool
) -> tuple[core.PoolObservation, str, dict[str, str]]:
    """What a pass decides on (its Spaces, the live sessions, the policy and the pool's secrets), the
    pool's key, and the values of the secrets its spec names."""
    book: PoolBook = rt.pools
    live = frozenset(s["metadata"]["uid"] for s in await rt.kube.list_sessions([pool.namespace]))
    if full and not pool.deleting:
        # The key's Secret is read again now and then: one deleted meanwhile is made anew (a new key).
        book.keys.pop((pool.namespace, pool.name, pool.uid), None)
    token_key = await pool_key(book, pool.namespace, pool.name, pool.uid, make=not pool.deleting)
    read_token = await rt.platform_read_token(pool.namespace)
    entries = {e.space_id: e for e in pool.status.spaces}
    wanted = core.to_observe(pool, live, full)
    seen = await asyncio.gather(
        *(_observe_space(rt, pool, entries[i], token_key, read_token) for i in wanted)
    )
    policy_problem = None
    secret_values: dict[str, str] = {}
    secrets_problem = None
    if pool.spec.secrets:
        policy_problem = await rt.kube.approval_policy_problem(time.monotonic())
        secret_values, secrets_problem = await rt.kube.resolve_secrets(pool.namespace, pool.spec.secrets)
    observed = core.PoolObservation(
        # Each look with the record it was taken for: a record changed since is not judged on it.
        spaces={i: replace(look, entry=entries[i]) for i, look in zip(wanted, seen, strict=True)},
        live_sessions=live,
        policy_problem=policy_problem,
        secrets_problem=secrets_problem,
        pool_key=token_key,
    )
    return observed, token_key, secret_values


async def _decide_and_write(
    rt: PoolRuntime, pool: core.Pool, observed: core.PoolObservation, *, deleting: bool
) -> core.PoolPlan | kopf.Body:
    """The plan on the pool as read now, its status written on that read's resourceVersion; or the
    pool as read, when its spec is not the one observed (to be observed again)."""
    book: PoolBook = rt.pools
    key = (pool.namespace, pool.name)
    ids = (str(uuid.uuid4()) for _ in iter(int, 1))
    async with book.locks[key]:
        for _ in range(CAS_ATTEMPTS):
            fresh = await read_pool(book, *key)
            if fresh is None:
                return core.PoolPlan(pool.status, [], None, done=True)
            current = pool_from_body(fresh, deleting=deleting)
            if (current.spec, current.spec_problem) != (pool.spec, pool.spec_problem):
                return kopf.Body(cast(kopf.RawBody, fresh))
            plan = core.decide_pool(current, observed, rt.config, datetime.now(UTC), ids)
            if plan.status == current.status:
                return plan
            try:
                await write_pool_status(book, *key, fresh["metadata"]["resourceVersion"], plan.status)
                return plan
            except ApiError as error:
                if error.status != 409:
                    raise
    raise ApiError(409, f"pool {pool.namespace}/{pool.name} kept changing")


def follow_spaces(
    rt: PoolRuntime, key: tuple[str, str], pool_uid: str, status: api.AgentSessionPoolStatus
) -> None:
    """Hand the pool's own Spaces to the observer: the owner's shared listing shows them, and wakes the
    pool's loop when one it waits for (building, starting, being deleted) may have moved, or a ready
    one changed or vanished, instead of a read per Space per pass. Claimed Spaces are the sessions'."""
    followed: set[str] = set()
    if rt.observer.enabled:
        wakeup = rt.pools.wakeups[key]
        for entry in status.spaces:
            if entry.claimed_by is None:
                name = _follow_name(pool_uid, entry.space_id)
                waiting = entry.state != api.PooledSpaceState.READY
                rt.observer.watch(name, entry.space_id, wakeup, waiting=waiting)
                followed.add(name)
    for entry in status.spaces:
        if entry.claimed_by is not None or entry.state == api.PooledSpaceState.READY:
            rt.prober.forget(_follow_name(pool_uid, entry.space_id))  # built: no more probes
    for name in rt.pools.followed.pop(key, set()) - followed:
        rt.observer.forget(name)
        rt.prober.forget(name)
    if followed:
        rt.pools.followed[key] = followed


def _follow_name(pool_uid: str, space_id: str) -> str:
    """The name a pooled Space is followed under, by the observer's listings and the edge prober."""
    return f"pool:{pool_uid}:{space_id}"


async def _act(
    rt: PoolRuntime, pool: core.Pool, action: core.PoolAction, key: str, secret_values: dict[str, str]
) -> None:
    """One action; a Hub failure is logged and left to the next pass (the status already says why)."""
    rt.observer.acted(action.space_id)  # listings asked for before now do not show this action
    try:
        match action:
            case core.CreatePooledSpace(space_id=space_id, template=template, send_by=send_by):
                await rt.hub.duplicate(
                    template=template,
                    space_id=space_id,
                    private=True,
                    token=core.pooled_token(key, space_id),
                    secrets=secret_values,
                    session_uid=pool.uid,
                    session_ref=f"{pool.namespace}/{pool.name}",
                    send_by=send_by,
                    sleep_time=pool.spec.sleep_time_seconds,
                )
            case core.DeletePooledSpace(space_id=space_id):
                await rt.hub.delete(space_id)
            case core.RestartPooledSpace(space_id=space_id):
                await rt.hub.restart(space_id)
    except SpaceExistsError:
        log.info("pool %s/%s: Space %s already exists", pool.namespace, pool.name, action.space_id)
    except HubError as error:
        log.warning("pool %s/%s: %s failed: %s", pool.namespace, pool.name, type(action).__name__,
                    error.failure.message)  # fmt: skip


async def run_pool(rt: PoolRuntime, body: kopf.Body, stopped: kopf.DaemonStopped) -> None:
    """The pool's loop: a pass, then sleep until the core's delay, a spec change or a claim."""
    meta = body.get("metadata", {})
    key = (meta["namespace"], meta["name"])
    wakeup = rt.pools.wakeups[key]
    failures = 0
    last_full = 0.0
    try:
        while not stopped:
            wakeup.clear()
            full = time.monotonic() - last_full >= max(rt.config.resync_interval, rt.config.poll_interval)
            try:
                plan = await pool_pass(rt, body, full=full)
                delay = plan.requeue_after
                failures = 0
                if full:
                    last_full = time.monotonic()
                if delay is not None and rt.pools.followed.get(key) and _building(plan.status):
                    # The owner's listings and the edge prober wake the loop while its Spaces build
                    # (follow_spaces, _probed); this is only the fallback should both fail.
                    delay = max(delay, 2 * rt.observer.interval)
            except (ApiError, PoolTokenConflict, HubError) as error:
                failures += 1
                delay = backoff_delay(failures, rt.config, random.random())
                log.warning(
                    "pool %s/%s: %s; retrying in %.1fs", meta.get("namespace"), meta.get("name"), error, delay
                )
            if delay is None and rt.config.resync_interval > 0:
                delay = rt.config.resync_interval
            waiters = {asyncio.ensure_future(wakeup.wait()), asyncio.ensure_future(stopped.wait())}
            try:
                await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
    finally:
        follow_spaces(rt, key, "", api.AgentSessionPoolStatus())  # the observer follows none of them


def _building(status: api.AgentSessionPoolStatus) -> bool:
    """Some unclaimed Space is still being built, started or deleted (a listing wakes the pool for it),
    and each has its app's address: one just created is looked for in the next listing at once."""
    waiting = [e for e in status.spaces if e.claimed_by is None and e.state != api.PooledSpaceState.READY]
    return bool(waiting) and all(e.sandbox_url or e.state == api.PooledSpaceState.DELETING for e in waiting)


async def finalize_pool(rt: PoolRuntime, body: kopf.Body) -> None:
    """Deleting a pool deletes its unclaimed Spaces; the finalizer stays until they are gone. It
    waits here, between passes, rather than through a kopf retry, which kopf logs as an ERROR
    ("failed temporarily") for what is the pool's normal way out."""
    meta = body.get("metadata", {})
    key = (meta["namespace"], meta["name"])
    latest: kopf.Body | None = body
    while latest is not None and not (await pool_pass(rt, latest, deleting=True, full=True)).done:
        wakeup = rt.pools.wakeups[key]
        wakeup.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wakeup.wait(), timeout=max(0.05, rt.config.poll_interval))
        fresh = await read_pool(rt.pools, *key)
        latest = kopf.Body(cast(kopf.RawBody, fresh)) if fresh is not None else None
    follow_spaces(rt, key, "", api.AgentSessionPoolStatus())
