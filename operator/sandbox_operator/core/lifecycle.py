"""The state machine: `decide` turns (session, observation) into the next action and the status that
describes it, for a live session and for one being deleted (the finalizer's branch, `core/deletion.py`).
Nothing here does I/O; the controller observes, calls `decide`, applies the one action and observes
again. A live session's next step is the first of the named steps in `core/steps` that decides.
"""

from __future__ import annotations

from datetime import datetime

from sandbox_operator.api import Hardware, Phase
from sandbox_operator.config.settings import OperatorConfig
from sandbox_operator.core import approvals, lifetime, receipts
from sandbox_operator.core.conditions import (
    AGENT_ACCESS,
    BUDGET_EXHAUSTED,
    HARDWARE_APPROVED,
    READY,
    STALLED,
    Reason,
    transition_events,
)
from sandbox_operator.core.deletion import decide_deletion, deletion_plan
from sandbox_operator.core.draft import (
    Draft,
    give_up_paid,
    hub_failure_delay,
    record_failure,
    sooner,
)
from sandbox_operator.core.model import Action, DeletionObservation, Observation, Plan, Session, SpaceView
from sandbox_operator.core.money import (
    UNTRUSTED_APPROVAL_REASONS,
    HardwareVerdict,
    accrue_spend,
    budget_exhausted,
    is_free,
    spend_recheck_delay,
    switch_back_note,
    usd,
)
from sandbox_operator.core.progress import conclude
from sandbox_operator.core.steps import next_step


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
    draft = _judged(session, observed, config, now)
    books = approvals.keep_books(
        draft.status,
        session.spec,
        session.generation,
        draft.verdict,
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
    action, requeue = next_step(draft, observed, config, jitter)
    if action is None and draft.status.phase in (Phase.READY, Phase.SLEEPING):
        action, idle_requeue = lifetime.idle_step(session, draft.status, observed, config, now)
        requeue = sooner(requeue, idle_requeue)
    conclude(draft.status, session.generation, now)
    # Clocks that must be read on time, whatever a listing of the Space says: the lifetime, the
    # budget (and spend accrual), an approval's expiry or the notice before it.
    deadline = sooner(clock.requeue, books.requeue_after)
    if draft.status.spend is not None:
        deadline = sooner(deadline, spend_recheck_delay(draft.status.spend, config))
    if paid_switch(observed.space, config):
        # The bill starts or stops when the switch completes, which only a look of its own sees soon.
        deadline = sooner(deadline, requeue)
    requeue = sooner(requeue, deadline)
    if draft.verdict.reason in UNTRUSTED_APPROVAL_REASONS:
        # Lifts without a spec change (the policy installed, a role granted): look again.
        requeue = sooner(requeue, config.approval_recheck_interval)
    # A duplicate sent again after the Hub's error keeps counting attempts (and backing off) until one
    # is answered without an error.
    if not draft.failed and draft.status.duplicate_failure is None:
        draft.clear_failures()
    events = transition_events(session.status, draft.status) + books.events + draft.notes
    return Plan(action, draft.status, requeue, events, deadline=deadline)


def _judged(session: Session, observed: Observation, config: OperatorConfig, now: datetime) -> Draft:
    """The draft of a live session's decision with money decided first: the approval judged, spend
    and budget accounted, before any step looks at the Space."""
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
    draft = Draft(session, now, session.status.model_copy(deep=True), verdict)
    draft.status.approval = record
    # The spec reads again: what an unreadable one stalled is over.
    draft.status.conditions = [
        c for c in draft.status.conditions if not (c.type == STALLED and c.reason == Reason.SPEC_INVALID)
    ]
    if draft.status.paid_period is None and observed.space is not None:
        draft.status.paid_period = receipts.inherited_period(
            session.status, observed.space.current_hardware, config
        )
    _money(draft, observed, config)
    return draft


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
    draft = Draft(session, now, session.status.model_copy(deep=True), unjudged)
    draft.status.phase = Phase.DELETING if session.deleting else Phase.FAILED
    if not lifetime.predates_lifetimes(session.status):
        # From the creation, as a pass that succeeds records it: the observedGeneration this failure
        # writes must not make the next pass take the session for one older than lifetimes.
        lifetime.record_lifetime_start(session, draft.status, now)
    delay = record_failure(draft, reason, message, config, jitter)
    conclude(draft.status, session.generation, now)
    if session.deleting:
        return deletion_plan(draft, None, reason, message, delay)
    lapse = (
        str(Reason.SPEC_INVALID)
        if session.spec_problem is not None
        else approvals.approval_lapse(session.spec, draft.status, config, now)
    )
    action = give_up_paid(draft, lapse, config, record=True) if lapse is not None else None
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
    draft = Draft(session, now, session.status.model_copy(deep=True), unjudged)
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
        requeue = record_failure(
            draft,
            failure.kind.reason,
            f"the spec cannot be read and moving the Space to free hardware failed: {failure.message}",
            config,
            jitter,
            hub_failure_delay(failure, config),
        )
    elif action is None:
        draft.ready("False", Reason.SPEC_INVALID, message)
        action = give_up_paid(draft, str(Reason.SPEC_INVALID), config, record=True)
    if not draft.failed:
        draft.clear_failures()
    # Stalled (SpecInvalid) and Reconciling come from Ready or HardwareApproved, as for every decision.
    conclude(draft.status, session.generation, now)
    notes = transition_events(session.status, draft.status)
    # One Event, not one each: Ready's, which says what to do (HardwareApproved's while Ready is another).
    said = sorted(
        (note for note in notes if note.reason == Reason.SPEC_INVALID),
        key=lambda note: note.condition != READY,
    )[:1]
    events = said + [note for note in notes if note.reason != Reason.SPEC_INVALID] + draft.notes
    return Plan(action, draft.status, requeue, events)


def _money(draft: Draft, observed: Observation, config: OperatorConfig) -> None:
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


def _agent_access(draft: Draft, observed: Observation) -> None:
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
            "no connection Secret yet: the operator writes it (hubToken, token) once the session's Space "
            "exists and the Hub reports the sandbox's URL (the Ready condition says what it waits for)",
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
