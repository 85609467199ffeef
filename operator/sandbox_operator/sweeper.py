"""The orphan sweeper: delete Spaces this cluster created whose session is gone.

Finalizers make leaks rare, but not impossible: a finalizer removed by hand, a session
restored from a backup without its status, a namespace force-deleted from etcd. A pass:

1. lists each owner's Spaces named like ours (`<owner>/<prefix>-<uid>`), one paginated call (owners:
   the default one, the sweep owners, the literal entries of the owner allow-list, and the owners
   sessions name that the allow-list matches: never one a session could not create a Space in);
2. then lists the AgentSessions: a session always exists before its Space (the intent is
   recorded first), so any session whose Space was in the first list is in the second;
3. reads the ownership marker only of Spaces older than the grace period and not claimed by
   name; then `plan` decides, and at most `max_deletes` are deleted per pass.

A Space is deleted only if its marker names this cluster and a session UID no existing
session has, no live session's status.spaceId names it, and the session's namespace is one
this operator watches. A warm pool's unclaimed Spaces carry the pool's UID in the marker, and the
pool records each of them: a live pool claims them as a live session does. Unmarked Spaces,
other clusters' Spaces and Spaces released by `deletionPolicy: Orphan` are never touched.
Several deployments sharded by namespace may share an owner and a cluster id: each sees only its
own namespaces' sessions, so the namespace in the marker is what keeps it from another shard's
Spaces (whose markers it reads once, see FOREIGN_VERDICTS).
`plan` is pure; `Sweeper` is the I/O around it.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sandbox_operator import api
from sandbox_operator.config.settings import OperatorConfig
from sandbox_operator.core.creation import owner_allowed
from sandbox_operator.hub.client import HubClient
from sandbox_operator.hub.errors import HubError
from sandbox_operator.hub.spaces import ListedSpace, Ownership
from sandbox_operator.k8s.client import KubeClient, resolve_cluster_id
from sandbox_operator.k8s.transport import ApiError
from sandbox_operator.observability import metrics

log = logging.getLogger(__name__)

_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


class Verdict(StrEnum):
    DELETE = "delete"
    WOULD_DELETE = "would-delete"
    DEFERRED = "deferred"  # an orphan over this pass's cap: next pass
    CLAIMED = "claimed"
    TOO_YOUNG = "too-young"
    UNMARKED = "unmarked"
    OTHER_CLUSTER = "other-cluster"
    OUT_OF_SCOPE = "out-of-scope"
    GONE = "gone"


ORPHAN_VERDICTS = frozenset({Verdict.DELETE, Verdict.WOULD_DELETE, Verdict.DEFERRED})
#: Verdicts about another deployment's Space (another cluster, or a session in a namespace this one
#: does not watch: another shard's). A marker never moves to this deployment's scope (its session
#: and namespace are written once, at the duplicate; a release only removes the cluster id), so the
#: marker behind such a verdict is kept and not read again on later passes.
FOREIGN_VERDICTS = frozenset({Verdict.OTHER_CLUSTER, Verdict.OUT_OF_SCOPE})


@dataclass(frozen=True)
class Policy:
    cluster_id: str
    prefix: str
    grace: float
    max_deletes: int
    dry_run: bool
    #: Namespaces whose sessions this operator sees; empty: all.
    namespaces: frozenset[str]
    #: Cluster ids this installation used before: never taken for this cluster's (see `_judge`).
    earlier_cluster_ids: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Decision:
    space_id: str
    verdict: Verdict
    message: str
    #: "namespace/name" and UID of the session the marker names, if read.
    session: str = ""
    session_uid: str = ""

    def line(self) -> str:
        return f"{self.verdict.value:<13} {self.space_id}  {self.message}"


def name_uid(space_id: str, prefix: str) -> str | None:
    """The session UID in a Space name we would have given, else None (not one of ours by name)."""
    match = re.fullmatch(rf"[^/]+/{re.escape(prefix)}-({_UUID})", space_id)
    return match.group(1) if match else None


def _age(space: ListedSpace, now: datetime) -> float | None:
    return (now - space.created_at).total_seconds() if space.created_at is not None else None


def _precheck(space: ListedSpace, claimed: frozenset[str], now: datetime, policy: Policy) -> Decision | None:
    """The decision the listing alone allows, or None if the marker must be read."""
    age = _age(space, now)
    if age is None or age < policy.grace:
        shown = "unknown" if age is None else f"{age:.0f}s"
        return Decision(space.space_id, Verdict.TOO_YOUNG, f"age {shown} < grace {policy.grace:.0f}s")
    uid = name_uid(space.space_id, policy.prefix)
    if uid in claimed:
        return Decision(space.space_id, Verdict.CLAIMED, "its session exists", session_uid=uid or "")
    if space.space_id in claimed:
        return Decision(space.space_id, Verdict.CLAIMED, "a live session's status.spaceId names it")
    return None


def ours_by_name(listed: list[ListedSpace], policy: Policy) -> list[ListedSpace]:
    """The listed Spaces named like ours; the Hub's search matches substrings, the name must match whole."""
    return [space for space in listed if name_uid(space.space_id, policy.prefix) is not None]


