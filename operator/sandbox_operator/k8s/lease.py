"""Leader election with a coordination.k8s.io Lease, so two operators started by mistake never both act.

client-go's algorithm: the holder renews `renewTime` every `retry_period`; another candidate
takes the Lease only after seeing no renewal for `leaseDurationSeconds`, measured on its own
clock from when it saw the record change (clocks of different machines are never compared).
The holder stops acting once it could not renew for `renew_deadline` (< the lease duration),
so it stops before anyone else may start. Writes are guarded by resourceVersion.

A restarted container keeps its pod's identity and gets the Lease back at once; a second
process, or a new pod, waits until the holder's Lease expires.

Deployments sharding a cluster by namespace each have a Lease of their own, all in one namespace
(the releases' install namespace). Every write of ours publishes the namespaces we serve on our
Lease; after it (so that two starting at once cannot miss each other), and before acting and on
every renewal, the leader lists the other shards' Leases in that namespace, and no other, and
yields to a live one whose claim overlaps and that wins (core/shards.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sandbox_operator.config.settings import DEFAULT_OPERATOR_NAMESPACE
from sandbox_operator.core.shards import (
    SERVED_NAMESPACES_ANNOTATION,
    SHARD_LEASE_LABEL,
    Shard,
    Verdict,
    claim_text,
    conflicts,
    last_written,
    may_act,
    parse_claim,
    unrenewed_past_duration,
)
from sandbox_operator.k8s.transport import ApiError, KubeApi
from sandbox_operator.observability import metrics
from sandbox_operator.observability.health import Standby

log = logging.getLogger(__name__)

_SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def default_identity() -> str:
    """Pod name (the hostname in a pod) plus pid: stable across container restarts, where the pid is
    the same, yet distinct for two processes on one machine."""
    return f"{socket.gethostname()}-{os.getpid()}"


def installed_namespace() -> str:
    """The pod's namespace in a cluster, else the install namespace of docs/operations.md."""
    try:
        return _SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or DEFAULT_OPERATOR_NAMESPACE
    except OSError:
        return DEFAULT_OPERATOR_NAMESPACE


@dataclass(frozen=True)
class LeaseSettings:
    name: str
    namespace: str
    identity: str
    duration: float = 30.0
    renew_deadline: float = 25.0
    retry_period: float = 2.0
    #: The namespaces this process watches, published on the Lease; empty: the whole cluster.
    serves: tuple[str, ...] = ()

    @classmethod
    def with_duration(cls, duration: float, **fields: Any) -> LeaseSettings:
        """Settings for a lease duration other than 30 s, its deadlines scaled alike (25 s, 2 s)."""
        return cls(
            duration=duration, renew_deadline=duration * 5 / 6, retry_period=min(2.0, duration / 10), **fields
        )

    def check_hub_timeout(self, hub_timeout: float) -> None:
        """Refuse a Hub timeout that cannot fit: a request sent just before a renewal must be able to
        finish before the holder has to stop acting (each request is cut to the time left anyway)."""
        room = self.renew_deadline - self.retry_period
        if hub_timeout > room:
            raise ValueError(
                f"the Hub timeout ({hub_timeout:g}s) does not fit in the leader Lease's renew deadline "
                f"({self.renew_deadline:g}s) minus its retry period ({self.retry_period:g}s): a Hub request "
                f"could outlive the right to act; use a Hub timeout of at most {room:g}s"
            )


class LeaseNamespaceMissing(Exception):
    """The Lease's namespace does not exist: waiting would never end."""


def _micro_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseLost(Exception):
    """Another process holds the Lease now, or it could not be renewed in time."""


class ShardOverlap(LeaseLost):
    """Another shard's live Lease claims some of our namespaces and wins: we must not act."""


@dataclass(frozen=True)
class Attempt:
    """The outcome of one acquire-or-renew: held by us, held by `holder`, or failed with `problem`."""

    ours: bool
    holder: str | None = None
    problem: str | None = None


