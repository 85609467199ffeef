"""Filling a pool: which pooled Spaces a pass asks the Hub about, what it makes of each, and which it
creates, deletes or restarts to hold the desired number of ready unclaimed Spaces.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

from sandbox_operator.api import (
    POOL_LABEL,
    AgentSessionPoolStatus,
    PooledSpace,
    PooledSpaceState,
    parse_rfc3339,
)
from sandbox_operator.config.settings import OperatorConfig
from sandbox_operator.core.conditions import READY, EventNote, Reason, rfc3339, set_condition
from sandbox_operator.core.creation import Refusal, template_of
from sandbox_operator.core.draft import sooner
from sandbox_operator.core.model import (
    ERROR_STAGES,
    STOPPED_STAGES,
    own_cluster,
)
from sandbox_operator.core.pool.model import (
    POOL_HARDWARE,
    POOL_WAIT_FRACTION,
    CreatePooledSpace,
    DeletePooledSpace,
    Pool,
    PoolAction,
    PooledObservation,
    PoolObservation,
    PoolPlan,
    RestartPooledSpace,
    build_hash,
    desired_replicas,
    pool_refusal,
)
from sandbox_operator.core.progress import conclude_pool


def _window(config: OperatorConfig) -> float:
    """How long after its duplicate was asked for a pooled Space may still appear (as for sessions)."""
    return config.duplicate_send_deadline + config.hub_timeout + config.hub_visibility_grace


def _claimant_gone(entry: PooledSpace, live: frozenset[str] | None) -> bool:
    return entry.claimed_by is not None and live is not None and entry.claimed_by.uid not in live


def to_observe(pool: Pool, live: frozenset[str] | None, full: bool) -> list[str]:
    """The pooled Spaces this pass must ask the Hub about: those not ready yet or being deleted, the
    Spaces of claimants that are gone, and, on a full pass (`full`), the ready ones too."""
    wanted = []
    for entry in pool.status.spaces:
        if entry.claimed_by is not None:
            if _claimant_gone(entry, live):
                wanted.append(entry.space_id)
        elif entry.state != PooledSpaceState.READY or full or pool.deleting:
            wanted.append(entry.space_id)
    return wanted


def decide_pool(
    pool: Pool, observed: PoolObservation, config: OperatorConfig, now: datetime, new_ids: Iterator[str]
) -> PoolPlan:
    """The pool's next status and actions: judge each recorded Space, then create or delete to reach
    the desired number of unclaimed Spaces. `new_ids` yields fresh Space ids for creates."""
    unreadable = pool.spec_problem is not None and not pool.deleting
    refusal = _refusal(pool, observed, config)
    actions: list[PoolAction] = []
    kept: list[PooledSpace] = []
    for entry in pool.status.spaces:
        judged = _judge(pool, entry, observed, config, now, actions)
        if judged is not None:
            kept.append(judged)
    desired = 0 if pool.deleting else desired_replicas(pool.spec, config)
    current = build_hash(pool.spec, config, observed.pool_key)
    unclaimed = [e for e in kept if e.claimed_by is None and e.state != PooledSpaceState.DELETING]
    if unreadable:
        # Nothing is built, retired or scaled on a spec half read; a fixed spec wakes the pool.
        desired = len(unclaimed)
    elif not pool.deleting:  # (a deleting pool retires every unclaimed Space, with or without its key)
        _retire(
            kept,
            _outdated(unclaimed, current, desired),
            "built for an earlier spec or key of the pool",
            actions,
        )
        unclaimed = [e for e in unclaimed if e.spec_hash == current]
    if len(unclaimed) > desired:
        # Scale down: the least useful first (not ready, then the youngest).
        youngest_first = sorted(unclaimed, key=lambda e: e.requested_time, reverse=True)
        order = sorted(youngest_first, key=lambda e: e.state == PooledSpaceState.READY)
        _retire(kept, order[: len(unclaimed) - desired], "not needed", actions)
    elif len(unclaimed) < desired and refusal is None:
        kept += _create(pool, desired - len(unclaimed), current, config, now, new_ids, actions)
    status = pool.status.model_copy(deep=True)
    status.spaces = kept
    status.selector = f"{POOL_LABEL}={pool.name}"
    summarize(status, current)
    cap = _cap(pool, config)
    _pool_condition(pool, status, desired, cap, refusal, now)
    conclude_pool(status, pool.generation, now, deleting=pool.deleting)
    done = pool.deleting and all(
        e.claimed_by is not None and not _claimant_gone(e, observed.live_sessions) for e in kept
    )
    events = _cap_warning(pool, cap) + _pool_events(pool.status, status)
    return PoolPlan(
        status, actions, None if done else _requeue(status, desired, refusal, config, now), events, done
    )


def _refusal(pool: Pool, observed: PoolObservation, config: OperatorConfig) -> Refusal | None:
    """Why the pool builds no Space now: a spec it cannot read, a session's refusals, its secrets."""
    if pool.deleting:
        return None
    if pool.spec_problem is not None:
        return Refusal(Reason.SPEC_INVALID, f"the pool's spec cannot be read: {pool.spec_problem}", None)
    refusal = pool_refusal(pool.spec, observed, config)
    if refusal is None and observed.secrets_problem is not None:
        return Refusal(Reason.SECRET_NOT_FOUND, observed.secrets_problem, config.poll_interval)
    return refusal


