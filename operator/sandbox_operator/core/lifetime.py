"""Lifetimes, pause and idle: when a session is deleted (its lifetime, the operator's maximum age, or
the retention of a paused session), whether its Space is paused (`spec.paused`), and when an unused
one is paused for idleness. Pure decisions on (session, status, observation, now); what the
operator must remember across restarts (since when paused, time paused so far, idle since) lives in
status.

Deadlines:
- the lifetime: `spec.lifetime` (ttlSeconds, or expiresAt read as the time from creation to it), from
  `metadata.creationTimestamp`; else the operator's default, from status.lifetimeStartTime; counted in
  unpaused time unless the operator counts paused time too;
- the maximum age (`lifetime_max`), in wall time from status.lifetimeStartTime, paused or not: no
  session outlives it;
- while paused (by the user or for idleness), the retention, from the start of the pause.

status.lifetimeStartTime is the creation, except for a session an operator version without lifetimes
(0.1.0) already managed: defaults it never had count from the upgrade, so a session older than the
default lifetime is not deleted as the new operator starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sandbox_operator.api import (
    AgentSessionSpec,
    AgentSessionStatus,
    PausedBy,
    Phase,
    parse_rfc3339,
    shifted,
)
from sandbox_operator.config.settings import OperatorConfig
from sandbox_operator.core.conditions import EXPIRING, READY, Reason, condition_of, rfc3339, set_condition
from sandbox_operator.core.model import (
    SLEEPING,
    STOPPED_STAGES,
    Action,
    DeleteSession,
    Observation,
    PauseSpace,
    PublishPause,
    Session,
    SpaceView,
)


def resume_command(session: Session) -> str:
    """What a user runs to resume a paused session: said in status and in the connection Secret."""
    return (
        f"kubectl patch agentsession {session.name} -n {session.namespace} --type=merge "
        """-p '{"spec":{"paused":false}}'"""
    )


def lifetime_seconds(spec: AgentSessionSpec, created: datetime, config: OperatorConfig) -> float | None:
    """The session's lifetime, in seconds from creation; None: it has none."""
    lifetime = spec.lifetime
    if lifetime is None:
        return float(config.lifetime_default) or None
    if lifetime.ttl_seconds is not None:
        return float(lifetime.ttl_seconds)
    assert lifetime.expires_at is not None, "the schema demands one of the two"
    return (lifetime.expires_at - created).total_seconds()


def lifetime_problem(spec: AgentSessionSpec, created: datetime | None) -> str | None:
    """Why `spec.lifetime` cannot be meant: an expiresAt before the session was created (a typo; the
    schema cannot compare it with now). A later time that has passed means "expire now"."""
    expires_at = spec.lifetime.expires_at if spec.lifetime else None
    if expires_at is None or created is None or expires_at >= created:
        return None
    return (
        f"spec.lifetime.expiresAt: {rfc3339(expires_at)} is before the session was created "
        f"({rfc3339(created)}), a lifetime that ended before it began; set a later time, or ttlSeconds"
    )


def pause_after(spec: AgentSessionSpec, config: OperatorConfig) -> int:
    """Seconds unused before an idle session is paused; 0: never."""
    own = spec.idle.pause_after_seconds if spec.idle else None
    return config.idle_pause_after if own is None else own


def retention(spec: AgentSessionSpec, config: OperatorConfig) -> int:
    """Seconds a paused session is kept before it is deleted; 0: forever (up to the maximum age)."""
    own = spec.idle.retention_seconds if spec.idle else None
    return config.idle_retention if own is None else own


@dataclass(frozen=True)
class Deadline:
    """When the session is deleted if nothing changes, and why."""

    at: datetime
    ending: Reason
    expired: Reason
    why: str
    hint: str
    #: Why this comes before the end spec.lifetime asks for (the operator's maximum age), if it does.
    capped: str | None = None


def predates_lifetimes(status: AgentSessionStatus) -> bool:
    """An operator reconciled the session (observedGeneration 1 or more; the CRD defaults it to 0
    until then) without giving it a lifetime (no expiresAt), and no warm claim is recorded: the status
    of a version without lifetimes (0.1.0), or of an operator that ran with neither a default lifetime
    nor a maximum age."""
    return bool(status.observed_generation) and status.expires_at is None and status.launch_type is None


def record_lifetime_start(session: Session, status: AgentSessionStatus, now: datetime) -> datetime | None:
    """Where the default lifetime and the maximum age count from, recorded in `status` (the one being
    decided) the first time: the creation, or now for a session whose status as read says it predates
    lifetimes (defaults an upgrade brings count from the upgrade, never back to the session's creation)."""
    if status.lifetime_start_time is not None:
        return parse_rfc3339(status.lifetime_start_time)
    if session.created is None:
        return None
    start = now if predates_lifetimes(session.status) else session.created
    status.lifetime_start_time = rfc3339(start)
    return parse_rfc3339(status.lifetime_start_time)


