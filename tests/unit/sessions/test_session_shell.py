"""The session shell in process (sessions/observe, apply, loop, failures) on fake Hub and Kubernetes
adapters: what it writes and asks for over a session's life, each pass run as kopf's daemon runs it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import kopf
import pytest
from kopf._core.intents.stoppers import DaemonStopper, DaemonStoppingReason

from sandbox_operator import api
from sandbox_operator.core.model import FailureKind, HubFailure
from sandbox_operator.hub.errors import HubError
from sandbox_operator.runtime import Runtime
from sandbox_operator.sessions import loop
from sandbox_operator.sessions.apply import DELETING_EVENT_BACKOFFS
from tests.support.shell import CONFIG, FakeHub, FakeKube, kopf_events, runtime

NS, NAME = "team-a", "demo"
PAID = {"hardware": "a10g-small", "approval": {"hardware": "a10g-small", "approvedBy": "alice"}}


#: How often `_until` looks.
POLL = 0.01


async def _until(check: Callable[[], object], *, seconds: float) -> None:
    """Until `check` is truthy, or `seconds` pass (the assertion after it then says what is missing)."""
    for _ in range(round(seconds / POLL)):
        if check():
            return
        await asyncio.sleep(POLL)


class Shell:
    """One session's shell: its passes as the daemon runs them, its finalizer as kopf retries it."""

    def __init__(self, spec: dict[str, Any] | None = None) -> None:
        self.hub, self.kube = FakeHub(), FakeKube()
        self.rt: Runtime = runtime(self.hub, self.kube)
        self.kube.add(api.PLURAL, NS, NAME, spec or {})
        self.loop = loop.SessionLoop()

    @property
    def status(self) -> dict[str, Any]:
        return self.kube.objects[(api.PLURAL, NS, NAME)]["status"]

    def ready(self) -> tuple[str, str]:
        return self.condition("Ready")

    def condition(self, kind: str) -> tuple[str, str]:
        condition = self._condition(kind)
        return condition["status"], condition["reason"]

    def ready_message(self) -> str:
        return str(self._condition("Ready")["message"])

    def _condition(self, kind: str) -> dict[str, Any]:
        return next(c for c in self.status["conditions"] if c["type"] == kind)

    async def run(self, passes: int = 1) -> None:
        for _ in range(passes):
            await loop.reconcile(self.rt, self.kube.body(api.PLURAL, NS, NAME), self.loop)

    async def until_ready(self) -> None:
        for _ in range(6):
            await self.run()
            if self.ready()[0] == "True":
                return
            self.hub.finish_builds()
        raise AssertionError(f"not Ready: {self.ready()}")

    async def finalize(self) -> None:
        await asyncio.wait_for(loop.finalize(self.rt, self.kube.body(api.PLURAL, NS, NAME)), timeout=10)


def test_a_session_gets_a_space_becomes_ready_and_its_space_goes_with_it() -> None:
    asyncio.run(_lifecycle())


async def _lifecycle() -> None:
    shell = Shell()
    with kopf_events() as events:
        await shell.run()
        [space_id] = shell.hub.called("duplicate")
        assert shell.status["spaceId"] == space_id and shell.status["phase"] == "Starting"
        secret = shell.kube.data(NS, shell.status["connectionSecret"])
        assert secret is not None and secret["token"] == shell.hub.tokens[space_id]  # the Space's own token
        assert secret["hubToken"] == "hf_read"  # the platform's read token, for the private Space's edge
        await shell.until_ready()
        sandbox = shell.hub.spaces[space_id].sandbox_url
        assert shell.ready() == ("True", "SandboxReady") and shell.status["phase"] == "Ready"
        assert shell.kube.data(NS, shell.status["connectionSecret"])["sandboxUrl"] == sandbox
        assert shell.hub.called("health") == [sandbox]
        assert shell.hub.called("duplicate") == [space_id]  # one create in all
        shell.kube.mark_deleted(api.PLURAL, NS, NAME)
        await shell.finalize()
    assert shell.hub.called("delete") == [space_id] and space_id not in shell.hub.spaces
    assert events.reasons() == ["SandboxReady", "SpaceDeleted"]


