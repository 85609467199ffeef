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
from sandbox_operator.core.draft import backoff_delay
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
    rt: PoolRuntime, entry: api.PooledSpace, key: str, read_token: str | None
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
        # Read from the owner's listing once the Space's URL is known (a listing has none), as a
        # session's Space is; else, or when the listing does not show it, from the Hub.
        listed = await rt.observer.listed(entry.space_id) if entry.sandbox_url else None
        if listed is not None:
            space = replace(listed, sandbox_url=entry.sandbox_url)
        else:
            space = await rt.hub.space(entry.space_id)
            rt.observer.acted(entry.space_id)
    except HubError as error:
        return core.PooledObservation(failure=error.failure)
    health = None
    if space is not None and space.stage == "RUNNING" and space.sandbox_url and read_token:
        health = await rt.hub.health(space.sandbox_url, core.pooled_token(key, entry.space_id), read_token)
    return core.PooledObservation(space=space, health=health)


async def pool_pass(
    rt: PoolRuntime, body: kopf.Body, *, deleting: bool = False, full: bool = False
) -> core.PoolPlan:
    """One pass of a pool: observe, decide on the freshest status, write it (CAS), then act."""
    book: PoolBook = rt.pools
    meta = body.get("metadata", {})
    namespace, name = meta["namespace"], meta["name"]
    key = (namespace, name)
    pool = pool_from_body(body, deleting=deleting)
    live = frozenset(s["metadata"]["uid"] for s in await rt.kube.list_sessions([namespace]))
    if full and not pool.deleting:
        # The key's Secret is read again now and then: one deleted meanwhile is made anew (a new key).
        book.keys.pop((namespace, name, pool.uid), None)
    token_key = await pool_key(book, namespace, name, pool.uid)
    read_token = await rt.platform_read_token(namespace)
    entries = {e.space_id: e for e in pool.status.spaces}
    wanted = core.to_observe(pool, live, full)
    seen = await asyncio.gather(*(_observe_space(rt, entries[i], token_key, read_token) for i in wanted))
    policy_problem = None
    secret_values: dict[str, str] = {}
    secrets_problem = None
    if pool.spec.secrets:
        policy_problem = await rt.kube.approval_policy_problem(time.monotonic())
        secret_values, secrets_problem = await rt.kube.resolve_secrets(namespace, pool.spec.secrets)
    observed = core.PoolObservation(
        spaces=dict(zip(wanted, seen, strict=True)),
        live_sessions=live,
        policy_problem=policy_problem,
        secrets_problem=secrets_problem,
        pool_key=token_key,
    )
    ids = (str(uuid.uuid4()) for _ in iter(int, 1))
    async with book.locks[key]:
        for _ in range(CAS_ATTEMPTS):
            fresh = await read_pool(book, namespace, name)
            if fresh is None:
                return core.PoolPlan(pool.status, [], None, done=True)
            current = pool_from_body(fresh, deleting=deleting)
            plan = core.decide_pool(current, observed, rt.config, datetime.now(UTC), ids)
            if plan.status == current.status:
                break
            try:
                await write_pool_status(
                    book, namespace, name, fresh["metadata"]["resourceVersion"], plan.status
                )
                break
            except ApiError as error:
                if error.status != 409:
                    raise
        else:
            raise ApiError(409, f"pool {namespace}/{name} kept changing")
    follow_spaces(rt, key, pool.uid, plan.status)
    for note in plan.events:
        kopf.event(body, type=note.type, reason=note.reason, message=note.message)
    await asyncio.gather(*(_act(rt, pool, action, token_key, secret_values) for action in plan.actions))
    return plan


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
                name = f"pool:{pool_uid}:{entry.space_id}"
                waiting = entry.state != api.PooledSpaceState.READY
                rt.observer.watch(name, entry.space_id, wakeup, waiting=waiting)
                followed.add(name)
    for name in rt.pools.followed.pop(key, set()) - followed:
        rt.observer.forget(name)
    if followed:
        rt.pools.followed[key] = followed


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
                    # The owner's listings wake the loop while its Spaces build (follow_spaces);
                    # this is only the fallback should listings fail.
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
    """Some unclaimed Space is still being built, started or deleted (a listing wakes the pool for it)."""
    return any(e.claimed_by is None and e.state != api.PooledSpaceState.READY for e in status.spaces)


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