def _counted(origin: datetime, created: datetime) -> str:
    if origin == created:
        return "from creation"
    return f"from {rfc3339(origin)}, when this operator version first managed the older session"


def deadline(session: Session, status: AgentSessionStatus, config: OperatorConfig) -> Deadline | None:
    """The earliest of the session's deadlines. While paused, a lifetime that does not count paused
    time is not running out, so only the maximum age and the retention apply. Of a spec that cannot be
    read, only the maximum age: its own lifetime and retention are unknown."""
    created = session.created
    if created is None:
        return None
    start = parse_rfc3339(status.lifetime_start_time) if status.lifetime_start_time else created
    found = []
    readable = session.spec_problem is None
    paused_since = parse_rfc3339(status.paused_since) if status.paused_since else None
    lifetime = lifetime_seconds(session.spec, created, config) if readable else None
    origin = created if session.spec.lifetime is not None else start
    counted = _counted(origin, created)
    longer = "set a longer spec.lifetime to keep it"
    if lifetime is not None and config.lifetime_counts_paused:
        why = f"the end of its lifetime ({lifetime:.0f}s {counted}, paused time included)"
        found.append(Deadline(shifted(origin, lifetime), *_LIFETIME, why, longer))
    elif lifetime is not None and paused_since is None:
        paused = status.paused_seconds or 0.0
        extended = f", extended by {paused:.0f}s paused" if paused else ""
        own_end = session.spec.lifetime.expires_at if session.spec.lifetime else None
        length = f"spec.lifetime.expiresAt {rfc3339(own_end)}" if own_end else None
        why = f"the end of its lifetime ({length or f'{lifetime:.0f}s of unpaused time {counted}'}{extended})"
        found.append(Deadline(shifted(origin, lifetime + paused), *_LIFETIME, why, longer))
    if config.lifetime_max:
        why = (
            f"the operator's maximum age of a session ({config.lifetime_max}s {_counted(start, created)}, "
            "paused or not)"
        )
        hint = "a new session must replace it"
        oldest = shifted(start, config.lifetime_max)
        asked = found[0] if found and session.spec.lifetime is not None else None
        capped = (
            f"spec.lifetime {asked.why.removeprefix('the end of its lifetime ')} ends after the operator's "
            f"maximum age of a session ({config.lifetime_max}s, --lifetime-max), so the session is deleted "
            f"at {rfc3339(oldest)}"
            if asked is not None and asked.at > oldest
            else None
        )
        found.append(Deadline(oldest, *_LIFETIME, why, hint, capped))
    keep = retention(session.spec, config) if readable else 0
    if paused_since is not None and keep:
        why = f"the end of its retention ({keep}s paused, since {status.paused_since})"
        hint = f"resume it to keep it: {resume_command(session)}"
        found.append(Deadline(shifted(paused_since, keep), *_RETENTION, why, hint))
    return min(found, key=lambda due: due.at) if found else None


_LIFETIME = (Reason.LIFETIME_ENDING, Reason.LIFETIME_EXPIRED)
_RETENTION = (Reason.RETENTION_ENDING, Reason.RETENTION_EXPIRED)


@dataclass(frozen=True)
class Clock:
    """What the session's deadlines ask for now: its deletion, or when to look again."""

    delete: DeleteSession | None
    requeue: float | None


def _wake(seconds: float, config: OperatorConfig) -> float | None:
    """Look again in `seconds`, unless the next resync comes first (a converged session's loop)."""
    if config.resync_interval > 0 and seconds > config.resync_interval:
        return None
    return max(0.0, seconds)


def account_pause(session: Session, status: AgentSessionStatus, now: datetime) -> None:
    """Start or end the record of a pause as spec.paused says: time paused is summed up when it ends,
    so it survives restarts and later pauses."""
    if session.spec.paused and status.paused_since is None:
        status.paused_since = rfc3339(now, precise=True)
        status.paused_by = PausedBy.USER
        status.idle_since = None
    elif not session.spec.paused and status.paused_since is not None:
        paused = (now - parse_rfc3339(status.paused_since)).total_seconds()
        status.paused_seconds = round((status.paused_seconds or 0.0) + max(0.0, paused), 3)
        status.paused_since = None
        status.paused_by = None