def markers_needed(
    listed: list[ListedSpace], claimed: frozenset[str], now: datetime, policy: Policy
) -> list[str]:
    """Spaces whose ownership marker the decision needs: old enough and not claimed by name."""
    return [space.space_id for space in listed if _precheck(space, claimed, now, policy) is None]


def plan(
    listed: list[ListedSpace],
    claimed: frozenset[str],
    markers: Mapping[str, Ownership | None],
    now: datetime,
    policy: Policy,
) -> list[Decision]:
    """One decision per listed Space, oldest first; `markers` holds those `markers_needed` named
    (None: the Space was gone when read)."""
    decisions = []
    deletes = 0
    for space in sorted(listed, key=lambda s: (s.created_at is None, s.created_at or now, s.space_id)):
        decision = _precheck(space, claimed, now, policy) or _judge(space, claimed, markers, now, policy)
        if decision.verdict is Verdict.DELETE:
            if policy.dry_run:
                decision = _with(decision, Verdict.WOULD_DELETE, f"{decision.message}; dry run")
            elif deletes >= policy.max_deletes:
                decision = _with(
                    decision, Verdict.DEFERRED, f"{decision.message}; over the cap of {policy.max_deletes}"
                )
            else:
                deletes += 1
        decisions.append(decision)
    return decisions


def _with(decision: Decision, verdict: Verdict, message: str) -> Decision:
    return Decision(decision.space_id, verdict, message, decision.session, decision.session_uid)


def _judge(
    space: ListedSpace,
    claimed: frozenset[str],
    markers: Mapping[str, Ownership | None],
    now: datetime,
    policy: Policy,
) -> Decision:
    space_id = space.space_id
    marker = markers.get(space_id)
    if marker is None:
        return Decision(space_id, Verdict.GONE, "deleted before its marker was read")
    if not marker.session_uid:
        return Decision(space_id, Verdict.UNMARKED, "no ownership marker: not created by this operator")
    session, uid = marker.session, marker.session_uid
    if marker.cluster_id != policy.cluster_id:
        # A previous cluster id of this installation is not this cluster's either: other clusters
        # sharing the Hub owner may have written it too (0.1.0's default, `default`, was everyone's).
        # A live session re-marks its own Space; an orphan marked so is left to a person.
        owner = (
            f"cluster {marker.cluster_id}"
            if marker.cluster_id
            else "nobody (released: deletionPolicy Orphan)"
        )
        if marker.cluster_id in policy.earlier_cluster_ids:
            owner += (
                ", an id this installation used before and other clusters may share: never swept, "
                "delete it by hand if it is yours (UPGRADING.md)"
            )
        return Decision(space_id, Verdict.OTHER_CLUSTER, f"marked for {owner}", session, uid)
    if uid in claimed:
        return Decision(space_id, Verdict.CLAIMED, f"claimed by session {session}", session, uid)
    namespace = session.partition("/")[0]
    if policy.namespaces and namespace not in policy.namespaces:
        return Decision(
            space_id,
            Verdict.OUT_OF_SCOPE,
            f"its session {session} is in a namespace not watched",
            session,
            uid,
        )
    return Decision(
        space_id,
        Verdict.DELETE,
        f"orphan of deleted session {session} (uid {uid}), created {_age(space, now):.0f}s ago",
        session,
        uid,
    )


def claims(sessions: list[dict[str, Any]]) -> frozenset[str]:
    """What live sessions claim: their UIDs, and the Space ids their status names (which contain a
    "/", so they never equal a UID). A Space a live session names is never an orphan, whatever its
    marker says (e.g. another cluster configured with the same cluster id)."""
    uids = {session["metadata"]["uid"] for session in sessions}
    space_ids = {(session.get("status") or {}).get("spaceId") for session in sessions}
    return frozenset(uids | {space_id for space_id in space_ids if space_id})


def pool_claims(pools: list[dict[str, Any]]) -> frozenset[str]:
    """What warm pools claim: their UIDs (an unclaimed pooled Space's marker names its pool) and every
    Space their status records (recorded before it is created)."""
    uids = {pool["metadata"]["uid"] for pool in pools}
    spaces = {
        entry.get("spaceId") for pool in pools for entry in (pool.get("status") or {}).get("spaces") or []
    }
    return frozenset(uids | {space_id for space_id in spaces if space_id})


def literal(pattern: str) -> bool:
    """An allow-list entry that names one owner (no glob characters): a place to look for orphans."""
    return not any(char in pattern for char in "*?[")


def owners_to_sweep(sessions: list[dict[str, Any]], config: OperatorConfig) -> list[str]:
    """The Hub namespaces a pass lists: the default owner, the sweep owners, the literal entries of the
    owner allow-list, and the owners sessions name that the allow-list matches. A session naming any
    other owner never got a Space there (creation refuses it), so listing it would only let a tenant
    make every pass longer."""
    owners = {config.default_owner, *config.sweep_owners}
    owners |= {owner for owner in config.allowed_owners if literal(owner)}
    named = {s["spec"]["owner"] for s in sessions if s.get("spec", {}).get("owner")}
    owners |= {owner for owner in named if owner_allowed(owner, config)}
    return sorted(owner for owner in owners if owner)