def _retire(kept: list[PooledSpace], entries: list[PooledSpace], why: str, actions: list[PoolAction]) -> None:
    """Delete these unclaimed Spaces: marked Deleting in `kept`, saying why."""
    for entry in entries:
        kept[kept.index(entry)] = entry.model_copy(
            update={"state": PooledSpaceState.DELETING, "message": why}
        )
        actions.append(DeletePooledSpace(entry.space_id))


def _create(
    pool: Pool,
    count: int,
    current: str,
    config: OperatorConfig,
    now: datetime,
    new_ids: Iterator[str],
    actions: list[PoolAction],
) -> list[PooledSpace]:
    """`count` new pooled Spaces, recorded (their ids chosen) before their duplicates are sent."""
    template = template_of(pool.spec.template, config)
    send_by = now + timedelta(seconds=config.duplicate_send_deadline)
    owner = pool.spec.owner or config.default_owner
    created = []
    for _ in range(count):
        space_id = f"{owner}/{config.space_prefix}-{next(new_ids)}"
        created.append(
            PooledSpace.model_validate(
                {
                    "spaceId": space_id,
                    "state": PooledSpaceState.CREATING,
                    "requestedTime": rfc3339(now, True),
                    "specHash": current,
                }
            )
        )
        actions.append(CreatePooledSpace(space_id, template, send_by))
    return created


def _judge(
    pool: Pool,
    entry: PooledSpace,
    observed: PoolObservation,
    config: OperatorConfig,
    now: datetime,
    actions: list[PoolAction],
) -> PooledSpace | None:
    """One recorded Space after this pass: kept (maybe changed), or None when it leaves the status."""
    seen = observed.spaces.get(entry.space_id)
    if seen is not None and seen.entry != entry:
        return entry  # changed since this pass looked at it: the next look judges it
    if entry.claimed_by is not None:
        return _judge_claimed(pool, entry, seen, observed.live_sessions, config, actions)
    if pool.deleting and entry.state != PooledSpaceState.DELETING:
        actions.append(DeletePooledSpace(entry.space_id))
        return entry.model_copy(update={"state": PooledSpaceState.DELETING, "message": "the pool is deleted"})
    if seen is None:
        return entry
    if seen.failure is not None:
        return entry.model_copy(update={"message": seen.failure.message})
    space = seen.space
    if entry.state == PooledSpaceState.DELETING:
        if space is None:
            return None
        actions.append(DeletePooledSpace(entry.space_id))
        return entry
    if space is None:
        landing = (now - parse_rfc3339(entry.requested_time)).total_seconds() < _window(config)
        return entry if landing and entry.state == PooledSpaceState.CREATING else None
    update: dict[str, object] = {"sandbox_url": space.sandbox_url, "url": space.url}
    held = {flavor for flavor in (space.requested_hardware, space.current_hardware) if flavor is not None}
    if space.stage in ERROR_STAGES or held - {POOL_HARDWARE}:
        why = f"stage {space.stage}" if space.stage in ERROR_STAGES else f"hardware {sorted(held)}"
        actions.append(DeletePooledSpace(entry.space_id))
        return entry.model_copy(
            update={**update, "state": PooledSpaceState.DELETING, "message": f"{why}; replacing it"}
        )
    if space.stage in STOPPED_STAGES:
        actions.append(RestartPooledSpace(entry.space_id))
        update["message"] = f"stage {space.stage}; restarting it"
    elif space.stage == "RUNNING" and seen.health is not None and seen.health.ok:
        return entry.model_copy(update={**update, "state": PooledSpaceState.READY, "message": None})
    else:
        detail = seen.health.detail if seen.health is not None else "not checked yet"
        update["message"] = f"stage {space.stage}" + (
            f"; health: {detail}" if space.stage == "RUNNING" else ""
        )
    building = entry.state == PooledSpaceState.CREATING and space.stage != "RUNNING"
    state = PooledSpaceState.CREATING if building else PooledSpaceState.NOT_READY
    return entry.model_copy(update={**update, "state": state})


def _judge_claimed(
    pool: Pool,
    entry: PooledSpace,
    seen: PooledObservation | None,
    live: frozenset[str] | None,
    config: OperatorConfig,
    actions: list[PoolAction],
) -> PooledSpace | None:
    """A claimed Space is the pool's business only once its claimant is gone before the handover."""
    assert entry.claimed_by is not None
    if seen is None or not _claimant_gone(entry, live) or seen.failure is not None:
        return entry
    if seen.space is None or not own_cluster(seen.marker_cluster or "", config):
        return None  # gone, or kept by its session's deletionPolicy Orphan (released)
    if seen.marker_uid in (pool.uid, entry.claimed_by.uid):
        # The claimant went before (or while) the Space became its own: nobody else will delete it.
        actions.append(DeletePooledSpace(entry.space_id))
        return entry.model_copy(update={"state": PooledSpaceState.DELETING, "message": "claimant gone"})
    return None  # another owner's now: not ours to touch


