"""When a pass need not ask again: a health answer that still holds, an ownership marker already known.

A tenant patching a field that never reaches the Hub (a flavor nobody approved, and back) wakes its
session's loop each time; that pass must not spend the operator's Hub budget, nor the sandbox's, on
what the latest listing and an earlier health check already say. Nor does a deletion read the
marker of a Space its session already saw carrying it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sandbox_operator.api import AgentSessionSpec, DeletionPolicy
from sandbox_operator.config.settings import OperatorConfig
from sandbox_operator.core.lifetime import pause_after
from sandbox_operator.core.model import HealthResult, Session, SpaceView, own_cluster, space_id_for


@dataclass(frozen=True)
class CheckedHealth:
    """A health answer, with what it was asked with and when."""

    result: HealthResult
    checked_at: datetime
    #: The sandbox token, the Hub read token that passed the edge ("" for a public Space), the address.
    token: str
    hub_token: str
    sandbox_url: str
    #: The Space as the pass that checked saw it.
    space: SpaceView


def _same_runtime(before: SpaceView, now: SpaceView) -> bool:
    """The Space runs as it did: the same stage on the same hardware, at the same address."""
    return (before.stage, before.current_hardware, before.requested_hardware, before.sandbox_url) == (
        now.stage,
        now.current_hardware,
        now.requested_hardware,
        now.sandbox_url,
    )


def read_still_serves(view: SpaceView) -> bool:
    """Whether a session's own read of its Space may stand in for the next ones until a newer listing:
    only while the Space runs as asked (a spec flap then costs nothing). A Space in transition (building,
    starting, switching hardware) is read again at each poll: a paid switch's end starts its bill, and
    a budget is enforced on time only if that end is seen on time."""
    return view.stage == "RUNNING" and view.current_hardware == view.requested_hardware


def listing_serves(view: SpaceView) -> bool:
    """Whether a listing's view of a Space may serve a session's passes until the next listing: not
    while the Hub moves it to another flavor, whose end (a bill that starts or stops, a budget's switch
    back) is seen on time only by reads of its own at each poll. A building Space's end is seen by the
    edge prober instead."""
    return view.current_hardware is None or view.requested_hardware in (None, view.current_hardware)


def health_still_holds(
    checked: CheckedHealth,
    space: SpaceView,
    token: str,
    hub_token: str,
    spec: AgentSessionSpec,
    config: OperatorConfig,
    now: datetime,
) -> bool:
    """Whether an earlier healthy answer says what a check now would, so the pass does not ask the
    sandbox again: same token and address, the Space seen running as it was then, the answer younger
    than the resync (a converged session's own recheck, which so still checks), and no idle pause that
    its activity time would make due (a pause is decided on a fresh answer only). An unhealthy answer
    never holds: the session waits for the sandbox and asks again."""
    if not checked.result.ok:
        return False
    if (checked.token, checked.hub_token, checked.sandbox_url) != (token, hub_token, space.sandbox_url):
        return False
    if not _same_runtime(checked.space, space):
        return False
    age = now - checked.checked_at
    if age < timedelta(0) or (
        config.resync_interval > 0 and age >= timedelta(seconds=config.resync_interval)
    ):
        return False
    idle_after = pause_after(spec, config)
    active = checked.result.last_activity
    return not idle_after or active is None or active + timedelta(seconds=idle_after) > now


def marker_known(session: Session, config: OperatorConfig) -> bool:
    """Whether a deleting session may delete its Space without reading its ownership marker first:
    the Space's name carries the session's UID (created for this session and no other: a status
    copied onto another session, as a restore from a backup does, names a Space that is not its
    own), the session saw it carrying its marker with one of this installation's cluster ids, and
    nothing since said it was lost (that clears the record). A Space claimed from a pool, or one to
    be kept (deletionPolicy Orphan, whose hardware is freed first), is read all the same."""
    status = session.status
    return (
        session.spec.deletion_policy == DeletionPolicy.DELETE
        and status.space_id == space_id_for(session, config)
        and status.space_confirmed_time is not None
        and status.marker_cluster_id is not None
        and own_cluster(status.marker_cluster_id, config)
    )