class Sweeper:
    """One pass on demand (`sandbox-operator sweep`) or every `sweep_interval` inside the operator."""

    def __init__(
        self,
        hub: HubClient,
        kube: KubeClient,
        config: OperatorConfig,
        namespaces: list[str],
    ) -> None:
        self._hub = hub
        self._kube = kube
        self._config = config
        self._namespaces = namespaces
        #: Markers of Spaces found foreign on an earlier pass, by Space id (only those still listed).
        self._foreign: dict[str, Ownership] = {}

    def policy(self, config: OperatorConfig) -> Policy:
        return Policy(
            cluster_id=config.cluster_id,
            prefix=config.space_prefix,
            grace=config.sweep_grace,
            max_deletes=config.sweep_max_deletes,
            dry_run=config.sweep_dry_run,
            namespaces=frozenset(self._namespaces),
            earlier_cluster_ids=config.earlier_cluster_ids(),
        )

    async def run_once(self, now: Callable[[], datetime]) -> list[Decision]:
        """Decide about every Space named like ours and act; Hub and API errors propagate."""
        config = self._config
        policy = self.policy(config)
        sessions = await self._kube.list_sessions(self._namespaces)
        listed: list[ListedSpace] = []
        for owner in owners_to_sweep(sessions, config):
            listed += ours_by_name(await self._hub.list_spaces(owner, f"{policy.prefix}-"), policy)
        # Listed after the Spaces: every session (and pool) whose Space was listed is in here.
        claimed = claims(await self._kube.list_sessions(self._namespaces))
        claimed |= pool_claims(await self._kube.list_sessions(self._namespaces, api.POOL_PLURAL))
        moment = now()
        markers = {
            space_id: self._foreign.get(space_id) or await self._hub.ownership(space_id)
            for space_id in markers_needed(listed, claimed, moment, policy)
        }
        decisions = plan(listed, claimed, markers, moment, policy)
        self._foreign = {
            d.space_id: marker
            for d in decisions
            if d.verdict in FOREIGN_VERDICTS and (marker := markers.get(d.space_id)) is not None
        }
        metrics.ORPHANS_FOUND.set(sum(d.verdict in ORPHAN_VERDICTS for d in decisions))
        for decision in decisions:
            await self._act(decision)
        return decisions

    async def _act(self, decision: Decision) -> None:
        metrics.SWEEP_DECISIONS.labels(decision.verdict.value).inc()
        if decision.verdict not in ORPHAN_VERDICTS:
            log.debug("sweeper: %s", decision.line())
            return
        log.info("sweeper: %s", decision.line())
        if decision.verdict is Verdict.DELETE:
            await self._hub.delete(decision.space_id)
            metrics.ORPHANS_SWEPT.inc()
            reason, type_, said = "OrphanSpaceDeleted", "Normal", "deleted orphaned Space"
        else:
            reason, type_, said = "OrphanSpaceFound", "Warning", f"found orphaned Space ({decision.verdict})"
        await self._event(decision, type_, reason, f"{said} {decision.space_id}: {decision.message}")

    async def _event(self, decision: Decision, type_: str, reason: str, message: str) -> None:
        """On the (deleted) session, where its users look; skipped if its namespace is gone too."""
        namespace, _, name = decision.session.partition("/")
        if not namespace or not name:
            return
        involved = {
            "apiVersion": api.API_VERSION,
            "kind": api.KIND,
            "namespace": namespace,
            "name": name,
            "uid": decision.session_uid,
        }
        try:
            await self._kube.post_event(involved=involved, type_=type_, reason=reason, message=message)
        except ApiError as error:
            log.debug("sweeper: no Event in %s: %s %s", namespace, error.status, error.reason)

    async def loop(self, now: Callable[[], datetime]) -> None:
        """Run forever: a pass every `sweep_interval` seconds; a failed pass is logged and tried again."""
        while True:
            await asyncio.sleep(self._config.sweep_interval)
            try:
                await self.run_once(now)
            except (HubError, ApiError) as error:
                metrics.SWEEP_PASSES.labels("error").inc()
                log.warning("sweeper: pass failed, retrying in %.0fs: %s", self._config.sweep_interval, error)
            else:
                metrics.SWEEP_PASSES.labels("ok").inc()


async def sweep_once(config: OperatorConfig, namespaces: list[str]) -> list[Decision]:
    """One pass with clients of its own, for `sandbox-operator sweep`."""
    config = config.model_copy(update={"cluster_id": await resolve_cluster_id(config.cluster_id)})
    hub = HubClient(config)
    kube = KubeClient()
    try:
        if not config.default_owner:
            config = config.model_copy(update={"default_owner": await hub.whoami()})
        return await Sweeper(hub, kube, config, namespaces).run_once(lambda: datetime.now(UTC))
    finally:
        await hub.close()
        await kube.close()