def _outdated(unclaimed: list[PooledSpace], current: str, desired: int) -> list[PooledSpace]:
    """The unclaimed Spaces built for another spec to retire now: at once those not ready, and the
    ready ones as their replacements become ready (the youngest kept longest), so a spec changed
    back within a build hands them out again instead of having deleted the pool."""
    stale = [e for e in unclaimed if e.spec_hash != current]
    ready = sorted((e for e in stale if e.state == PooledSpaceState.READY), key=lambda e: e.requested_time)
    replaced = sum(e.spec_hash == current and e.state == PooledSpaceState.READY for e in unclaimed)
    kept = ready[max(0, len(ready) - max(0, desired - replaced)) :]
    return [e for e in stale if e not in kept]


def claimable(entry: PooledSpace, current: str) -> bool:
    """Unclaimed, ready, and built for the pool's current spec."""
    return entry.claimed_by is None and entry.state == PooledSpaceState.READY and entry.spec_hash == current


def summarize(status: AgentSessionPoolStatus, current: str) -> None:
    unclaimed = [e for e in status.spaces if e.claimed_by is None]
    status.replicas = sum(e.state != PooledSpaceState.DELETING for e in unclaimed)
    status.ready = sum(claimable(e, current) for e in unclaimed)
    status.claimed = sum(e.claimed_by is not None for e in status.spaces)


def _pool_condition(
    pool: Pool,
    status: AgentSessionPoolStatus,
    desired: int,
    cap: str | None,
    refusal: Refusal | None,
    now: datetime,
) -> None:
    def ready(value: str, reason: Reason, message: str) -> None:
        status.conditions = set_condition(
            status.conditions, READY, value, reason, message, pool.generation, now
        )

    capped = f" ({cap})" if cap else ""
    if pool.deleting:
        # Every unclaimed Space goes, those already being deleted too (status.replicas leaves them out).
        unclaimed = [entry for entry in status.spaces if entry.claimed_by is None]
        already = sum(
            e.claimed_by is None and e.state == PooledSpaceState.DELETING for e in pool.status.spaces
        )
        on_their_way = f", {already} of them already on their way" if already else ""
        ready("False", Reason.DELETING_SPACE, f"deleting {len(unclaimed)} unclaimed Spaces{on_their_way}")
    elif refusal is not None:
        ready("False", refusal.reason, refusal.message)
    elif status.ready >= desired:
        ready("True", Reason.POOL_READY, f"{status.ready} of {desired} Spaces ready{capped}")
    else:
        ready(
            "False",
            Reason.POOL_FILLING,
            f"{status.ready} of {desired} Spaces ready, {status.replicas} held{capped}",
        )


def _cap(pool: Pool, config: OperatorConfig) -> str | None:
    """What the operator's maximum makes of spec.replicas, when it caps it (not of a spec it cannot read,
    whose pool keeps what it holds, nor of a pool being deleted)."""
    if pool.deleting or pool.spec_problem is not None or pool.spec.replicas <= config.pool_max_replicas:
        return None
    return (
        f"spec.replicas {pool.spec.replicas} is capped at {config.pool_max_replicas}, the operator's "
        "--pool-max-replicas"
    )


def _cap_warning(pool: Pool, cap: str | None) -> list[EventNote]:
    """A Warning, once per spec change, when the operator caps the replicas the spec asks for."""
    if cap is None or pool.status.observed_generation == pool.generation:
        return []
    return [EventNote(Reason.REPLICAS_CAPPED.severity, Reason.REPLICAS_CAPPED, cap)]


def _pool_events(old: AgentSessionPoolStatus, new: AgentSessionPoolStatus) -> list[EventNote]:
    before = next((c for c in old.conditions if c.type == READY), None)
    after = next(c for c in new.conditions if c.type == READY)
    if before is not None and (before.status, before.reason) == (after.status, after.reason):
        return []
    return [EventNote(Reason(after.reason).severity, after.reason, f"Ready={after.status}: {after.message}")]


def _requeue(
    status: AgentSessionPoolStatus,
    desired: int,
    refusal: Refusal | None,
    config: OperatorConfig,
    now: datetime,
) -> float | None:
    waiting = [e for e in status.spaces if e.claimed_by is None and e.state != PooledSpaceState.READY]
    # Claimants are looked for now and then (a listing, no Hub call): a Space left behind by one that
    # went before its handover is deleted (a session's deletion also wakes the pool at once).
    claims = config.waiting_poll_max if any(e.claimed_by is not None for e in status.spaces) else None
    if refusal is not None and not waiting:
        return sooner(refusal.recheck_after, claims)
    if not waiting:
        return claims
    youngest = min((now - parse_rfc3339(e.requested_time)).total_seconds() for e in waiting)
    return max(config.poll_interval, min(config.waiting_poll_max, youngest * POOL_WAIT_FRACTION))