def test_a_finalizer_the_hub_fails_says_so_and_tries_again_in_itself() -> None:
    asyncio.run(_failing_delete())


async def _failing_delete() -> None:
    """A Hub answering 503 to the delete is the deletion's normal course, not a handler failure (a
    kopf retry, which kopf logs at ERROR level): the finalizer writes why it waits, waits its backoff
    and tries again, and lets the session go once the Space is deleted."""
    shell = Shell()
    shell.rt.config = CONFIG.model_copy(update={"backoff_base": 0.05})
    with kopf_events() as events:
        await shell.until_ready()
        [space_id] = shell.hub.called("duplicate")
        shell.hub.failing["delete"] = HubError("delete", HubFailure(FailureKind.UNAVAILABLE, "503"))
        shell.kube.mark_deleted(api.PLURAL, NS, NAME)
        finalizing = asyncio.ensure_future(shell.finalize())
        await _until(lambda: len(shell.hub.called("delete")) >= 2, seconds=5.0)  # its second attempt
        assert not finalizing.done() and shell.ready() == ("False", "HubUnavailable")
        del shell.hub.failing["delete"]
        await finalizing
    assert space_id not in shell.hub.spaces
    # One Warning per failed attempt (each says which, and when the next one is).
    assert events.reasons() == ["SandboxReady", "HubUnavailable", "HubUnavailable", "SpaceDeleted"]
    # A deleting session's Events are tried once: its namespace may be being deleted, refusing them.
    assert [event.backoffs for event in events.posted[1:]] == [DELETING_EVENT_BACKOFFS] * 3


def test_an_approved_paid_flavor_is_requested_from_the_hub_and_paid_for() -> None:
    asyncio.run(_paid_switch())


async def _paid_switch() -> None:
    shell = Shell()
    with kopf_events() as events:
        await shell.until_ready()
        [space_id] = shell.hub.called("duplicate")
        shell.kube.respec(api.PLURAL, NS, NAME, **PAID)  # the approver's patch: flavor and approval
        await shell.run()
        assert shell.hub.called("request_hardware") == [f"{space_id} a10g-small"]
        assert shell.status["hardware"] == {"current": "cpu-basic", "requested": "a10g-small"}
        assert shell.ready() == ("False", "Building")
        await shell.until_ready()  # the Hub moved it
    assert shell.status["hardware"] == {"current": "a10g-small", "requested": "a10g-small"}
    assert shell.status["approvedBy"] == "alice" and shell.status["spend"]["usdPerHour"] == 1.0
    assert shell.status["paidPeriod"]["hardware"] == "a10g-small"
    assert shell.hub.called("request_hardware") == [f"{space_id} a10g-small"]  # asked once
    assert events.reasons() == ["SandboxReady", "Approved", "SandboxReady"]


def test_a_hub_failure_becomes_a_condition_and_an_event_and_is_retried() -> None:
    asyncio.run(_hub_failure())


async def _hub_failure() -> None:
    shell = Shell()
    down = HubFailure(FailureKind.UNAVAILABLE, "503 Service Unavailable")
    shell.hub.failing["duplicate"] = HubError("duplicate", down)
    with kopf_events() as events:
        await shell.run()  # no exception: the failure is the session's status
        assert shell.ready() == ("False", "HubUnavailable") and shell.status["phase"] == "Failed"
        assert shell.status["failures"] == 1 and shell.status["nextRetryTime"] is not None
        assert shell.status["duplicateFailure"] == "503 Service Unavailable"
        assert events.reasons() == ["HubUnavailable"]
        del shell.hub.failing["duplicate"]
        await shell.until_ready()
    # The create may have landed: the retry looks for the Space before it asks for it again.
    assert [name for name, _ in shell.hub.calls if name in ("duplicate", "space")][:3] == [
        "duplicate",
        "space",
        "duplicate",
    ]
    assert shell.status["failures"] is None and shell.status["duplicateFailure"] is None
    assert events.reasons() == ["HubUnavailable", "SandboxReady"]


def test_a_session_asks_for_no_space_before_its_finalizer_is_on() -> None:
    asyncio.run(_finalizer_first())


