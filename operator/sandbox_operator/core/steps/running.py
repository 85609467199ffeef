"""The steps of a live session whose Space the Hub shows: adopt it, money first, the marker, a pause,
the connection Secret, then the Space's stage, its hardware, its sleep time and its health.
"""

from __future__ import annotations

from datetime import datetime

from sandbox_operator.api import AgentSessionStatus, HardwareStatus, Phase, parse_rfc3339
from sandbox_operator.config.settings import OperatorConfig
from sandbox_operator.core import lifetime
from sandbox_operator.core.conditions import READY, Reason, condition_of, rfc3339
from sandbox_operator.core.draft import waiting_delay
from sandbox_operator.core.model import (
    ERROR_STAGES,
    SLEEPING,
    STARTING_STAGES,
    STOPPED_STAGES,
    MigrateMarker,
    PublishConnection,
    PublishHubToken,
    RequestHardware,
    RestartSpace,
    RotateToken,
    SetSleepTime,
    SpaceView,
    previous_cluster,
)
from sandbox_operator.core.money import is_free
from sandbox_operator.core.steps.given import Decision, Given, published_hub_token, switching_phase

#: Why a private Space's health is not checked without a read token: the Hub's edge hands
#: `Authorization` on to the app, which runs the session's code, so the operator's own token never
#: goes there (docs/hub-fidelity.md F37).
NO_EDGE_TOKEN = (
    "a private Space's edge takes only a Hub read token, and none is configured for this session "
    "(--hub-read-token-secret, or spec.hubTokenSecretRef); the operator never sends its own token "
    "to a sandbox"
)
#: Stages the Hub reports for a Space whose build failed (the rest of ERROR_STAGES failed at run time).
BUILD_FAILED_STAGES = ("BUILD_ERROR", "CONFIG_ERROR", "NO_APP_FILE")


def adopt_space(given: Given, space: SpaceView) -> Decision | None:
    """Report what the Hub shows; a Space another session's marker owns is left untouched, our own
    marker is noted (when it was first seen, which cluster wrote it)."""
    draft, uid = given.draft, given.draft.session.uid
    status = draft.status
    status.stage = space.stage
    status.hardware = HardwareStatus(current=space.current_hardware, requested=space.requested_hardware)
    if space.url:
        status.url = space.url
    if space.sandbox_url:
        status.sandbox_url = space.sandbox_url
    if space.marker_uid is not None and space.marker_uid != uid:
        owner = f"belongs to session UID {space.marker_uid}; it is left untouched"
        message = f"Space {given.space_id} exists but {owner}"
        return None, given.fail(Reason.SPACE_NOT_OWNED, message, minimum=given.config.backoff_max)
    if space.marker_uid == uid and status.space_confirmed_time is None:
        status.space_confirmed_time = rfc3339(draft.now, precise=True)
    if space.marker_uid == uid and space.marker_cluster is not None:
        status.marker_cluster_id = space.marker_cluster
    return None


def give_up_disallowed_paid(given: Given, space: SpaceView) -> Decision | None:
    """Money first, whatever the stage: paid hardware that is not allowed now is given up before
    anything else is done to the Space (a restart, a new token), never left to a later stage."""
    held = space.requested_hardware or space.current_hardware
    target = given.target
    if held is None or is_free(held, given.config) or held == target:
        return None
    given.draft.status.phase = switching_phase(target, given.config)
    given.draft.ready(
        "False",
        Reason.HARDWARE_SWITCHING,
        f"{held} is not allowed now; requesting {target} (the Hub reports stage {space.stage})",
    )
    return RequestHardware(given.space_id, target, given.sleep_time), given.config.poll_interval


def migrate_marker(given: Given, space: SpaceView) -> Decision | None:
    """Our own marker, written under one of the cluster's previous ids, is rewritten with the current one."""
    cluster = space.marker_cluster
    if space.marker_uid != given.draft.session.uid or cluster is None:
        return None
    if not previous_cluster(cluster, given.config):
        return None
    return MigrateMarker(given.space_id, given.config.cluster_id), 0.0


def pause(given: Given, space: SpaceView) -> Decision | None:
    """A paused session's Space is paused, a resumed one's Secret cleared (`lifetime.pause_step`)."""
    draft = given.draft
    return lifetime.pause_step(draft.session, draft.status, space, given.observed, given.config, draft.now)


def rotate_lost_token(given: Given, space: SpaceView) -> Decision | None:
    """The connection Secret was lost with its token: the sandbox gets a new one."""
    if given.observed.token is not None:
        return None
    draft = given.draft
    draft.status.phase = Phase.STARTING
    draft.status.token_rotated_time = rfc3339(draft.now)
    draft.ready("False", Reason.ROTATING_TOKEN, "the connection Secret was lost; issuing a new sandbox token")
    return RotateToken(given.space_id), 0.0


def publish_connection(given: Given, space: SpaceView) -> Decision | None:
    """The connection Secret publishes the sandbox URL the Hub reports."""
    if not space.sandbox_url or given.observed.connection_url == space.sandbox_url:
        return None
    return PublishConnection(space.sandbox_url), 0.0


def publish_hub_token(given: Given, space: SpaceView) -> Decision | None:
    """The connection Secret holds the Hub read token agent pods need for a private Space's edge."""
    hub_token = published_hub_token(given.draft.session, given.observed)
    if (given.observed.connection_hub_token or "") == hub_token:
        return None
    return PublishHubToken(hub_token), 0.0


