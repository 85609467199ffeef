"""What the operator's log says of kopf's own work: a refused Event is a warning, not an error."""

from __future__ import annotations

import logging

import pytest

from sandbox_operator.registry import EVENT_POSTER_LOGGER, events_are_auxiliary


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
