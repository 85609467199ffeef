"""Which of several operator deployments (shards) may act, when their namespaces overlap.

Each leader publishes on its own Lease the namespaces it serves. Two live Leases whose claims
overlap would both act on the same sessions; exactly one of them may: the Lease created first
(its `creationTimestamp`, set by the API server's one clock), then the lower namespace/name.
Both sides compute the same winner from the same Lease objects. Pure functions; the I/O (writing
the claim, listing the Leases, judging their liveness) is in k8s/lease.py.

A Lease is judged live on our own clock, as client-go judges its own Lease: for its duration
from when we first saw its record. A Lease that a killed shard left behind would so hold back every
overlapping shard that starts for one duration, again at every start. The API server stamps each
write with its own clock (`managedFields[].time`, to the second); a Lease whose last write is more
than its duration (and a second) older than the write of ours just before the listing went
unrenewed that long on one clock, and is dead at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from sandbox_operator.api import parse_rfc3339

#: Annotation on a shard's Lease: the namespaces its leader serves, sorted and comma-separated,
#: or ALL_NAMESPACES for a deployment that watches the whole cluster.
SERVED_NAMESPACES_ANNOTATION = "sandbox-operator.dev/served-namespaces"
#: Label on every shard's Lease, so leaders find each other's with one label selector.
SHARD_LEASE_LABEL = "sandbox-operator.dev/shard-lease"
ALL_NAMESPACES = "*"


def claim_text(namespaces: Iterable[str]) -> str:
    """The annotation's value for a deployment watching `namespaces` (none: the whole cluster)."""
    names = sorted(set(namespaces))
    return ",".join(names) if names else ALL_NAMESPACES


def parse_claim(text: str) -> frozenset[str] | None:
    """The namespaces an annotation claims; None for the whole cluster."""
    if text.strip() == ALL_NAMESPACES:
        return None
    return frozenset(name.strip() for name in text.split(",") if name.strip())


def overlap(a: frozenset[str] | None, b: frozenset[str] | None) -> tuple[str, ...]:
    """The namespaces both claims serve, sorted; (ALL_NAMESPACES,) when both serve the whole cluster."""
    if a is None and b is None:
        return (ALL_NAMESPACES,)
    if a is None or b is None:
        return tuple(sorted(a or b or ()))
    return tuple(sorted(a & b))


@dataclass(frozen=True)
class Shard:
    """One shard's Lease as read: where it is, who holds it, when it was created, what it claims."""

    namespace: str
    name: str
    holder: str
    created: str  # RFC 3339 from the API server, e.g. 2026-11-29T04:40:00Z: sorts as it reads
    serves: frozenset[str] | None
    #: When the API server last wrote it (its clock, to the second); "" if unknown.
    written: str = ""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def last_written(metadata: Mapping[str, object]) -> str:
    """When the API server last wrote the object (its clock, RFC 3339 to the second), from the
    times it stamps on the managedFields entries; "" if none."""
    entries = metadata.get("managedFields")
    if not isinstance(entries, list):
        return ""
    times = [str(entry["time"]) for entry in entries if isinstance(entry, dict) and entry.get("time")]
    return max(times, key=parse_rfc3339, default="")


def unrenewed_past_duration(other_written: str, ours_written: str, duration: float) -> bool:
    """Whether the other Lease's last write is more than its duration older than our write just
    before (both on the API server's clock; one second more for its granularity)."""
    if not other_written or not ours_written:
        return False
    gap = (parse_rfc3339(ours_written) - parse_rfc3339(other_written)).total_seconds()
    return gap > duration + 1


def ranks_first(a: Shard, b: Shard) -> bool:
    """Whether `a` wins over `b`: created first, then the lower namespace/name. Total and the same
    for both sides."""
    return (a.created, a.key) < (b.created, b.key)


@dataclass(frozen=True)
class Conflict:
    other: Shard
    namespaces: tuple[str, ...]
    we_win: bool

    def describe(self) -> str:
        return (
            f"the Lease {self.other.key} (held by {self.other.holder}) also serves "
            f"{', '.join(self.namespaces)}"
        )


def conflicts(me: Shard, live_others: Iterable[Shard]) -> list[Conflict]:
    """Every live Lease of another shard whose claim overlaps ours, and who wins each."""
    found = []
    for other in live_others:
        if other.key == me.key:
            continue
        shared = overlap(me.serves, other.serves)
        if shared:
            found.append(Conflict(other, shared, ranks_first(me, other)))
    return found


@dataclass(frozen=True)
class Verdict:
    """May this leader act now? If not: the shards it yields to, or those it waits for to stop."""

    act: bool
    yields_to: list[Conflict] = field(default_factory=list)
    waits_for: list[Conflict] = field(default_factory=list)


def may_act(
    found: list[Conflict], first_seen: Mapping[str, float], now: float, acting: bool, hold_off: float
) -> Verdict:
    """A leader that loses any conflict never acts. One that wins them all acts at once if it was
    already acting (a shard that appears later checked before acting, so it never did); one not
    yet acting waits `hold_off` seconds from when it first saw each loser, as long as a loser that
    was acting may take to notice it (its next renewal, at most its renew deadline)."""
    lost = [c for c in found if not c.we_win]
    if lost:
        return Verdict(False, yields_to=lost)
    if acting:
        return Verdict(True)
    waiting = [c for c in found if now < first_seen.get(c.other.key, now) + hold_off]
    return Verdict(not waiting, waits_for=waiting)
