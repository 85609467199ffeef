"""The state machine: `decide` turns (session, observation) into the next action and the status that
describes it, for a live session and for one being deleted (the finalizer's branch). Nothing here
does I/O; the controller observes, calls `decide`, applies the one action and observes again.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from sandbox_operator.api import (
    AgentSessionStatus,
    DeletionPolicy,
    Hardware,
    HardwareStatus,
    Phase,
    parse_rfc3339,
)
from sandbox_operator.config.settings import OperatorConfig
from sandbox_operator.core import approvals, lifetime
from sandbox_operator.core.conditions import (
    AGENT_ACCESS,
    BUDGET_EXHAUSTED,
    HARDWARE_APPROVED,
    READY,
    STALLED,
    EventNote,
    Reason,
    condition_of,
    rfc3339,
    set_condition,
    transition_events,
)
from sandbox_operator.core.creation import (
    Refusal,
    creation_refusal,
    duplicate_may_land,
    duplicate_window_end,
    space_may_be_hidden,
    space_may_exist,
)
from sandbox_operator.core.model import (
    ERROR_STAGES,
    NOT_VISIBLE_KINDS,
    SLEEPING,
    STARTING_STAGES,
    STOPPED_STAGES,
    Action,
    CreateSpace,
    DeleteSpace,
    DeletionObservation,
    FailureKind,
    HubFailure,
    MigrateMarker,
    Observation,
    Plan,
    PublishConnection,
    PublishHubToken,
    RecordIntent,
    RecordReceipt,
    ReleaseSpace,
    RequestHardware,
    RestartSpace,
    RotateToken,
    Session,
    SetSleepTime,
    SpaceView,
    connection_secret_name,
    deletion_space_id,
    own_cluster,
    previous_cluster,
    space_id_for,
)
from sandbox_operator.core.money import (
    UNTRUSTED_APPROVAL_REASONS,
    HardwareVerdict,
    accrue_spend,
    budget_exhausted,
    free_flavor,
    is_free,
    sleep_time_for,
    spend_recheck_delay,
    switch_back_note,
    target_hardware,
    usd,
)
from sandbox_operator.core.progress import conclude

#: While a session stays starting or unhealthy, the poll delay is this fraction of the time it has
#: not been Ready: polls thin out geometrically (x1.25 each), up to `waiting_poll_max`.
WAITING_BACKOFF_FRACTION = 0.25


def backoff_delay(failures: int, config: OperatorConfig, jitter: float) -> float:
    """Exponential backoff with +-20% jitter (jitter in [0, 1)), so many sessions do not retry in step."""
    base = min(config.backoff_max, config.backoff_base * (2.0 ** max(0, failures - 1)))
    return round(base * (0.8 + 0.4 * jitter), 3)


def waiting_delay(status: AgentSessionStatus, config: OperatorConfig, now: datetime) -> float:
    """The next poll of a session that is starting or unhealthy: a share of the time it has not been
    Ready (the Ready condition's lastTransitionTime), so a stuck session does not eat the Hub budget."""
    ready = condition_of(status, READY)
    held = 0.0
    if ready is not None and ready.status != "True":
        held = max(0.0, (now - parse_rfc3339(ready.last_transition_time)).total_seconds())
    return max(config.poll_interval, min(config.waiting_poll_max, held * WAITING_BACKOFF_FRACTION))


@dataclass
class _Draft:
    """A status under construction for one decision."""

    session: Session
    now: datetime
    status: AgentSessionStatus
    verdict: HardwareVerdict
    failed: bool = False
    exhausted: bool = False
    #: Events of this decision besides the conditions' transitions (a receipt).
    notes: list[EventNote] = field(default_factory=list)

    def condition(self, type_: str, status: str, reason: Reason, message: str) -> None:
        self.status.conditions = set_condition(
            self.status.conditions, type_, status, reason, message, self.session.generation, self.now
        )

    def ready(self, status: str, reason: Reason, message: str) -> None:
        self.condition(READY, status, reason, message)


def _failure(
    draft: _Draft, reason: Reason, message: str, config: OperatorConfig, jitter: float, minimum: float = 0.0
) -> float:
    """Record a failed reconcile; returns the delay before the next try."""
    failures = (draft.status.failures or 0) + 1
    delay = max(minimum, backoff_delay(failures, config, jitter))
    draft.failed = True
    retry_at = draft.now + timedelta(seconds=delay)
    draft.status.failures = failures
    draft.status.next_retry_time = rfc3339(retry_at)
    draft.ready(
        "False", reason, f"{message} (attempt {failures}; next try in {delay:.0f}s at {rfc3339(retry_at)})"
    )
    return delay


def _hub_failure_delay(failure: HubFailure, config: OperatorConfig) -> float:
    if failure.kind is FailureKind.RATE_LIMITED and failure.retry_after is not None:
        return float(failure.retry_after)
    if failure.kind in (FailureKind.UNAUTHORIZED, FailureKind.FORBIDDEN):
        return config.credentials_backoff_min
    return 0.0


def _report_space(draft: _Draft, space: SpaceView) -> None:
    draft.status.stage = space.stage
    draft.status.hardware = HardwareStatus(current=space.current_hardware, requested=space.requested_hardware)
    if space.url:
        draft.status.url = space.url
    if space.sandbox_url:
        draft.status.sandbox_url = space.sandbox_url


def decide(
    session: Session,
    observed: Observation | DeletionObservation,
    config: OperatorConfig,
    now: datetime,
    jitter: float = 0.5,
) -> Plan:
    """The next action for a session, and the status that describes it: one entry for its whole
    life, branching on deletion as Crossplane's Reconcile does on WasDeleted. The controller
    observes a deleting session's Space as a `DeletionObservation`."""
    if isinstance(observed, DeletionObservation):
        return decide_deletion(session, observed, config, jitter, now=now)
    if session.spec_problem is not None:
        return decide_unreadable(session, observed, config, now, jitter)
    return decide_live(session, observed, config, now, jitter)


def decide_live(
    session: Session, observed: Observation, config: OperatorConfig, now: datetime, jitter: float = 0.5
) -> Plan:
    """The next action for a live (not deleting) session, and the status that describes it."""
    recorded = session.status.approval or approvals.inherited_record(session, observed.policy_since, config)
    record = approvals.approval_record(session.spec, recorded, config, now)
    verdict = approvals.judge_request(
        session.spec,
        config,
        observed.prices,
        record,
        now,
        policy_problem=observed.policy_problem,
        approver_authorized=observed.approver_authorized,
        denier_authorized=observed.denier_authorized,
    )
    draft = _Draft(session, now, session.status.model_copy(deep=True), verdict)
    draft.status.approval = record
    # The spec reads again: what an unreadable one stalled is over.
    draft.status.conditions = [
        c for c in draft.status.conditions if not (c.type == STALLED and c.reason == Reason.SPEC_INVALID)
    ]
    if draft.status.paid_period is None and observed.space is not None:
        draft.status.paid_period = approvals.inherited_period(
            session.status, observed.space.current_hardware, config
        )
    _money(draft, observed, config)
    books = approvals.keep_books(
        draft.status,
        session.spec,
        session.generation,
        verdict,
        draft.exhausted,
        observed.space,
        observed.prices,
        config,
        now,
    )
    _agent_access(draft, observed)
    clock = lifetime.keep_time(session, draft.status, config, now)
    if clock.delete is not None:
        conclude(draft.status, session.generation, now)
        events = transition_events(session.status, draft.status) + books.events
        return Plan(clock.delete, draft.status, None, events)
    action, requeue = _next_step(draft, observed, config, jitter)
    if action is None and draft.status.phase in (Phase.READY, Phase.SLEEPING):
        action, idle_requeue = lifetime.idle_step(session, draft.status, observed, config, now)
        requeue = _sooner(requeue, idle_requeue)
    conclude(draft.status, session.generation, now)
    # Clocks that must be read on time, whatever a listing of the Space says: the lifetime, the
    # budget (and spend accrual), an approval's expiry or the notice before it.
    deadline = _sooner(clock.requeue, books.requeue_after)
    if draft.status.spend is not None:
        deadline = _sooner(deadline, spend_recheck_delay(draft.status.spend, config))
    if paid_switch(observed.space, config):
        # The bill starts or stops when the switch completes, which only a look of its own sees soon.
        deadline = _sooner(deadline, requeue)
    requeue = _sooner(requeue, deadline)
    if verdict.reason in UNTRUSTED_APPROVAL_REASONS:
        # Lifts without a spec change (the policy installed, a role granted): look again.
        requeue = _sooner(requeue, config.approval_recheck_interval)
    # A duplicate sent again after the Hub's error keeps counting attempts (and backing off) until one
    # is answered without an error.
    if not draft.failed and draft.status.duplicate_failure is None:
        draft.status.failures = None
        draft.status.next_retry_time = None
    events = transition_events(session.status, draft.status) + books.events + draft.notes
    return Plan(action, draft.status, requeue, events, deadline=deadline)


def _sooner(requeue: float | None, other: float | None) -> float | None:
    return other if requeue is None else requeue if other is None else min(requeue, other)


def paid_switch(space: SpaceView | None, config: OperatorConfig) -> bool:
    """The Hub moves the Space onto or off paid hardware: billing changes once the switch completes."""
    if (
        space is None
        or space.requested_hardware is None
        or space.requested_hardware == space.current_hardware
    ):
        return False
    return not is_free(space.requested_hardware, config) or (
        space.current_hardware is not None and not is_free(space.current_hardware, config)
    )


def decide_failure(
    session: Session, reason: Reason, message: str, config: OperatorConfig, now: datetime, jitter: float = 0.5
) -> Plan:
    """A failure met outside the Hub (a Kubernetes API error, a Secret that is not text, a bug):
    reported like a Hub failure, as a condition and an Event, and retried with backoff instead of
    crash-restarting the loop. Money first even then: paid hardware the status last showed and that
    the spec and status no longer allow (`approvals.approval_lapse`) is given up, with its receipt.
    The plan's status says free hardware was requested: the controller writes it only once it was."""
    unjudged = HardwareVerdict(False, Reason.NOT_JUDGED, "no hardware decision is made after this failure")
    draft = _Draft(session, now, session.status.model_copy(deep=True), unjudged)
    draft.status.phase = Phase.DELETING if session.deleting else Phase.FAILED
    delay = _failure(draft, reason, message, config, jitter)
    conclude(draft.status, session.generation, now)
    if session.deleting:
        return _deletion_plan(draft, None, reason, message, delay)
    lapse = (
        str(Reason.SPEC_INVALID)
        if session.spec_problem is not None
        else approvals.approval_lapse(session.spec, draft.status, config, now)
    )
    action = _give_up_paid(draft, lapse, config, record=True) if lapse is not None else None
    return Plan(action, draft.status, delay, transition_events(session.status, draft.status) + draft.notes)


def decide_unreadable(
    session: Session, observed: Observation, config: OperatorConfig, now: datetime, jitter: float = 0.5
) -> Plan:
    """A spec the operator cannot read (a CRD older than this operator's schema admitted it): nothing
    in it is acted on. Ready=False and Stalled=True say why, with one Event, until the spec changes
    (the next generation is read at once: observedGeneration moves with each). An approval that
    cannot be read approves nothing, so paid hardware is given up, with its receipt; of its
    deadlines, only the operator's maximum age still applies. `observed` is empty, but for the
    failure of that request."""
    problem = session.spec_problem
    unjudged = HardwareVerdict(
        False, Reason.SPEC_INVALID, f"no approval is read from a spec that cannot be read: {problem}"
    )
    draft = _Draft(session, now, session.status.model_copy(deep=True), unjudged)
    draft.status.observed_generation = session.generation
    draft.status.phase = Phase.FAILED
    draft.status.approved_by = None
    draft.status.pending_approval = None
    message = (
        f"the spec cannot be read, so nothing in it is acted on (paid hardware is given up); fix it and "
        f"the operator reads the change at once: {problem}"
    )
    draft.condition(HARDWARE_APPROVED, "False", Reason.SPEC_INVALID, unjudged.message)
    clock = lifetime.keep_time(session, draft.status, config, now)
    action: Action | None = clock.delete
    requeue = clock.requeue
    failure = observed.hub_failure
    if action is None and failure is not None:  # the request for free hardware failed: try again
        requeue = _failure(
            draft,
            failure.kind.reason,
            f"the spec cannot be read and moving the Space to free hardware failed: {failure.message}",
            config,
            jitter,
            _hub_failure_delay(failure, config),
        )
    elif action is None:
        draft.ready("False", Reason.SPEC_INVALID, message)
        action = _give_up_paid(draft, str(Reason.SPEC_INVALID), config, record=True)
    if not draft.failed:
        draft.status.failures = None
        draft.status.next_retry_time = None
    # Stalled (SpecInvalid) and Reconciling come from Ready or HardwareApproved, as for every decision.
    conclude(draft.status, session.generation, now)
    notes = transition_events(session.status, draft.status)
    said = [note for note in notes if note.reason == Reason.SPEC_INVALID][:1]  # one Event, not one each
    events = said + [note for note in notes if note.reason != Reason.SPEC_INVALID] + draft.notes
    return Plan(action, draft.status, requeue, events)


def _give_up_paid(
    draft: _Draft, ended_by: str, config: OperatorConfig, *, record: bool
) -> RequestHardware | None:
    """Free hardware for a Space whose last known flavor is paid (when no observation of it is at
    hand): the request, and the receipt of the paid stretch in progress. `record`: the status says
    the free flavor was requested (it is written only once it was)."""
    status = draft.status
    held = approvals.held_flavor(status)
    if status.space_id is None or held is None or is_free(held, config):
        return None
    current = status.hardware.current if status.hardware is not None else None
    free = free_flavor(current, config)
    receipt = approvals.close_now(status, ended_by, draft.now)
    draft.notes += [receipt] if receipt is not None else []
    if record:
        status.hardware = HardwareStatus(current=current, requested=free)
    return RequestHardware(status.space_id, free)


def _money(draft: _Draft, observed: Observation, config: OperatorConfig) -> None:
    """Approval, spend and budget: conditions and status fields, before any hardware decision."""
    spec = draft.session.spec
    verdict = draft.verdict
    wanted = str(spec.hardware)
    draft.condition(
        HARDWARE_APPROVED, "True" if verdict.approved else "False", verdict.reason, verdict.message
    )
    paid = not is_free(wanted, config)
    draft.status.approved_by = (
        spec.approval.approved_by if spec.approval and verdict.approved and paid else None
    )
    budget = spec.approval.budget_usd if spec.approval else None
    if observed.space is not None:
        draft.status.spend = accrue_spend(
            draft.status.spend, observed.space, config, observed.prices, budget, draft.now
        )
    elif draft.status.spend is not None:
        draft.status.spend.budget_usd = budget
    draft.exhausted = budget_exhausted(spec, draft.status.spend)
    if budget is None:
        draft.status.conditions = [c for c in draft.status.conditions if c.type != BUDGET_EXHAUSTED]
        return
    spent = draft.status.spend.estimated_usd if draft.status.spend else 0.0
    if draft.exhausted:
        draft.condition(
            BUDGET_EXHAUSTED,
            "True",
            Reason.BUDGET_SPENT,
            f"estimated spend {usd(spent)}{switch_back_note(draft.status.spend)} reached the budget of "
            f"{usd(budget)}; the Space is back on {Hardware.CPU_BASIC.value} until an approver raises "
            "spec.approval.budgetUsd",
        )
    else:
        draft.condition(
            BUDGET_EXHAUSTED, "False", Reason.WITHIN_BUDGET, f"estimated spend {usd(spent)} of {usd(budget)}"
        )


def _agent_access(draft: _Draft, observed: Observation) -> None:
    """Say whether agent pods can pass the Hub's edge with the connection Secret (not part of Ready:
    the sandbox itself may be fine)."""
    private = draft.session.spec.private
    if private and observed.read_token_problem is not None:
        draft.condition(
            AGENT_ACCESS, "False", Reason.READ_TOKEN_SECRET_NOT_FOUND, observed.read_token_problem
        )
    elif private and not observed.read_token:
        draft.condition(
            AGENT_ACCESS,
            "False",
            Reason.NO_READ_TOKEN,
            "no Hub read token is configured (the operator's --hub-read-token-secret or "
            "--hub-read-token-namespace-secret, or spec.hubTokenSecretRef): agent pods will not pass the "
            "Hub's edge of this private Space",
        )
    elif observed.token is None:
        draft.condition(
            AGENT_ACCESS,
            "False",
            Reason.NO_CONNECTION_SECRET,
            "no connection Secret yet: the operator writes it (hubToken, token) once the Hub reports the "
            "sandbox's URL",
        )
    elif not private:
        draft.condition(
            AGENT_ACCESS,
            "True",
            Reason.PUBLIC_SPACE,
            "the Space is public: the sandbox token alone reaches it",
        )
    else:
        draft.condition(
            AGENT_ACCESS,
            "True",
            Reason.READ_TOKEN_PUBLISHED,
            "the connection Secret holds hubToken (Authorization, for the Hub's edge) and token "
            "(X-Sandbox-Authorization, for the sandbox)",
        )


def _published_hub_token(session: Session, observed: Observation) -> str:
    """What the connection Secret's hubToken should be: the read token for a private Space, else none."""
    return (observed.read_token or "") if session.spec.private else ""


def _next_step(
    draft: _Draft, observed: Observation, config: OperatorConfig, jitter: float
) -> tuple[Action | None, float | None]:
    session = draft.session
    status = draft.status
    now = draft.now
    if status.space_id is None:
        refusal = creation_refusal(session.spec, observed, config)
        if refusal is not None:
            return None, _refuse(draft, refusal)
    if observed.connection_conflict is not None:
        draft.status.phase = Phase.FAILED
        return None, _failure(
            draft, Reason.CONNECTION_SECRET_CONFLICT, observed.connection_conflict, config, jitter
        )
    if status.space_id is None:
        return _record_intent(draft, space_id_for(session, config), observed), 0.0
    space_id = status.space_id

    failure = observed.hub_failure
    if failure is not None and failure.kind in NOT_VISIBLE_KINDS and duplicate_may_land(status, config, now):
        return _await_visibility(draft, space_id, failure.message, config)
    if failure is not None:
        draft.status.phase = Phase.FAILED
        delay = _failure(
            draft, failure.kind.reason, failure.message, config, jitter, _hub_failure_delay(failure, config)
        )
        # Money first, even unobserved: paid hardware last seen and not allowed now is given up from
        # what the status says (not recorded as requested: the request may fail like the read did).
        target = target_hardware(session.spec, None, config, draft.verdict, draft.exhausted)
        held = approvals.held_flavor(status)
        if held is None or is_free(held, config) or held == target:
            return None, delay
        period = status.paid_period
        ended = (
            approvals.ending_reason(period, session.spec, draft.verdict, draft.exhausted, config)
            if period is not None
            else ""
        )
        return _give_up_paid(draft, ended, config, record=False), delay

    space = observed.space
    if space is None:
        # While a duplicate may still land, a "not found" is "not visible yet" when this process sent
        # it. One an earlier process recorded is sent again at once: that process may have died
        # between the record and the send. That cannot make a second Space: the name is the
        # session's, so one that landed answers 409 and is adopted after its marker is checked.
        resent = duplicate_may_land(status, config, now)
        if resent and not observed.create_record_inherited and status.duplicate_failure is None:
            return _await_visibility(draft, space_id, "not found", config)
        if observed.secrets_problem is not None:
            draft.status.phase = Phase.FAILED
            return None, _failure(draft, Reason.SECRET_NOT_FOUND, observed.secrets_problem, config, jitter)
        if observed.token is None:
            # The connection Secret is gone too: record the intent (and a new token) again first.
            return _record_intent(draft, space_id, observed), 0.0
        refusal = creation_refusal(session.spec, observed, config)
        if refusal is not None:
            return None, _refuse(draft, refusal)
        lost = status.space_confirmed_time is not None
        draft.status.phase = Phase.CREATING
        draft.status.stage = None
        draft.status.hardware = None
        draft.status.space_confirmed_time = None
        template = session.spec.template or config.default_template
        if lost:
            draft.ready(
                "False", Reason.SPACE_LOST, f"Space {space_id} disappeared from the Hub; creating it again"
            )
        elif resent and status.duplicate_failure is not None:
            draft.ready(
                "False",
                Reason.CREATING,
                f"duplicating {template} into {space_id} again (attempt {(status.failures or 0) + 1}): "
                f"the Hub answered the last duplicate with an error ({status.duplicate_failure}); a Space "
                "that landed anyway answers 409 and is adopted",
            )
        elif resent:
            draft.ready(
                "False",
                Reason.CREATING,
                f"duplicating {template} into {space_id} again: the duplicate recorded at "
                f"{status.duplicate_requested_time} by an earlier operator process may never have left "
                "(a Space already there answers 409 and is adopted)",
            )
        else:
            draft.ready("False", Reason.CREATING, f"duplicating {template} into {space_id}")
        requested = rfc3339(now, precise=True)
        draft.status.duplicate_requested_time = requested
        draft.status.template = template
        send_by = now + timedelta(seconds=config.duplicate_send_deadline)
        return CreateSpace(space_id, template, session.spec.private, requested, send_by), config.poll_interval

    _report_space(draft, space)
    if space.marker_uid is not None and space.marker_uid != session.uid:
        draft.status.phase = Phase.FAILED
        return None, _failure(
            draft,
            Reason.SPACE_NOT_OWNED,
            f"Space {space_id} exists but belongs to session UID {space.marker_uid}; it is left untouched",
            config,
            jitter,
            minimum=config.backoff_max,
        )
    own_marker = space.marker_uid == session.uid
    if own_marker and status.space_confirmed_time is None:
        draft.status.space_confirmed_time = rfc3339(now, precise=True)
    if own_marker and space.marker_cluster is not None:
        draft.status.marker_cluster_id = space.marker_cluster

    # Money first, whatever the stage: paid hardware that is not allowed now is given up before
    # anything else is done to the Space (a restart, a new token), never left to a later stage.
    target = target_hardware(session.spec, space, config, draft.verdict, draft.exhausted)
    sleep_time = sleep_time_for(session.spec, config) if not is_free(target, config) else None
    held = space.requested_hardware or space.current_hardware
    if held is not None and not is_free(held, config) and held != target:
        draft.status.phase = _switching_phase(target, config)
        draft.ready(
            "False",
            Reason.HARDWARE_SWITCHING,
            f"{held} is not allowed now; requesting {target} (the Hub reports stage {space.stage})",
        )
        return RequestHardware(space_id, target, sleep_time), config.poll_interval
    if own_marker and space.marker_cluster is not None and previous_cluster(space.marker_cluster, config):
        return MigrateMarker(space_id, config.cluster_id), 0.0
    paused = lifetime.pause_step(session, draft.status, space, observed, config, now)
    if paused is not None:
        return paused

    if observed.token is None:
        draft.status.phase = Phase.STARTING
        draft.status.token_rotated_time = rfc3339(now)
        draft.ready(
            "False", Reason.ROTATING_TOKEN, "the connection Secret was lost; issuing a new sandbox token"
        )
        return RotateToken(space_id), 0.0
    if space.sandbox_url and observed.connection_url != space.sandbox_url:
        return PublishConnection(space.sandbox_url), 0.0
    hub_token = _published_hub_token(session, observed)
    if (observed.connection_hub_token or "") != hub_token:
        return PublishHubToken(hub_token), 0.0

    if space.stage in ERROR_STAGES:
        draft.status.phase = Phase.FAILED
        reason = (
            Reason.BUILD_ERROR
            if space.stage in ("BUILD_ERROR", "CONFIG_ERROR", "NO_APP_FILE")
            else Reason.RUNTIME_ERROR
        )
        already_failing = (status.failures or 0) > 0 and _ready_reason(session.status) == reason
        delay = _failure(
            draft, reason, f"the Hub reports stage {space.stage}; restarting the Space", config, jitter
        )
        return (RestartSpace(space_id) if already_failing else None), delay
    if space.stage == SLEEPING:
        # Waking it (a health check, a restart) would bill it again: the first request of an agent does.
        draft.status.phase = Phase.SLEEPING
        draft.ready(
            "True",
            Reason.SANDBOX_SLEEPING,
            f"Space {space_id} is asleep after its sleep time without requests; the first request wakes it",
        )
        asleep_on = space.requested_hardware
        paid = asleep_on is not None and not is_free(asleep_on, config)
        # Woken by an agent, it bills again: look again as often as spend is accrued.
        return None, config.spend_interval if paid else None
    if space.stage in STOPPED_STAGES:
        draft.status.phase = Phase.STARTING
        draft.ready("False", Reason.RESTARTING, f"the Space is {space.stage}; restarting it")
        return RestartSpace(space_id), config.poll_interval
    if space.stage in STARTING_STAGES or space.stage != "RUNNING":
        switching = space.requested_hardware not in (None, space.current_hardware) and space.current_hardware
        draft.status.phase = (
            _switching_phase(space.requested_hardware or target, config) if switching else Phase.STARTING
        )
        reason = Reason.BUILDING if "BUILDING" in space.stage else Reason.STARTING
        draft.ready("False", reason, f"the Hub reports stage {space.stage}")
        return None, waiting_delay(draft.status, config, now)

    if space.requested_hardware != target and space.current_hardware != target:
        draft.status.phase = _switching_phase(target, config)
        draft.ready(
            "False", Reason.HARDWARE_SWITCHING, f"requesting {target} (now on {space.current_hardware})"
        )
        return RequestHardware(space_id, target, sleep_time), config.poll_interval
    if space.current_hardware != target:
        draft.status.phase = _switching_phase(target, config)
        draft.ready("False", Reason.HARDWARE_SWITCHING, f"waiting for the Hub to move the Space to {target}")
        return None, waiting_delay(draft.status, config, now)

    if sleep_time is not None and space.sleep_time != sleep_time:
        return SetSleepTime(space_id, sleep_time), 0.0

    health = observed.health
    if health is None or not health.ok:
        if health is not None and health.status == 401 and _may_rotate_token(status, config, now):
            draft.status.phase = Phase.STARTING
            draft.status.token_rotated_time = rfc3339(now)
            draft.ready(
                "False",
                Reason.ROTATING_TOKEN,
                f"the sandbox rejects its token ({health.detail}); issuing a new one",
            )
            return RotateToken(space_id), 0.0
        draft.status.phase = Phase.STARTING
        if health is not None:
            detail = health.detail
        elif session.spec.private and observed.read_token is None:
            detail = f"not checked: {NO_EDGE_TOKEN}"
        else:
            detail = "not checked yet"
        draft.ready(
            "False",
            Reason.HEALTH_CHECK_FAILING,
            f"the sandbox API does not answer its health check: {detail}",
        )
        return None, waiting_delay(draft.status, config, now)

    draft.status.phase = Phase.READY
    draft.ready(
        "True", Reason.SANDBOX_READY, f"Space {space_id} is running on {target} and answers its health check"
    )
    return None, None


def _refuse(draft: _Draft, refusal: Refusal) -> float | None:
    """No Space for this spec: say why; look again only if the refusal can lift by itself."""
    draft.status.phase = Phase.FAILED
    draft.ready("False", refusal.reason, refusal.message)
    return refusal.recheck_after


def _switching_phase(target: str, config: OperatorConfig) -> Phase:
    """The phase of a hardware switch, named by where it goes: up to paid hardware, or back down."""
    return Phase.DOWNGRADING if is_free(target, config) else Phase.UPGRADING


def _await_visibility(
    draft: _Draft, space_id: str, detail: str, config: OperatorConfig
) -> tuple[Action | None, float | None]:
    """Right after our own duplicate the Hub may not show the Space yet: wait, never create it again."""
    end = duplicate_window_end(draft.status, config)
    until = f" until {rfc3339(end)}" if end is not None else ""
    draft.status.phase = Phase.CREATING
    draft.ready(
        "False",
        Reason.CREATING,
        f"the Hub does not show {space_id} yet after its duplicate ({detail}); waiting{until}",
    )
    return None, config.poll_interval


#: Why a private Space's health is not checked without a read token: the Hub's edge hands
#: `Authorization` on to the app, which runs the session's code, so the operator's own token never
#: goes there (docs/hub-fidelity.md F37).
NO_EDGE_TOKEN = (
    "a private Space's edge takes only a Hub read token, and none is configured for this session "
    "(--hub-read-token-secret, or spec.hubTokenSecretRef); the operator never sends its own token "
    "to a sandbox"
)


def _may_rotate_token(status: AgentSessionStatus, config: OperatorConfig, now: datetime) -> bool:
    """A token the sandbox rejects is replaced at most once per interval, so a rejection that a new
    token does not cure cannot become a loop of rotations."""
    last = status.token_rotated_time
    return last is None or (now - parse_rfc3339(last)).total_seconds() >= config.token_rotation_interval


def _record_intent(draft: _Draft, space_id: str, observed: Observation) -> RecordIntent:
    """The status after RecordIntent names the Space, so later steps (and a restart) adopt it."""
    secret = connection_secret_name(draft.session)
    draft.status.space_id = space_id
    draft.status.connection_secret = secret
    draft.status.phase = Phase.CREATING
    draft.ready("False", Reason.PROVISIONING, f"creating Space {space_id}")
    return RecordIntent(space_id, secret, _published_hub_token(draft.session, observed))


def _ready_reason(status: AgentSessionStatus) -> str | None:
    condition = condition_of(status, READY)
    return condition.reason if condition else None


def _deletion_plan(
    draft: _Draft,
    action: ReleaseSpace | RequestHardware | DeleteSpace | RecordReceipt | None,
    reason: Reason,
    message: str,
    requeue_after: float | None = None,
    *,
    done: bool = False,
) -> Plan:
    """A deleting session's plan: its Ready condition says why the finalizer stays or goes, and
    every decision without an action is also an Event (each try of a stuck deletion is visible)."""
    if not draft.failed:
        draft.ready("False", reason, message)
        draft.status.failures = None
        draft.status.next_retry_time = None
    condition = condition_of(draft.status, READY)
    assert condition is not None
    events = []
    if action is None:
        kind = "Normal" if done else "Warning"
        events.append(EventNote(kind, condition.reason, condition.message))
    conclude(draft.status, draft.session.generation, draft.now)
    return Plan(action, draft.status, requeue_after, events, done=done)


def decide_deletion(
    session: Session,
    observed: DeletionObservation,
    config: OperatorConfig,
    jitter: float = 0.5,
    *,
    now: datetime,
) -> Plan:
    """Whether the finalizer may go: only once the Space is gone, released by policy, or not ours.

    A session whose status lost its spaceId is still checked under the derived name, so a
    status wiped by hand or restored from an old backup cannot leak a Space. While a duplicate
    the operator asked for may still land or be hidden, "not found" is not "gone": the finalizer waits. A
    Space kept by `deletionPolicy: Orphan` is first brought back to free hardware (no one is
    accountable for it afterwards), then released: the orphan sweeper must not delete it later.
    """
    unjudged = HardwareVerdict(False, Reason.NOT_JUDGED, "no hardware decision is made while deleting")
    draft = _Draft(session, now, session.status.model_copy(deep=True), unjudged)
    draft.status.phase = Phase.DELETING
    space_id = deletion_space_id(session, config)
    orphan = session.spec.deletion_policy == DeletionPolicy.ORPHAN
    if draft.status.paid_period is None:  # the Space is not read: its hardware as last recorded
        held = session.status.hardware.current if session.status.hardware else None
        draft.status.paid_period = approvals.inherited_period(session.status, held, config)
    receipt = approvals.close_for_deletion(draft.status, now)
    if receipt is not None:  # what paid hardware cost goes into status before the Space (and session) go
        plan = _deletion_plan(
            draft, RecordReceipt(), Reason.HARDWARE_RECEIPT, f"recording what {space_id} cost", 0.0
        )
        return replace(plan, events=[receipt])
    if observed.deleted:
        return _deletion_plan(draft, None, Reason.SPACE_DELETED, f"Space {space_id} is deleted", done=True)
    failure = observed.hub_failure
    if (
        failure is not None
        and failure.kind is FailureKind.ACCESS_LOST
        and not space_may_exist(session.status)
    ):
        return _deletion_plan(
            draft, None, Reason.SPACE_DELETED, f"no Space {space_id} was ever created", done=True
        )
    landing = space_may_be_hidden(session.status, config, now)
    if (failure is not None and failure.kind in NOT_VISIBLE_KINDS and landing) or (
        failure is None and observed.marker is None and landing
    ):
        end = duplicate_window_end(session.status, config)
        return _deletion_plan(
            draft,
            None,
            Reason.WAITING_FOR_HUB,
            f"Space {space_id} was just created and the Hub does not show it yet; checking again "
            f"until {rfc3339(end or now)}",
            config.poll_interval,
        )
    if failure is not None:
        delay = _failure(
            draft,
            failure.kind.reason,
            f"cannot {'release' if orphan else 'delete'} Space {space_id} yet: {failure.message}",
            config,
            jitter,
            _hub_failure_delay(failure, config),
        )
        return _deletion_plan(draft, None, failure.kind.reason, "", delay)
    if orphan and (observed.marker != session.uid or not own_cluster(observed.marker_cluster, config)):
        return _deletion_plan(
            draft,
            None,
            Reason.SPACE_ORPHANED,
            f"deletionPolicy is Orphan; Space {space_id} is kept",
            done=True,
        )
    if orphan:
        held = observed.requested_hardware or observed.current_hardware
        if held is not None and not is_free(held, config):
            free = free_flavor(observed.current_hardware, config)
            plan = _deletion_plan(
                draft,
                RequestHardware(space_id, free),
                Reason.FREEING_HARDWARE,
                f"requesting {free} for Space {space_id} (now {held}) before it is kept "
                "(deletionPolicy Orphan): a kept Space must not hold paid hardware",
                0.0,
            )
            # The kept Space changes under its user's eyes: say so, not only that it is kept.
            return replace(plan, events=[EventNote("Normal", plan.reason, plan.message)])
        return _deletion_plan(
            draft,
            ReleaseSpace(space_id),
            Reason.RELEASING_SPACE,
            f"keeping Space {space_id} (deletionPolicy Orphan)",
        )
    if observed.marker is None:
        gone = (
            f"Space {space_id} is deleted" if space_may_exist(session.status) else "no Space was ever created"
        )
        return _deletion_plan(draft, None, Reason.SPACE_DELETED, gone, done=True)
    if observed.marker != session.uid:
        return _deletion_plan(
            draft,
            None,
            Reason.SPACE_NOT_OWNED,
            f"Space {space_id} does not carry this session's ownership marker; it is left untouched",
            done=True,
        )
    return _deletion_plan(
        draft, DeleteSpace(space_id), Reason.DELETING_SPACE, f"deleting Space {space_id}", 0.0
    )
