"""An idle pause is written only onto the spec it was decided on: when the user changes the spec during
the pass (a longer pauseAfterSeconds), the pause, its status record and its Events are dropped, and the
loop decides again on the new spec."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from sandbox_operator.core.conditions import EventNote, rfc3339
from sandbox_operator.core.lifecycle import decide
from sandbox_operator.core.model import HealthResult, Observation, PauseSpace, Session
from sandbox_operator.k8s.client import KubeClient, status_patch
from sandbox_operator.k8s.transport import ApiError, KubeApi
from sandbox_operator.runtime import Runtime
from sandbox_operator.sessions import loop
from tests.support.core import CONFIG, RECORDED, UID, new_session, observed

#: What the API server answers a JSON patch whose `test` operation fails (and an invalid object too).
INVALID = ApiError(
    422, "Unprocessable Entity", "the server rejected our request due to an error in our request"
)


class CustomObjects:
    """Stands in for KubeApi: answers patches of the session as an API server at `generation` would."""

    def __init__(self, generation: int, error: ApiError | None = None) -> None:
        self.generation = generation
        self.error = error
        self.patches: list[Any] = []

    async def patch_namespaced_custom_object(self, *args: Any) -> dict[str, Any]:
        patch = args[-1]
        self.patches.append(patch)
        if self.error is not None:
            raise self.error
        if patch[0] != {"op": "test", "path": "/metadata/generation", "value": self.generation}:
            raise INVALID
        return {}

    async def list_namespaced_custom_object(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return {"items": [{"metadata": {"name": "demo", "generation": self.generation}}]}


def test_the_pause_is_written_only_onto_the_generation_it_was_decided_on() -> None:
    api = CustomObjects(generation=3)
    kube = KubeClient(cast(KubeApi, api))
    assert asyncio.run(kube.pause_session("team-a", "demo", 3)) is True
    assert api.patches[-1][1] == {"op": "add", "path": "/spec/paused", "value": True}
    assert asyncio.run(kube.pause_session("team-a", "demo", 2)) is False  # the spec changed meanwhile


@pytest.mark.parametrize("refusal", [ApiError(403, "Forbidden"), INVALID])
def test_other_refusals_of_the_pause_are_not_taken_for_a_changed_spec(refusal: ApiError) -> None:
    """Forbidden, or invalid while the spec is the one the pause was decided on."""
    kube = KubeClient(cast(KubeApi, CustomObjects(generation=1, error=refusal)))
    with pytest.raises(ApiError):
        asyncio.run(kube.pause_session("team-a", "demo", 1))


class Kube:
    """The session's API as the shell uses it: the user set pauseAfterSeconds to 600 (generation 2)
    while the pass decided on 30 s (generation 1)."""

    def __init__(self, fresh: dict[str, Any]) -> None:
        self.fresh = fresh
        self.status_writes: list[dict[str, Any]] = []
        self.pauses: list[int] = []

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        self.status_writes.append(status)
        return {}

    async def pause_session(self, namespace: str, name: str, generation: int) -> bool:
        self.pauses.append(generation)
        return generation == self.fresh["metadata"]["generation"]

    async def read_session(self, namespace: str, name: str) -> dict[str, Any]:
        self.fresh["status"] = self.status_writes[-1]
        return self.fresh


class Hub:
    def __init__(self) -> None:
        self.paused: list[str] = []

    async def pause(self, space_id: str) -> None:
        self.paused.append(space_id)


class Observer:
    def acted(self, space_id: str) -> None:
        pass


def test_a_pause_decided_on_a_changed_spec_is_dropped_with_its_events_and_decided_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = datetime.now(UTC)
    unused = observed(health=HealthResult(True, "200 OK", 200, last_activity=now - timedelta(seconds=300)))
    created = new_session({"idle": {"pauseAfterSeconds": 30}}, RECORDED)
    ready = decide(created, unused, CONFIG, now - timedelta(hours=1))
    session = replace(created, status=ready.status)  # Ready for an hour
    fresh = {
        "metadata": {"name": "demo", "namespace": "team-a", "uid": UID, "generation": 2},
        "spec": {"idle": {"pauseAfterSeconds": 600}},
    }
    kube, hub = Kube(fresh), Hub()
    posted: list[EventNote] = []

    async def observe(rt: Any, session: Session, **_: Any) -> Observation:
        return unused

    monkeypatch.setattr(loop, "observe_session", observe)
    monkeypatch.setattr(loop, "post_events", lambda body, notes: posted.extend(notes))
    rt = Runtime(
        CONFIG,
        hub=cast(Any, hub),
        kube=cast(Any, kube),
        prices=cast(Any, None),
        observer=cast(Any, Observer()),
        prober=cast(Any, None),
        secrets=cast(Any, None),
    )
    decided = decide(session, unused, CONFIG, now)
    assert isinstance(decided.action, PauseSpace)  # what the pass decides on 30 s

    plan = asyncio.run(loop.drive(rt, {}, session))

    assert kube.pauses == [1] and hub.paused == []
    assert kube.status_writes[-1] == status_patch(session.status)  # the pause's record is taken back
    assert not any(note.reason == "IdlePaused" or "30s" in note.message for note in posted), posted
    assert plan.action is None and plan.status.paused_since is None
    assert plan.status.idle_since == rfc3339(now - timedelta(seconds=300))  # idle, under the new 600 s
