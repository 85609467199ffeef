"""The steps of a live session before the Hub shows its Space: refusals, the intent recorded before
anything is asked of the Hub, a Hub that cannot be read, waiting for our own duplicate to land, and
the duplicate itself.
"""

from __future__ import annotations

from datetime import timedelta

from sandbox_operator.api import Phase
from sandbox_operator.core import receipts
from sandbox_operator.core.conditions import Reason, rfc3339
from sandbox_operator.core.creation import (
    creation_refusal,
    duplicate_may_land,
    duplicate_window_end,
    template_of,
)
from sandbox_operator.core.draft import give_up_paid, hub_failure_delay
from sandbox_operator.core.model import (
    NOT_VISIBLE_KINDS,
    CreateSpace,
    RecordIntent,
    connection_secret_name,
    space_id_for,
)
from sandbox_operator.core.money import is_free, target_hardware
from sandbox_operator.core.steps.given import Decision, Given, published_hub_token


def refuse_before_intent(given: Given) -> Decision | None:
    """No Space is named yet and the spec may not have one (an owner, a template, a secret not allowed)."""
    if given.draft.status.space_id is not None:
        return None
    return _refuse(given)


def connection_secret_conflict(given: Given) -> Decision | None:
    """A Secret of the connection Secret's name that this session does not own: nothing is written over it."""
    return given.fail_on(Reason.CONNECTION_SECRET_CONFLICT, given.observed.connection_conflict)


def record_intent(given: Given) -> Decision | None:
    """The Space's name goes into status before anything is asked of the Hub, so later steps (and a
    restarted operator) adopt it."""
    if given.draft.status.space_id is not None:
        return None
    return _record_intent(given, space_id_for(given.draft.session, given.config)), 0.0


def await_own_duplicate(given: Given) -> Decision | None:
    """Right after our own duplicate, a Space the Hub does not show yet is not missing."""
    failure = given.observed.hub_failure
    if failure is None or failure.kind not in NOT_VISIBLE_KINDS:
        return None
    if not duplicate_may_land(given.draft.status, given.config, given.draft.now):
        return None
    return _await_visibility(given, failure.message)


def hub_failure(given: Given) -> Decision | None:
    """The Hub could not be read: back off. Money first, even unobserved: paid hardware last seen and
    not allowed now is given up from what the status says (not recorded as requested: the request
    may fail like the read did)."""
    failure = given.observed.hub_failure
    if failure is None:
        return None
    draft, config = given.draft, given.config
    delay = given.fail(failure.kind.reason, failure.message, hub_failure_delay(failure, config))
    spec = draft.session.spec
    target = target_hardware(spec, None, config, draft.verdict, draft.exhausted)
    held = receipts.held_flavor(draft.status)
    if held is None or is_free(held, config) or held == target:
        return None, delay
    period = draft.status.paid_period
    ended = (
        receipts.ending_reason(period, spec, draft.verdict, draft.exhausted, config)
        if period is not None
        else ""
    )
    return give_up_paid(draft, ended, config, record=False), delay


def await_duplicate_landing(given: Given) -> Decision | None:
    """While a duplicate this process sent may still land, "not found" is "not visible yet". One an
    earlier process recorded is sent again at once (`create_space`): that process may have died
    between the record and the send. That cannot make a second Space: the name is the session's, so
    one that landed answers 409 and is adopted after its marker is checked."""
    status = given.draft.status
    if given.observed.create_record_inherited or status.duplicate_failure is not None:
        return None
    if not duplicate_may_land(status, given.config, given.draft.now):
        return None
    return _await_visibility(given, "not found")


def secrets_missing(given: Given) -> Decision | None:
    """A `spec.secrets` reference that does not resolve: no Space is created without it."""
    return given.fail_on(Reason.SECRET_NOT_FOUND, given.observed.secrets_problem)


def record_intent_again(given: Given) -> Decision | None:
    """The connection Secret is gone too: record the intent (and a new token) again first."""
    if given.observed.token is not None:
        return None
    return _record_intent(given, given.space_id), 0.0


def refuse_creation(given: Given) -> Decision | None:
    """The spec is checked again before each duplicate (the allow-lists may have changed)."""
    return _refuse(given)


def create_space(given: Given) -> Decision | None:
    """Duplicate the template into the session's Space, saying whether it is the first try, a Space
    lost from the Hub, or a duplicate sent again."""
    draft, config, space_id = given.draft, given.config, given.space_id
    status, spec = draft.status, draft.session.spec
    resent = duplicate_may_land(status, config, draft.now)
    lost = status.space_confirmed_time is not None
    status.phase = Phase.CREATING
    status.stage = None
    status.hardware = None
    status.space_confirmed_time = None
    template = template_of(spec.template, config)
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
    requested = rfc3339(draft.now, precise=True)
    status.duplicate_requested_time = requested
    status.template = template
    send_by = draft.now + timedelta(seconds=config.duplicate_send_deadline)
    return CreateSpace(space_id, template, spec.private, requested, send_by), config.poll_interval


def _refuse(given: Given) -> Decision | None:
    """No Space for this spec: say why; look again only if the refusal can lift by itself."""
    refusal = creation_refusal(given.draft.session.spec, given.observed, given.config)
    if refusal is None:
        return None
    given.draft.status.phase = Phase.FAILED
    given.draft.ready("False", refusal.reason, refusal.message)
    return None, refusal.recheck_after


def _record_intent(given: Given, space_id: str) -> RecordIntent:
    """The status after RecordIntent names the Space, so later steps (and a restart) adopt it."""
    draft = given.draft
    secret = connection_secret_name(draft.session)
    draft.status.space_id = space_id
    draft.status.connection_secret = secret
    draft.status.phase = Phase.CREATING
    draft.ready("False", Reason.PROVISIONING, f"creating Space {space_id}")
    return RecordIntent(space_id, secret, published_hub_token(draft.session, given.observed))


def _await_visibility(given: Given, detail: str) -> Decision:
    """Right after our own duplicate the Hub may not show the Space yet: wait, never create it again."""
    draft = given.draft
    end = duplicate_window_end(draft.status, given.config)
    until = f" until {rfc3339(end)}" if end is not None else ""
    draft.status.phase = Phase.CREATING
    draft.ready(
        "False",
        Reason.CREATING,
        f"the Hub does not show {given.space_id} yet after its duplicate ({detail}); waiting{until}",
    )
    return None, given.config.poll_interval
