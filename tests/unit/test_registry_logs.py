"""What the operator's log says of kopf's own work: a refused Event is a warning, not an error; lines
that say nothing to act on are kept at DEBUG."""

from __future__ import annotations

import logging

import pytest

from sandbox_operator.registry import (
    EVENT_POSTER_LOGGER,
    SESSION_FINALIZER,
    SESSION_LOOP,
    TRACKING_HANDLER,
    events_are_auxiliary,
    quiet_kopf_lines,
)


def test_a_refused_event_is_logged_as_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    poster = logging.getLogger(EVENT_POSTER_LOGGER)
    poster.addFilter(events_are_auxiliary)
    try:
        with caplog.at_level(logging.DEBUG, logger=EVENT_POSTER_LOGGER):
            poster.error("Request attempt #1/1 failed; escalating: POST .../events -> 403")
            poster.debug("Request attempt #2: POST .../events")
    finally:
        poster.removeFilter(events_are_auxiliary)
    assert [record.levelname for record in caplog.records] == ["WARNING", "DEBUG"]


def test_a_loop_cancelled_while_its_session_goes_and_a_tracking_success_say_nothing_at_info(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """kopf cancels a loop that waits on a call when its session is deleted: expected, not a fault."""
    objects = logging.getLogger("kopf.objects")
    objects.addFilter(quiet_kopf_lines)
    try:
        with caplog.at_level(logging.INFO, logger="kopf.objects"):
            objects.warning(f"Daemon '{SESSION_LOOP}' is cancelled. Will escalate.")
            objects.info(f"Handler '{TRACKING_HANDLER}' succeeded.")
            objects.warning("Daemon 'some-other' is cancelled. Will escalate.")
            objects.info(f"Handler '{SESSION_FINALIZER}' succeeded.")
    finally:
        objects.removeFilter(quiet_kopf_lines)
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "Daemon 'some-other' is cancelled. Will escalate."),
        ("INFO", f"Handler '{SESSION_FINALIZER}' succeeded."),
    ]
