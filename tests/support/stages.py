"""Every stage of a session and of a pool, decided by the real decision core and served as the API
server returns it (`kubectl get -o json`): what the status tests read with GitOps tools' code, and
the core's own tests check for the conditions those tools read."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from sandbox_operator import api
from sandbox_operator.api import AgentSessionPoolStatus, AgentSessionStatus
from sandbox_operator.core import pool as pools
from sandbox_operator.core.conditions import rfc3339
from sandbox_operator.core.lifecycle import decide
from sandbox_operator.core.model import (
    DeletionObservation,
    FailureKind,
    HubFailure,
    Observation,
    Session,
    SpaceView,
)

from .core import CONFIG, HEALTHY, NOW, RECORDED, SANDBOX, TRUSTED, UID, new_session, observed, paid, space

REPO = Path(__file__).resolve().parents[2]

APPROVAL = {"hardware": "a10g-small", "approvedBy": "alice"}
EXPIRED = {**APPROVAL, "expiresAt": "2026-11-26T11:00:00Z"}
DENIAL = {"hardware": "a10g-small", "deniedBy": "alice", "reason": "use a t4"}
#: The key of the pools the stages are drawn from.
POOL_KEY = "pool-key"


def unobserved_status(crd_file: str) -> dict[str, Any]:
    """The status the shipped CRD makes the API server serve before the operator writes one."""
    crd = yaml.safe_load((REPO / "crds" / crd_file).read_text())
    default: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"][
        "default"
    ]
    return default


def served(
    kind: str, status: AgentSessionStatus | AgentSessionPoolStatus | dict[str, Any], **metadata: Any
) -> dict[str, Any]:
    """The object as `kubectl get -o json` prints it: nulls are gone (the operator's merge patches
    remove them), metadata.generation is set, a deleting one has its deletionTimestamp."""
    written = (
        status
        if isinstance(status, dict)
        else status.model_dump(by_alias=True, mode="json", exclude_none=True)
    )
    return {
        "apiVersion": api.API_VERSION,
        "kind": kind,
        "metadata": {"name": "demo", "namespace": "team-a", "uid": UID, "generation": 1, **metadata},
        "spec": {},
        "status": written,
    }


def decided(spec: dict[str, Any], seen: Observation, **status: Any) -> AgentSessionStatus:
    return decide(new_session(spec, {**RECORDED, **status}), seen, CONFIG, NOW).status


def session_objects() -> dict[str, dict[str, Any]]:
    kind = api.KIND
    ready = decided({}, observed())
    since = rfc3339(NOW, precise=True)
    paused = {"paused": True}
    stopped = space("PAUSED", None)
    spent = {"estimatedUsd": 2.0, "usdPerHour": 1.0, "budgetUsd": 1.0, "lastObservedTime": since}
    deleting: Session = replace(new_session({}, {**RECORDED, "spaceConfirmedTime": since}), deleting=True)
    return {
        "created, no status written yet": served(kind, unobserved_status("agentsessions.yaml")),
        "building": served(kind, decided({}, observed(space("BUILDING"), health=None))),
        "ready": served(kind, ready),
        "spec changed, not observed yet": served(kind, ready, generation=2),
        "paid flavor awaiting approval": served(kind, decided({"hardware": "a10g-small"}, observed())),
        "approved, upgrading": served(
            kind, decided({"hardware": "a10g-small", "approval": APPROVAL}, observed())
        ),
        "approval expired": served(
            kind, decided({"hardware": "a10g-small", "approval": EXPIRED}, observed())
        ),
        "denied": served(kind, decided({"hardware": "a10g-small", "denial": DENIAL}, observed())),
        "budget spent": served(
            kind,
            decided(
                {"hardware": "a10g-small", "approval": {**APPROVAL, "budgetUsd": 1.0}},
                observed(paid()),
                spend=spent,
            ),
        ),
        "template not allowed": served(
            kind,
            decide(
                new_session({"template": "elsewhere/template"}), Observation(**TRUSTED), CONFIG, NOW
            ).status,
        ),
        "Hub unavailable, retried": served(
            kind, decided({}, observed(hub_failure=HubFailure(FailureKind.UNAVAILABLE, "503 from the Hub")))
        ),
        "pausing": served(kind, decided(paused, observed())),
        "paused": served(
            kind,
            decided(paused, observed(stopped, health=None, connection_paused_since=since), pausedSince=since),
        ),
        "sleeping": served(kind, decided({}, observed(space("SLEEPING"), health=None))),
        "deleting": served(
            kind,
            decide(deleting, DeletionObservation(marker=UID, marker_cluster="c1"), CONFIG, NOW).status,
            deletionTimestamp=rfc3339(NOW),
            finalizers=["agents.sandbox-operator.dev/finalizer"],
        ),
    }


def pool_objects() -> dict[str, dict[str, Any]]:
    kind = api.POOL_KIND
    ids = (f"00000000-0000-0000-0000-{n:012d}" for n in itertools.count())
    entry = {
        "spaceId": "agents/ags-p1",
        "state": "Creating",
        "requestedTime": rfc3339(NOW - timedelta(minutes=5)),
        "specHash": pools.build_hash(api.AgentSessionPoolSpec(replicas=1), CONFIG, POOL_KEY),
    }
    building = pools.Pool(
        "warm", "team-a", UID, 1, api.AgentSessionPoolSpec(replicas=1), AgentSessionPoolStatus()
    )
    recorded = replace(building, status=AgentSessionPoolStatus.model_validate({"spaces": [entry]}))
    running = SpaceView("agents/ags-p1", "RUNNING", "cpu-basic", "cpu-basic", True, "url", SANDBOX)
    seen = pools.PoolObservation(
        pool_key=POOL_KEY,
        spaces={
            "agents/ags-p1": pools.PooledObservation(
                space=running, health=HEALTHY, entry=recorded.status.spaces[0]
            )
        },
        live_sessions=frozenset(),
    )
    refused = replace(building, spec=api.AgentSessionPoolSpec(replicas=1, template="elsewhere/template"))

    def status(pool: pools.Pool, observation: pools.PoolObservation | None = None) -> AgentSessionPoolStatus:
        return pools.decide_pool(
            pool, observation or pools.PoolObservation(pool_key=POOL_KEY), CONFIG, NOW, ids
        ).status

    return {
        "created, no status written yet": served(kind, unobserved_status("agentsessionpools.yaml")),
        "filling": served(kind, status(building)),
        "ready": served(kind, status(recorded, seen)),
        "template not allowed": served(kind, status(refused)),
        "deleting": served(
            kind,
            status(replace(recorded, status=status(recorded, seen), deleting=True), seen),
            deletionTimestamp=rfc3339(NOW),
        ),
    }
