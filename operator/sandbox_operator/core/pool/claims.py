"""Claims: which pooled Space each claiming session gets, and the session's status once it has it
(or falls back to a Space of its own).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sandbox_operator.api import (
    AgentSessionPoolSpec,
    AgentSessionPoolStatus,
    AgentSessionSpec,
    AgentSessionStatus,
    HardwareStatus,
    LaunchType,
    Phase,
    PoolClaimant,
    PooledSpace,
)
from sandbox_operator.config.settings import OperatorConfig
from sandbox_operator.core.conditions import READY, Reason, rfc3339, set_condition
from sandbox_operator.core.creation import template_of
from sandbox_operator.core.model import (
    HealthResult,
)
from sandbox_operator.core.pool.fill import claimable, summarize
from sandbox_operator.core.pool.model import (
    POOL_HARDWARE,
    WARM_CLAIM,
    secret_refs,
)
from sandbox_operator.core.progress import conclude


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
    summarize(updated, current)
    return updated, answers


def claim_mismatch(
    spec: AgentSessionSpec, pool_spec: AgentSessionPoolSpec, config: OperatorConfig
) -> str | None:
    """Why a pooled Space cannot serve this session (it then gets a Space of its own); None if it can."""
    mine = (spec.owner or config.default_owner, template_of(spec.template, config))
    pools = (pool_spec.owner or config.default_owner, template_of(pool_spec.template, config))
    if mine != pools:
        return f"the session asks for {mine[1]} under {mine[0]}, the pool holds {pools[1]} under {pools[0]}"
    if not spec.private:
        return "the session asks for a public Space; pooled Spaces are private"
    if secret_refs(spec.secrets) != secret_refs(pool_spec.secrets):
        # A pooled Space holds the pool's secrets: only a session whose own spec names them (so the
        # admission policy checked that its author may read them) may run code next to them.
        return "the session's spec.secrets are not the pool's (a session names exactly the pool's secrets)"
    return None


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
