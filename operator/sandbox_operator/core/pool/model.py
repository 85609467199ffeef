"""What the pool's decisions read and return: the pool, what the Hub shows of its Spaces, the actions,
and the facts a pooled Space is built from (the spec's digest, its sandbox token).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from sandbox_operator.api import (
    AgentSessionPoolSpec,
    AgentSessionPoolStatus,
    AgentSessionSpec,
    Hardware,
    PooledSpace,
    SpaceSecretSource,
)
from sandbox_operator.config.settings import OperatorConfig
from sandbox_operator.core.conditions import EventNote
from sandbox_operator.core.creation import Refusal, creation_refusal, template_of
from sandbox_operator.core.model import (
    HealthResult,
    HubFailure,
    Observation,
    SpaceView,
)

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
    #: The pool's record of the Space when this pass looked at it. A record changed since (a newer
    #: pass judged the Space, a session claimed it) is not judged on this look: a ready Space is
    #: not made not-ready by a listing older than what made it ready, nor a claim taken for a
    #: claimant gone (the claimant is newer than the pass's list of sessions).
    entry: PooledSpace | None = None


@dataclass(frozen=True)
class PoolObservation:
    """Everything `decide_pool` needs, gathered by the shell."""

    #: The pool's key, read from its Secret: the tokens of Spaces built now derive from it.
    pool_key: str
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


def build_hash(spec: AgentSessionPoolSpec, config: OperatorConfig, pool_key: str) -> str:
    """Digest of everything a pooled Space is built from: a Space whose digest differs holds another
    template, owner or flavor, secrets the pool no longer names, or a token from another key (its
    Secret was deleted and made anew), and is never handed out. Only a digest of the key goes in."""
    built = {
        "key": hashlib.sha256(pool_key.encode()).hexdigest(),
        "owner": spec.owner or config.default_owner,
        "template": template_of(spec.template, config),
        "hardware": POOL_HARDWARE,
        "private": True,
        "secrets": sorted(secret_refs(spec.secrets)),
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


def secret_refs(secrets: Iterable[SpaceSecretSource]) -> frozenset[tuple[str, str, str]]:
    """The Secret references of a spec, compared as a set."""
    return frozenset((s.name, s.secret_key_ref.name, s.secret_key_ref.key) for s in secrets)
