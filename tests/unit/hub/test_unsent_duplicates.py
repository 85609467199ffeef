"""The real Hub's shape: a duplicate the gate never let out cannot land, so the session
neither waits out a visibility window for it nor reads a Space it never asked for."""

from __future__ import annotations

import httpx2
import pytest

from sandbox_operator.api import AgentSessionStatus
from sandbox_operator.core.creation import create_record, duplicate_may_land, space_unrequested
from sandbox_operator.core.model import CreateSpace
from sandbox_operator.hub.errors import classify
from sandbox_operator.hub.gate import HubPaused, NotLeader, SendDeadlinePassed
from sandbox_operator.sessions.loop import SessionLoop, spec_changed
from tests.support.core import CONFIG, NOW, SPACE_ID


@pytest.mark.parametrize(
    "refusal",
    [SendDeadlinePassed("waited past its send deadline"), HubPaused(30.0), NotLeader("lease lost")],
)
def test_a_duplicate_the_gate_refused_is_not_recorded_as_one_that_may_land(refusal: Exception) -> None:
    error = classify("duplicate", refusal)
    assert not error.sent
    status = AgentSessionStatus.model_validate({"spaceId": SPACE_ID})
    action = CreateSpace(SPACE_ID, "t/t", True, "2026-11-26T12:00:00.000000Z", NOW)
    status.duplicate_requested_time = create_record(status, action, error.sent, error.failure)
    assert status.duplicate_requested_time is None
    assert not duplicate_may_land(status, CONFIG, NOW)  # no 80 s of "not visible yet" reads
    assert space_unrequested(status)  # and no read at all before the next duplicate


def test_a_request_that_left_may_have_landed() -> None:
    error = classify("duplicate", httpx2.ReadTimeout("timed out"))
    assert error.sent
    status = AgentSessionStatus.model_validate({"spaceId": SPACE_ID})
    action = CreateSpace(SPACE_ID, "t/t", True, "2026-11-26T12:00:00.000000Z", NOW)
    assert create_record(status, action, error.sent, error.failure) == "2026-11-26T12:00:00.000000Z"


@pytest.mark.parametrize(
    ("fields", "unrequested"),
    [
        ({"spaceId": SPACE_ID}, True),
        ({}, False),  # no Space named yet: the intent comes first
        ({"spaceId": SPACE_ID, "duplicateRequestedTime": "2026-11-26T12:00:00.000000Z"}, False),
        ({"spaceId": SPACE_ID, "spaceConfirmedTime": "2026-11-26T12:00:00.000000Z"}, False),
        ({"spaceId": SPACE_ID, "claimedTime": "2026-11-26T12:00:00.000000Z"}, False),  # a warm claim
    ],
)
def test_only_a_space_never_asked_for_seen_or_claimed_is_left_unread(
    fields: dict[str, str], unrequested: bool
) -> None:
    assert space_unrequested(AgentSessionStatus.model_validate(fields)) is unrequested


def test_only_a_new_generation_wakes_a_session_loop_not_its_first_sight() -> None:
    """The first watch event of a session starts its loop, which reads that object: waking the loop
    as well would repeat its first pass (a second read of the Space and health check)."""
    loop = SessionLoop()
    assert not spec_changed(loop, 1)
    assert not spec_changed(loop, 1)  # a status write
    assert spec_changed(loop, 2)  # a spec change


def test_a_pass_before_the_watch_delivered_the_last_status_write_decides_on_that_write() -> None:
    """The loop wrote status onto version 5; kopf's live body still shows version 5 (the watch is
    behind): the next pass sees what was written, not the older status. Once the body moves on, the
    body is what counts."""
    import kopf

    from sandbox_operator.api import AgentSessionStatus

    raw = {
        "metadata": {"name": "s", "namespace": "team", "uid": "u", "generation": 1, "resourceVersion": "5"},
        "spec": {},
        "status": {"phase": "Ready"},
    }
    body = kopf.Body(raw)
    loop = SessionLoop()
    written = AgentSessionStatus.model_validate({"phase": "Paused"})
    loop.unseen_write = ("5", written)
    assert loop.latest(body).status.phase == "Paused"
    raw["metadata"]["resourceVersion"] = "6"  # type: ignore[index]
    raw["status"] = {"phase": "Sleeping"}
    assert loop.latest(body).status.phase == "Sleeping" and loop.unseen_write is None