async def _finalizer_first() -> None:
    shell = Shell()
    body = shell.kube.body(api.PLURAL, NS, NAME)
    del body["metadata"]["finalizers"]  # kopf's finalizer patch has not come back yet
    memo = kopf.Memo(session_loop=shell.loop)
    stopper = DaemonStopper()  # what kopf hands its daemons as `stopped`
    daemon = asyncio.create_task(loop.run_session(shell.rt, body, memo, stopper.async_waiter))
    await asyncio.sleep(0.2)
    assert shell.hub.called("duplicate") == [] and shell.status == {}
    body["metadata"]["finalizers"] = [api.FINALIZER]  # the watch event of that patch
    shell.loop.finalizer_seen.set()
    await _until(lambda: shell.hub.called("duplicate"), seconds=2.5)
    assert shell.hub.called("duplicate") and shell.status["spaceId"]
    stopper.set(DaemonStoppingReason.RESOURCE_DELETED)
    await asyncio.wait_for(daemon, 5)


def test_a_loop_stopped_while_it_waits_for_its_finalizer_ends_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(loop, "FINALIZER_WAIT", 0.5)
    asyncio.run(_stopped_waiting())


async def _stopped_waiting() -> None:
    """kopf stops the daemon (the operator shutting down, the session deleted) while its create waits
    for the finalizer: the pass ends now, without the create, not after the wait (kopf would cancel
    it half way after its cancellation timeout)."""
    shell = Shell()
    shell.rt.config = CONFIG.model_copy(update={"backoff_base": 0.05})
    body = shell.kube.body(api.PLURAL, NS, NAME)
    del body["metadata"]["finalizers"]
    stopper = DaemonStopper()
    memo = kopf.Memo(session_loop=shell.loop)
    daemon = asyncio.create_task(loop.run_session(shell.rt, body, memo, stopper.async_waiter))
    await asyncio.sleep(0.2)
    stopper.set(DaemonStoppingReason.OPERATOR_EXITING)
    await asyncio.wait_for(daemon, 1)
    assert shell.hub.called("duplicate") == [] and shell.status.get("duplicateRequestedTime") is None
    # A daemon kopf starts again on the same memo waits as before (the stop was the last one's), and
    # says so when the finalizer does not come.
    with kopf_events():
        again = asyncio.create_task(loop.run_session(shell.rt, body, memo, DaemonStopper().async_waiter))
        await _until(
            lambda: shell.status.get("conditions") and shell.ready()[1] == "FinalizerMissing", seconds=2.5
        )
        assert shell.ready() == ("False", "FinalizerMissing") and shell.hub.called("duplicate") == []
        body["metadata"]["finalizers"] = [api.FINALIZER]
        shell.loop.finalizer_seen.set()
        await _until(lambda: shell.hub.called("duplicate"), seconds=2.5)
        assert len(shell.hub.called("duplicate")) == 1
        again.cancel()


def test_a_finalizer_that_does_not_come_is_reported_and_still_no_space_is_asked_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(loop, "FINALIZER_WAIT", 0.1)
    asyncio.run(_finalizer_missing())


async def _finalizer_missing() -> None:
    shell = Shell()
    body = shell.kube.body(api.PLURAL, NS, NAME)
    del body["metadata"]["finalizers"]  # kopf's finalizer patch was refused
    with kopf_events() as events:
        await loop.reconcile(shell.rt, body, shell.loop)
        assert shell.ready() == ("False", "FinalizerMissing") and api.FINALIZER in shell.ready_message()
        assert shell.status["failures"] == 1 and shell.status["nextRetryTime"] is not None
        assert shell.condition("Stalled") == ("True", "FinalizerMissing")  # someone has to fix it
        assert events.reasons() == ["FinalizerMissing"] and shell.hub.called("duplicate") == []
        body["metadata"]["finalizers"] = [api.FINALIZER]  # kopf's retry went through
        shell.loop.finalizer_seen.set()
        await shell.until_ready()
    assert len(shell.hub.called("duplicate")) == 1 and shell.status["failures"] is None
    assert shell.condition("Stalled")[0] == "False"
    assert events.reasons() == ["FinalizerMissing", "SandboxReady"]