class LeaderElector:
    def __init__(self, settings: LeaseSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self._api = KubeApi(connections=1, timeout=settings.renew_deadline)
        #: The last Lease record seen (holder, renewTime, duration) and when it was first seen.
        self._observed: tuple[str, str, int] | None = None
        self._observed_at = 0.0
        #: Monotonic time until which this process may act: the start of its last successful
        #: renewal plus the renew deadline. 0 while it does not hold the Lease.
        self._valid_until = 0.0
        #: Other shards' Lease records (holder, renewTime, duration) and when each was first seen,
        #: to judge their liveness on our clock; when we first saw each shard we win against.
        self._shards_seen: dict[str, tuple[tuple[str, str, int], float]] = {}
        self._first_conflict: dict[str, float] = {}
        #: Why this process does not act yet, and whether it waits as it should (served by the liveness
        #: endpoint while it waits, and by the readiness endpoint); None once it acts.
        self.standby: Standby | None = Standby(f"the leader Lease {self.where} not read yet", sound=False)

    @property
    def where(self) -> str:
        return f"{self.settings.namespace}/{self.settings.name}"

    def holds(self) -> bool:
        """Whether this process may act now."""
        return self.time_left() > 0

    def time_left(self) -> float:
        """Seconds this process may still act; checked before every Hub request and bounds its timeout."""
        return self._valid_until - self._clock()

    def _spec(self, now: datetime, acquire_time: str, transitions: int) -> dict[str, Any]:
        return {
            "holderIdentity": self.settings.identity,
            "leaseDurationSeconds": round(self.settings.duration),
            "acquireTime": acquire_time,
            "renewTime": _micro_time(now),
            "leaseTransitions": transitions,
        }

    def _metadata(self, **fields: Any) -> dict[str, Any]:
        """Our Lease's metadata: found by the shard label, with the namespaces we serve."""
        return {
            "name": self.settings.name,
            "namespace": self.settings.namespace,
            "labels": {SHARD_LEASE_LABEL: "true"},
            "annotations": {SERVED_NAMESPACES_ANNOTATION: claim_text(self.settings.serves)},
            **fields,
        }

    async def try_acquire_or_renew(self) -> Attempt:
        """One attempt to take or renew the Lease."""
        started = self._clock()
        now = datetime.now(UTC)
        name, namespace = self.settings.name, self.settings.namespace
        try:
            lease = await self._api.read_namespaced_lease(name, namespace)
        except ApiError as error:
            if error.status != 404:
                return Attempt(False, problem=f"cannot read the Lease: {error.status} {error.reason}")
            body: Any = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": self._metadata(),
                "spec": self._spec(now, _micro_time(now), 0),
            }
            try:
                await self._api.create_namespaced_lease(namespace, body)
            except ApiError as create_error:
                if create_error.status == 404:
                    raise LeaseNamespaceMissing(
                        f"the namespace {namespace!r} of the leader Lease {self.where} does not exist: "
                        f"create it (kubectl create namespace {namespace}; the chart installs into it) "
                        "or pass --lease-namespace / --operator-namespace"
                    ) from create_error
                reason = f"{create_error.status} {create_error.reason}"
                return Attempt(False, problem=f"cannot create the Lease: {reason}")
            self._took(started)
            return Attempt(True)
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        duration = int(spec.get("leaseDurationSeconds") or self.settings.duration)
        record = (holder, str(spec.get("renewTime")), duration)
        if record != self._observed:
            self._observed, self._observed_at = record, started
        mine = holder == self.settings.identity
        if holder and not mine and started < self._observed_at + duration:
            return Attempt(False, holder=holder)
        acquire_time = str(spec["acquireTime"]) if mine and spec.get("acquireTime") else _micro_time(now)
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if mine else 1)
        replacement: Any = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": self._metadata(resourceVersion=lease["metadata"]["resourceVersion"]),
            "spec": self._spec(now, acquire_time, transitions),
        }
        try:
            await self._api.replace_namespaced_lease(name, namespace, replacement)
        except ApiError as error:
            return Attempt(False, problem=f"cannot update the Lease: {error.status} {error.reason}")
        self._took(started)
        return Attempt(True)

    def _took(self, started: float) -> None:
        self._valid_until = started + self.settings.renew_deadline
        self._observed = None
        metrics.LEADER.set(1)

    async def check_shards(self, acting: bool) -> Verdict | str:
        """Whether we may act beside the other shards, from their Leases listed now (after our
        claim was written); a problem (str) when they cannot be listed."""
        now = self._clock()
        try:
            # In our own Lease's namespace only: anyone who may write Leases elsewhere (a tenant with
            # the `edit` role in theirs) could otherwise label one that wins and halt every release.
            listing = await self._api.list_namespaced_lease(
                self.settings.namespace, f"{SHARD_LEASE_LABEL}=true"
            )
        except ApiError as error:
            return f"cannot list the other shards' Leases: {error.status} {error.reason}"
        read = [(_shard(lease), lease.get("spec") or {}) for lease in listing.get("items") or []]
        me = next((shard for shard, _ in read if shard.key == self.where), None)
        if me is None:
            return f"our Lease {self.where} is not among the shards' Leases"
        live: list[Shard] = []
        seen: dict[str, tuple[tuple[str, str, int], float]] = {}
        for shard, spec in read:
            if shard.key == me.key:
                continue
            record = (shard.holder, str(spec.get("renewTime")), int(spec.get("leaseDurationSeconds") or 0))
            previous = self._shards_seen.get(shard.key)
            seen[shard.key] = previous if previous is not None and previous[0] == record else (record, now)
            if unrenewed_past_duration(shard.written, me.written, record[2]):
                continue  # dead by the API server's clock: no need to watch it for a duration
            if shard.holder and now < seen[shard.key][1] + record[2]:
                live.append(shard)
        self._shards_seen = seen
        found = conflicts(me, live)
        self._first_conflict = {
            c.other.key: self._first_conflict.get(c.other.key, now) for c in found if c.we_win
        }
        verdict = may_act(found, self._first_conflict, now, acting, hold_off=self.settings.duration)
        metrics.SHARD_OVERLAP.set(1 if found else 0)
        metrics.SHARD_YIELDING.clear()
        for conflict in verdict.yields_to:
            metrics.SHARD_YIELDING.labels(lease=conflict.other.key).set(1)
        return verdict

    async def acquire(self) -> None:
        """Wait until this process holds the Lease and no other shard that wins claims any of its
        namespaces; says once (and on every change) why it waits."""
        last: str | None = None
        while True:
            attempt = await self.try_acquire_or_renew()
            # Sound waiting: someone else acts (a holder, or a shard we yield to or wait for).
            sound = attempt.holder is not None
            if attempt.ours:
                verdict = await self.check_shards(acting=False)
                if isinstance(verdict, Verdict) and verdict.act:
                    log.info("acquired the leader Lease %s as %s", self.where, self.settings.identity)
                    self.standby = None
                    return
                self._lose()  # ours, but not acting
                attempt = Attempt(False, problem=_why_not(verdict))
                sound = isinstance(verdict, Verdict)
                if isinstance(verdict, Verdict) and verdict.yields_to:
                    said = str(attempt.problem)
                    if said != last:
                        log.error("%s; not acting while it is live", said)
                        last = said
                    self.standby = Standby(said, sound)
                    await asyncio.sleep(self.settings.retry_period)
                    continue
            said = f"held by {attempt.holder}" if attempt.holder else str(attempt.problem)
            self.standby = Standby(f"waiting for the leader Lease {self.where} ({said})", sound)
            if said != last:
                log.info(
                    "waiting for the leader Lease %s (%s); not acting until it is ours", self.where, said
                )
                last = said
            await asyncio.sleep(self.settings.retry_period)

    async def keep(self) -> None:
        """Renew until it fails for longer than the renew deadline, someone else holds the Lease,
        or another shard that wins claims some of our namespaces; then raise `LeaseLost`. A renewal
        whose check of the other shards fails does not extend the time we may act."""
        while True:
            await asyncio.sleep(self.settings.retry_period)
            valid_until = self._valid_until
            attempt = await self.try_acquire_or_renew()
            if attempt.ours:
                verdict = await self.check_shards(acting=True)
                if isinstance(verdict, Verdict):
                    if verdict.act:
                        continue
                    self._lose()
                    raise ShardOverlap(_why_not(verdict))
                self._valid_until = valid_until
                attempt = Attempt(False, problem=verdict)
            if attempt.holder is not None:
                self._lose()
                raise LeaseLost(f"the leader Lease {self.where} is now held by {attempt.holder}")
            if not self.holds():
                self._lose()
                raise LeaseLost(
                    f"could not renew the leader Lease {self.where} for {self.settings.renew_deadline:.0f}s: "
                    f"{attempt.problem}"
                )
            log.warning("renewing the leader Lease %s failed, retrying: %s", self.where, attempt.problem)

    def _lose(self) -> None:
        self._valid_until = 0.0
        metrics.LEADER.set(0)

    async def release(self) -> None:
        """On a clean stop, hand the Lease over at once instead of making the next holder wait, and
        withdraw our claim: also when we only held it as a standby shard, whose claim other shards
        would otherwise count as live for a whole lease duration."""
        self._lose()
        name, namespace = self.settings.name, self.settings.namespace
        try:
            lease = await self._api.read_namespaced_lease(name, namespace)
            if (lease.get("spec") or {}).get("holderIdentity") != self.settings.identity:
                return
            body = {
                "metadata": {"resourceVersion": lease["metadata"]["resourceVersion"]},
                "spec": {"holderIdentity": "", "leaseDurationSeconds": 1},
            }
            await self._api.patch_namespaced_lease(name, namespace, body)
            log.info("released the leader Lease %s", self.where)
        except ApiError as error:
            if error.status == 404:  # never created: stopped before our first write
                return
            log.warning(
                "could not release the leader Lease %s: %s %s", self.where, error.status, error.reason
            )

    async def close(self) -> None:
        await self._api.close()


def _shard(lease: dict[str, Any]) -> Shard:
    """A shard's Lease as listed (no claim: it serves nothing we could overlap)."""
    meta = lease.get("metadata") or {}
    claim = (meta.get("annotations") or {}).get(SERVED_NAMESPACES_ANNOTATION)
    return Shard(
        namespace=meta.get("namespace", ""),
        name=meta.get("name", ""),
        holder=(lease.get("spec") or {}).get("holderIdentity") or "",
        created=str(meta.get("creationTimestamp", "")),
        serves=parse_claim(claim) if claim is not None else frozenset(),
        written=last_written(meta),
    )


def _why_not(verdict: Verdict | str) -> str:
    """Why a leader that holds its own Lease may not act: a shard it yields to, one it waits for."""
    if isinstance(verdict, str):
        return verdict
    if verdict.yields_to:
        return "overlapping shards: " + "; ".join(c.describe() for c in verdict.yields_to) + " and wins"
    return "waiting for overlapping shards that lose to stop acting: " + "; ".join(
        c.describe() for c in verdict.waits_for
    )