def restart_failed_space(given: Given, space: SpaceView) -> Decision | None:
    """A Space in an error stage fails the session; on the second look in a row it is restarted."""
    if space.stage not in ERROR_STAGES:
        return None
    draft = given.draft
    reason = Reason.BUILD_ERROR if space.stage in BUILD_FAILED_STAGES else Reason.RUNTIME_ERROR
    already_failing = (draft.status.failures or 0) > 0 and _ready_reason(draft.session.status) == reason
    delay = given.fail(reason, f"the Hub reports stage {space.stage}; restarting the Space")
    return (RestartSpace(given.space_id) if already_failing else None), delay


def asleep(given: Given, space: SpaceView) -> Decision | None:
    """An asleep Space is left asleep: waking it (a health check, a restart) would bill it again, and
    the first request of an agent does. Woken by an agent, paid hardware bills again: look again as
    often as spend is accrued."""
    if space.stage != SLEEPING:
        return None
    draft = given.draft
    draft.status.phase = Phase.SLEEPING
    draft.ready(
        "True",
        Reason.SANDBOX_SLEEPING,
        f"Space {given.space_id} is asleep after its sleep time without requests; the first request wakes it",
    )
    asleep_on = space.requested_hardware
    paid = asleep_on is not None and not is_free(asleep_on, given.config)
    return None, given.config.spend_interval if paid else None


def restart_stopped_space(given: Given, space: SpaceView) -> Decision | None:
    """A stopped (or paused, once resumed) Space is restarted."""
    if space.stage not in STOPPED_STAGES:
        return None
    given.draft.status.phase = Phase.STARTING
    given.draft.ready("False", Reason.RESTARTING, f"the Space is {space.stage}; restarting it")
    return RestartSpace(given.space_id), given.config.poll_interval


def await_start(given: Given, space: SpaceView) -> Decision | None:
    """A Space that builds or starts (or reports any stage but RUNNING) is waited for."""
    if space.stage not in STARTING_STAGES and space.stage == "RUNNING":
        return None
    draft = given.draft
    switching = space.requested_hardware not in (None, space.current_hardware) and space.current_hardware
    draft.status.phase = (
        switching_phase(space.requested_hardware or given.target, given.config)
        if switching
        else Phase.STARTING
    )
    reason = Reason.BUILDING if "BUILDING" in space.stage else Reason.STARTING
    draft.ready("False", reason, f"the Hub reports stage {space.stage}")
    return None, waiting_delay(draft.status, given.config, draft.now)


def request_target_hardware(given: Given, space: SpaceView) -> Decision | None:
    """The Space neither runs on nor was asked for the flavor it should have: ask for it."""
    target = given.target
    if target in (space.requested_hardware, space.current_hardware):
        return None
    given.draft.status.phase = switching_phase(target, given.config)
    given.draft.ready(
        "False", Reason.HARDWARE_SWITCHING, f"requesting {target} (now on {space.current_hardware})"
    )
    return RequestHardware(given.space_id, target, given.sleep_time), given.config.poll_interval


def await_hardware_switch(given: Given, space: SpaceView) -> Decision | None:
    """The flavor was asked for and the Hub has not moved the Space yet: wait."""
    target = given.target
    if space.current_hardware == target:
        return None
    draft = given.draft
    draft.status.phase = switching_phase(target, given.config)
    draft.ready("False", Reason.HARDWARE_SWITCHING, f"waiting for the Hub to move the Space to {target}")
    return None, waiting_delay(draft.status, given.config, draft.now)


def set_sleep_time(given: Given, space: SpaceView) -> Decision | None:
    """Paid hardware sleeps after the session's sleep time without requests."""
    sleep_time = given.sleep_time
    if sleep_time is None or space.sleep_time == sleep_time:
        return None
    return SetSleepTime(given.space_id, sleep_time), 0.0


def rotate_rejected_token(given: Given, space: SpaceView) -> Decision | None:
    """The sandbox rejects its token (401): a new one, at most once per interval."""
    health = given.observed.health
    if health is None or health.ok or health.status != 401:
        return None
    draft = given.draft
    if not _may_rotate_token(draft.status, given.config, draft.now):
        return None
    draft.status.phase = Phase.STARTING
    draft.status.token_rotated_time = rfc3339(draft.now)
    draft.ready(
        "False", Reason.ROTATING_TOKEN, f"the sandbox rejects its token ({health.detail}); issuing a new one"
    )
    return RotateToken(given.space_id), 0.0


def await_health(given: Given, space: SpaceView) -> Decision | None:
    """A running Space whose sandbox does not answer its health check (or was not checked) is waited for."""
    health = given.observed.health
    if health is not None and health.ok:
        return None
    draft = given.draft
    draft.status.phase = Phase.STARTING
    if health is not None:
        detail = health.detail
    elif draft.session.spec.private and given.observed.read_token is None:
        detail = f"not checked: {NO_EDGE_TOKEN}"
    else:
        detail = "not checked yet"
    message = f"the sandbox API does not answer its health check: {detail}"
    draft.ready("False", Reason.HEALTH_CHECK_FAILING, message)
    return None, waiting_delay(draft.status, given.config, draft.now)


def ready(given: Given, space: SpaceView) -> Decision:
    """Running on the flavor it should, healthy: Ready, nothing to do."""
    given.draft.status.phase = Phase.READY
    message = f"Space {given.space_id} is running on {given.target} and answers its health check"
    given.draft.ready("True", Reason.SANDBOX_READY, message)
    return None, None


def _may_rotate_token(status: AgentSessionStatus, config: OperatorConfig, now: datetime) -> bool:
    """A token the sandbox rejects is replaced at most once per interval, so a rejection that a new
    token does not cure cannot become a loop of rotations."""
    last = status.token_rotated_time
    return last is None or (now - parse_rfc3339(last)).total_seconds() >= config.token_rotation_interval


def _ready_reason(status: AgentSessionStatus) -> str | None:
    condition = condition_of(status, READY)
    return condition.reason if condition else None
