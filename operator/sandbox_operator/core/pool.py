"""Warm pools, decided without I/O: which Spaces a pool creates, deletes or restarts, which pooled
Space each claiming session gets, and the statuses that record both.

Every fact lives on the objects: a pooled Space is recorded in the pool's status (its id chosen
before its duplicate is sent), and a claim is a `claimedBy` written into that status with the
pool's resourceVersion, so two writers can never hand one Space to two sessions. The session then
records `status.spaceId` and `launchType: warm`, and the ownership marker is moved to it afterwards
(`handover_pending` says that is still to do).

A running app reads its secrets only when it starts, and the Hub restarts it for any change (fidelity
row F42): a claim must not touch the Space's secrets, or the session would wait a whole rebuild. So
each pooled Space is built with a sandbox token of its own (`pooled_token`, derived from the pool's
key and the Space's id, so it needs no record of its own and survives any restart), and the claim
hands that token over whole in the session's connection Secret. Each Space also records the digest
of the pool spec it was built for (`build_hash`): one built for another spec is never claimed, and
is replaced.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sandbox_operator.api import (
    POOL_LABEL,
    AgentSessionPoolSpec,
    AgentSessionPoolStatus,
    AgentSessionSpec,
    AgentSessionStatus,
    Hardware,
    HardwareStatus,
    LaunchType,
    Phase,
    PoolClaimant,
    PooledSpace,
    PooledSpaceState,
    SpaceSecretSource,
    parse_rfc3339,
)
from sandbox_operator.config.settings import OperatorConfig
from sandbox_operator.core.conditions import READY, EventNote, Reason, rfc3339, set_condition
from sandbox_operator.core.creation import Refusal, creation_refusal
from sandbox_operator.core.model import (
    ERROR_STAGES,
    STOPPED_STAGES,
    HealthResult,
    HubFailure,
    Observation,
    SpaceView,
    own_cluster,
)
from sandbox_operator.core.progress import conclude, conclude_pool

#: The session's condition that says how it got its Space (warm claim, or why it fell back to cold).
WARM_CLAIM = "WarmClaim"
#: The only flavor a pooled Space may hold: it is built ahead for nobody yet, so it must cost nothing.
POOL_HARDWARE = Hardware.CPU_BASIC.value
#: While pooled Spaces build, the pool is polled at this share of the youngest build's age (like a
#: session's waiting delay), so a pool of hundreds building for minutes does not spend the Hub budget.
POOL_WAIT_FRACTION = 0.25


@dataclass(frozen=True)
class Pool:
    """The parts of an AgentSessionPool object the decisions read."""

    name: str
    namespace: str
    uid: str
    generation: int
    spec: AgentSessionPoolSpec
    status: AgentSessionPoolStatus
    #: metadata.deletionTimestamp is set: its unclaimed Spaces go, then its finalizer.
    deleting: bool = False
    #: Why the spec cannot be read (`spec` then holds what of it parses); None when it can.
    spec_problem: str | None = None


@dataclass(frozen=True)
class PooledObservation:
    """What the Hub reports about one pooled Space this pass."""

    space: SpaceView | None = None
    health: HealthResult | None = None
    failure: HubFailure | None = None
    #: The ownership marker's session UID and cluster id; None when it was not read.
    marker_uid: str | None = None
    marker_cluster: str | None = None


@dataclass(frozen=True)
class PoolObservation:
    """Everything `decide_pool` needs, gathered by the shell."""

    #: The Spaces observed this pass (`to_observe` names them); the others are left as recorded.
    spaces: Mapping[str, PooledObservation] = field(default_factory=dict)
    #: UIDs of the AgentSessions in the pool's namespace, read fresh; None: not listed this pass.
    live_sessions: frozenset[str] | None = None
    #: Why the approval policy is not enforced (None: it is): the pool's secrets need it.
    policy_problem: str | None = None
    #: Why the pool's spec.secrets cannot be read; None when they can.
    secrets_problem: str | None = None


@dataclass(frozen=True)
class CreatePooledSpace:
    """Duplicate the template into `space_id` (recorded in the pool's status first), marked as the pool's."""

    space_id: str
    template: str
    send_by: datetime


@dataclass(frozen=True)
class DeletePooledSpace:
    space_id: str


@dataclass(frozen=True)
class RestartPooledSpace:
    space_id: str


PoolAction = CreatePooledSpace | DeletePooledSpace | RestartPooledSpace


@dataclass(frozen=True)
class PoolPlan:
    """The pool's status to write (before any action: creates are intents), the actions, and when
    to look again. `done`: a deleting pool has nothing left of its own, the finalizer may go."""

    status: AgentSessionPoolStatus
    actions: list[PoolAction]
    requeue_after: float | None
    events: list[EventNote] = field(default_factory=list)
    done: bool = False


def pool_spec_as_session(spec: AgentSessionPoolSpec) -> AgentSessionSpec:
    """The session spec a pooled Space is built for: the same allow-lists and Secret rules apply to a
    pool as to a session, so a pool is never a way around them."""
    return AgentSessionSpec.model_validate(
        {
            "owner": spec.owner,
            "template": spec.template,
            "private": True,
            "secrets": [s.model_dump(by_alias=True) for s in spec.secrets],
        }
    )


def pool_refusal(
    spec: AgentSessionPoolSpec, observed: PoolObservation, config: OperatorConfig
) -> Refusal | None:
    """Why the pool may not build Spaces: exactly a session's refusals (templates, owners, Secrets)."""
    as_session = Observation(policy_problem=observed.policy_problem)
    return creation_refusal(pool_spec_as_session(spec), as_session, config)


def build_hash(spec: AgentSessionPoolSpec, config: OperatorConfig) -> str:
    """Digest of everything a pooled Space is built from: a Space whose digest differs holds another
    template, owner or flavor, or secrets the pool no longer names, and is never handed out."""
    built = {
        "owner": spec.owner or config.default_owner,
        "template": spec.template or config.default_template,
        "hardware": POOL_HARDWARE,
        "private": True,
        "secrets": sorted(_secret_refs(spec.secrets)),
        "sleepTimeSeconds": spec.sleep_time_seconds,
    }
    return hashlib.sha256(json.dumps(built, sort_keys=True).encode()).hexdigest()[:32]


def pooled_token(pool_key: str, space_id: str) -> str:
    """The sandbox token a pooled Space is built with, and that its claimant's connection Secret gets:
    derived from the pool's key (kept in a Secret only the operator and namespace admins read), so
    no per-Space record can be lost between a duplicate and its claim."""
    digest = hmac.new(pool_key.encode(), space_id.encode(), hashlib.sha256).digest()
    return "sbx_" + base64.urlsafe_b64encode(digest).decode().rstrip("=")


def desired_replicas(spec: AgentSessionPoolSpec, config: OperatorConfig) -> int:
    return min(spec.replicas, config.pool_max_replicas)


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
    refusal = None if pool.deleting else pool_refusal(pool.spec, observed, config)
    if unreadable:
        # Nothing is built, retired or scaled on a spec half read; a fixed spec wakes the pool.
        refusal = Refusal(Reason.SPEC_INVALID, f"the pool's spec cannot be read: {pool.spec_problem}", None)
    elif refusal is None and observed.secrets_problem is not None and not pool.deleting:
        refusal = Refusal(Reason.SECRET_NOT_FOUND, observed.secrets_problem, config.poll_interval)
    actions: list[PoolAction] = []
    kept: list[PooledSpace] = []
    for entry in pool.status.spaces:
        judged = _judge(pool, entry, observed, config, now, actions)
        if judged is not None:
            kept.append(judged)
    desired = 0 if pool.deleting else desired_replicas(pool.spec, config)
    current = build_hash(pool.spec, config)
    unclaimed = [e for e in kept if e.claimed_by is None and e.state != PooledSpaceState.DELETING]
    if unreadable:
        desired = len(unclaimed)
    for entry in [] if unreadable else _outdated(unclaimed, current, desired):
        kept[kept.index(entry)] = entry.model_copy(
            update={"state": PooledSpaceState.DELETING, "message": "built for an earlier spec of the pool"}
        )
        actions.append(DeletePooledSpace(entry.space_id))
    unclaimed = unclaimed if unreadable else [e for e in unclaimed if e.spec_hash == current]
    if len(unclaimed) > desired:
        # Scale down: the least useful first (not ready, then the youngest).
        youngest_first = sorted(unclaimed, key=lambda e: e.requested_time, reverse=True)
        order = sorted(youngest_first, key=lambda e: e.state == PooledSpaceState.READY)
        for entry in order[: len(unclaimed) - desired]:
            kept[kept.index(entry)] = entry.model_copy(
                update={"state": PooledSpaceState.DELETING, "message": "not needed"}
            )
            actions.append(DeletePooledSpace(entry.space_id))
    elif len(unclaimed) < desired and refusal is None:
        template = pool.spec.template or config.default_template
        send_by = now + timedelta(seconds=config.duplicate_send_deadline)
        for _ in range(desired - len(unclaimed)):
            owner = pool.spec.owner or config.default_owner
            space_id = f"{owner}/{config.space_prefix}-{next(new_ids)}"
            kept.append(
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
    status = pool.status.model_copy(deep=True)
    status.spaces = kept
    status.selector = f"{POOL_LABEL}={pool.name}"
    _summarize(status, current)
    _pool_condition(pool, status, desired, refusal, now)
    conclude_pool(status, pool.generation, now, deleting=pool.deleting)
    done = pool.deleting and all(
        e.claimed_by is not None and not _claimant_gone(e, observed.live_sessions) for e in kept
    )
    events = _pool_events(pool.status, status)
    return PoolPlan(
        status, actions, None if done else _requeue(status, desired, refusal, config, now), events, done
    )


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
    if entry.claimed_by is not None:
        if seen is None or not _claimant_gone(entry, observed.live_sessions) or seen.failure is not None:
            return entry
        if seen.space is None or not own_cluster(seen.marker_cluster or "", config):
            return None  # gone, or kept by its session's deletionPolicy Orphan (released)
        if seen.marker_uid in (pool.uid, entry.claimed_by.uid):
            # The claimant went before (or while) the Space became its own: nobody else will delete it.
            actions.append(DeletePooledSpace(entry.space_id))
            return entry.model_copy(update={"state": PooledSpaceState.DELETING, "message": "claimant gone"})
        return None  # another owner's now: not ours to touch
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


def _summarize(status: AgentSessionPoolStatus, current: str) -> None:
    unclaimed = [e for e in status.spaces if e.claimed_by is None]
    status.replicas = sum(e.state != PooledSpaceState.DELETING for e in unclaimed)
    status.ready = sum(claimable(e, current) for e in unclaimed)
    status.claimed = sum(e.claimed_by is not None for e in status.spaces)


def _pool_condition(
    pool: Pool, status: AgentSessionPoolStatus, desired: int, refusal: Refusal | None, now: datetime
) -> None:
    def ready(value: str, reason: Reason, message: str) -> None:
        status.conditions = set_condition(
            status.conditions, READY, value, reason, message, pool.generation, now
        )

    capped = (
        f" (spec.replicas {pool.spec.replicas} is capped at {desired}, the operator's --pool-max-replicas)"
        if desired < pool.spec.replicas
        else ""
    )
    if pool.deleting:
        # Every unclaimed Space goes, those already being deleted too (status.replicas leaves them out).
        unclaimed = sum(entry.claimed_by is None for entry in status.spaces)
        ready("False", Reason.DELETING_SPACE, f"deleting {unclaimed} unclaimed Spaces")
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
        return _sooner(refusal.recheck_after, claims)
    if not waiting:
        return claims
    youngest = min((now - parse_rfc3339(e.requested_time)).total_seconds() for e in waiting)
    return max(config.poll_interval, min(config.waiting_poll_max, youngest * POOL_WAIT_FRACTION))


def _sooner(first: float | None, second: float | None) -> float | None:
    return min((d for d in (first, second) if d is not None), default=None)


# Claims ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClaimRequest:
    name: str
    uid: str


def assign_claims(
    status: AgentSessionPoolStatus, requests: Iterable[ClaimRequest], now: datetime, current: str
) -> tuple[AgentSessionPoolStatus, dict[str, PooledSpace | None]]:
    """Each request's Space: the one it already claimed (a retry after a crash gets the same Space),
    else a ready unclaimed one built for the pool's `current` spec (`build_hash`), oldest first;
    None when none is left. Returns the status to write (with the pool's resourceVersion) and the
    answer per session UID."""
    updated = status.model_copy(deep=True)
    by_uid = {e.claimed_by.uid: e for e in updated.spaces if e.claimed_by is not None}
    free = sorted((e for e in updated.spaces if claimable(e, current)), key=lambda e: e.requested_time)
    answers: dict[str, PooledSpace | None] = {}
    for request in requests:
        if request.uid in answers:
            continue
        if request.uid in by_uid:
            answers[request.uid] = by_uid[request.uid]
            continue
        if not free:
            answers[request.uid] = None
            continue
        entry = free.pop(0)
        claimed = entry.model_copy(
            update={
                "claimed_by": PoolClaimant(name=request.name, uid=request.uid),
                "claimed_time": rfc3339(now, precise=True),
            }
        )
        updated.spaces[updated.spaces.index(entry)] = claimed
        answers[request.uid] = claimed
    _summarize(updated, current)
    return updated, answers


def claim_mismatch(
    spec: AgentSessionSpec, pool_spec: AgentSessionPoolSpec, config: OperatorConfig
) -> str | None:
    """Why a pooled Space cannot serve this session (it then gets a Space of its own); None if it can."""
    mine = (spec.owner or config.default_owner, spec.template or config.default_template)
    pools = (pool_spec.owner or config.default_owner, pool_spec.template or config.default_template)
    if mine != pools:
        return f"the session asks for {mine[1]} under {mine[0]}, the pool holds {pools[1]} under {pools[0]}"
    if not spec.private:
        return "the session asks for a public Space; pooled Spaces are private"
    if _secret_refs(spec.secrets) != _secret_refs(pool_spec.secrets):
        # A pooled Space holds the pool's secrets: only a session whose own spec names them (so the
        # admission policy checked that its author may read them) may run code next to them.
        return "the session's spec.secrets are not the pool's (a session names exactly the pool's secrets)"
    return None


def _secret_refs(secrets: Iterable[SpaceSecretSource]) -> frozenset[tuple[str, str, str]]:
    return frozenset((s.name, s.secret_key_ref.name, s.secret_key_ref.key) for s in secrets)


def handover_pending(status: AgentSessionStatus) -> bool:
    """A warm claim is recorded but the Space does not carry the session's marker yet."""
    return status.launch_type == LaunchType.WARM and status.space_confirmed_time is None


def claimed_status(
    status: AgentSessionStatus,
    entry: PooledSpace,
    pool_name: str,
    connection_secret: str,
    generation: int,
    now: datetime,
    template: str,
    health: HealthResult,
) -> AgentSessionStatus:
    """The session once its claim is recorded: the Space already built (duplicated from `template`,
    the session's as the claim required), Ready when it answered `health`, checked through the edge
    with the token the session's connection Secret now holds; else it is waited for like any other."""
    claimed = status.model_copy(deep=True)
    claimed.space_id = entry.space_id
    claimed.template = template
    claimed.connection_secret = connection_secret
    claimed.launch_type = LaunchType.WARM
    claimed.claimed_time = rfc3339(now, precise=True)
    claimed.url = entry.url
    claimed.sandbox_url = entry.sandbox_url
    claimed.stage = "RUNNING"
    claimed.hardware = HardwareStatus(current=POOL_HARDWARE, requested=POOL_HARDWARE)
    message = f"claimed Space {entry.space_id} from pool {pool_name}, built"
    claimed.conditions = set_condition(
        claimed.conditions, WARM_CLAIM, "True", Reason.WARM_SPACE_CLAIMED, message, generation, now
    )
    if health.ok:
        claimed.phase = Phase.READY
        ready = ("True", Reason.WARM_SPACE_CLAIMED, f"{message}; it answers the session's token")
    else:
        claimed.phase = Phase.STARTING
        ready = (
            "False",
            Reason.STARTING,
            f"{message}; waiting for it to answer the session's token: {health.detail}",
        )
    claimed.conditions = set_condition(claimed.conditions, READY, *ready, generation, now)
    conclude(claimed, generation, now)
    return claimed


def cold_status(
    status: AgentSessionStatus, reason: Reason, message: str, generation: int, now: datetime
) -> AgentSessionStatus:
    """The session falls back to a Space of its own, and says why."""
    cold = status.model_copy(deep=True)
    cold.launch_type = LaunchType.COLD
    cold.conditions = set_condition(
        cold.conditions,
        WARM_CLAIM,
        "False",
        reason,
        f"{message}; creating a Space of its own",
        generation,
        now,
    )
    return cold


def handed_over_status(status: AgentSessionStatus, cluster_id: str, now: datetime) -> AgentSessionStatus:
    """The Space carries the session's token and marker (with `cluster_id`): from here on it is the
    session's like any other."""
    done = status.model_copy(deep=True)
    done.space_confirmed_time = rfc3339(now, precise=True)
    done.marker_cluster_id = cluster_id
    done.token_rotated_time = rfc3339(now)
    return done