def keep_time(session: Session, status: AgentSessionStatus, config: OperatorConfig, now: datetime) -> Clock:
    """Bring the pause record, status.expiresAt and the Expiring condition up to date; at the deadline,
    the session is deleted. The condition appears (True) `lifetime_warning` before it: its Event is
    the warning, posted once, since it is a transition; until then status.expiresAt alone says when,
    so a session costs no Event or status write for its lifetime before that."""
    if session.spec_problem is None:
        account_pause(session, status, now)
    record_lifetime_start(session, status, now)
    due = deadline(session, status, config)
    if due is None:
        status.expires_at = None
        status.conditions = [c for c in status.conditions if c.type != EXPIRING]
        return Clock(None, None)
    status.expires_at = rfc3339(due.at)
    left = (due.at - now).total_seconds()

    def expiring(state: str, reason: Reason, message: str) -> None:
        status.conditions = set_condition(
            status.conditions, EXPIRING, state, reason, message, session.generation, now
        )

    if left > config.lifetime_warning:
        if due.capped is not None:  # said at once (a Warning Event), not only at the warning
            expiring("False", Reason.LIFETIME_CAPPED, due.capped)
        else:
            status.conditions = [c for c in status.conditions if c.type != EXPIRING]
        return Clock(None, _wake(left - config.lifetime_warning, config))

    if left <= 0:
        expiring("True", due.expired, f"deleting the session at {due.why}")
        return Clock(DeleteSession(due.expired), None)
    expiring("True", due.ending, f"the session is deleted at {status.expires_at}, {due.why}; {due.hint}")
    return Clock(None, _wake(left, config))


def _ready(
    session: Session, status: AgentSessionStatus, state: str, reason: Reason, message: str, now: datetime
) -> None:
    status.conditions = set_condition(
        status.conditions, READY, state, reason, message, session.generation, now
    )


def pause_step(
    session: Session,
    status: AgentSessionStatus,
    space: SpaceView,
    observed: Observation,
    config: OperatorConfig,
    now: datetime,
) -> tuple[Action | None, float | None] | None:
    """The next step of a paused session (None: not paused, nothing to do here): pause the Space,
    say so in the connection Secret, then wait. A resumed one has its Secret cleared; its Space is
    restarted by the usual way back from a stopped stage."""
    if not session.spec.paused:
        if observed.connection_paused_since:
            return PublishPause("", ""), 0.0
        return None
    since = status.paused_since or rfc3339(now, precise=True)
    how = resume_command(session)
    status.phase = Phase.PAUSED
    if space.stage not in STOPPED_STAGES:
        pausing = f"pausing Space {space.space_id} (now {space.stage}); resume with: {how}"
        _ready(session, status, "False", Reason.PAUSING, pausing, now)
        return PauseSpace(space.space_id), config.poll_interval
    if observed.token is not None and (observed.connection_paused_since or "") != since:
        return PublishPause(since, how), 0.0
    idle = status.paused_by == PausedBy.IDLE
    why = "its sandbox was not used for a while" if idle else "spec.paused is true"
    # Ready: the session is where its spec puts it (so GitOps tools do not wait on it); the reason
    # and message say the sandbox does not answer until it is resumed.
    _ready(
        session,
        status,
        "True",
        Reason.IDLE_PAUSED if idle else Reason.PAUSED,
        f"Space {space.space_id} is paused since {since} ({why}): nothing is billed and the sandbox does not "
        f"answer; resume it with: {how}",
        now,
    )
    return None, None


def idle_since(status: AgentSessionStatus, observed: Observation, now: datetime) -> datetime | None:
    """Since when the sandbox has not been used, as far as can be told: the activity its health answer
    reports, or, while its Space is asleep, at least its sleep time before it was first seen asleep.
    Never before the session last became Ready (a resumed sandbox starts a fresh idle period)."""
    ready = condition_of(status, READY)
    floor = parse_rfc3339(ready.last_transition_time) if ready is not None else now
    health, space = observed.health, observed.space
    if health is not None and health.last_activity is not None:
        seen = min(health.last_activity, now)
    elif space is not None and space.stage == SLEEPING:
        recorded = parse_rfc3339(status.idle_since) if status.idle_since else None
        seen = recorded or shifted(now, -(space.sleep_time or 0))
    else:
        return None
    return max(seen, floor)


def idle_step(
    session: Session, status: AgentSessionStatus, observed: Observation, config: OperatorConfig, now: datetime
) -> tuple[PauseSpace | None, float | None]:
    """For a Ready session (running and healthy, or asleep): pause it once it has been idle for its
    pauseAfterSeconds, else look again when it would be."""
    after = pause_after(session.spec, config)
    since = idle_since(status, observed, now) if after and observed.space is not None else None
    status.idle_since = rfc3339(since) if since is not None else None
    if since is None or observed.space is None:
        return None, None
    due = shifted(since, after)
    if due > now:
        return None, _wake((due - now).total_seconds(), config)
    status.paused_since = rfc3339(now, precise=True)
    status.paused_by = PausedBy.IDLE
    status.idle_since = None
    status.phase = Phase.PAUSED
    _ready(
        session,
        status,
        "False",
        Reason.IDLE_PAUSED,
        f"the sandbox has not been used since {rfc3339(since)} ({after}s, spec.idle.pauseAfterSeconds or the "
        f"operator's default); pausing Space {observed.space.space_id}; resume it with: "
        f"{resume_command(session)}",
        now,
    )
    return PauseSpace(observed.space.space_id, for_idle=True), None
