"""The operator's Hub client layer against the emulator: pacing, retries, the transient 404."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

from huggingface_hub import set_client_factory
from huggingface_hub.utils._http import default_client_factory
from prometheus_client import REGISTRY

from sandbox_operator.core.model import FailureKind
from sandbox_operator.hub.client import HubClient
from sandbox_operator.hub.gate import Priority
from sandbox_testbench.hubsim import HubSimAdmin, HubSimServer
from tests.support.hub import client_for, duplicate, failure_of


def test_a_429_pauses_every_call_and_sends_nothing_until_retry_after(
    client: HubClient, admin: HubSimAdmin, template: str
) -> None:
    admin.add_fault("*", 429, count=1, retry_after=30)
    admin.clear_calls()
    first = failure_of(client.space(template))
    assert first.failure.kind is FailureKind.RATE_LIMITED and first.failure.retry_after == 30
    second = failure_of(client.whoami())
    assert second.failure.kind is FailureKind.RATE_LIMITED
    assert second.failure.retry_after is not None and 29 < second.failure.retry_after <= 30
    assert "paused" in second.failure.message
    assert len(admin.calls()) == 1


def test_a_5xx_on_a_read_is_retried_within_the_call(
    client: HubClient, admin: HubSimAdmin, template: str
) -> None:
    def retries() -> float:
        return REGISTRY.get_sample_value("sandbox_operator_hub_retries_total", {"route": "space_info"}) or 0.0

    before = retries()
    admin.add_fault("space_info", 503, count=2)
    admin.clear_calls()
    view = asyncio.run(client.space(template))
    assert view is not None and view.stage == "RUNNING"
    assert [call["status"] for call in admin.calls()] == [503, 503, 200]
    assert retries() == before + 2


def test_writes_are_not_retried(client: HubClient, admin: HubSimAdmin, template: str) -> None:
    space_id = f"alice/ags-{uuid.uuid4()}"
    duplicate(client, template, space_id)
    admin.add_fault("restart", 503, count=1)
    admin.clear_calls()
    assert failure_of(client.restart(space_id)).failure.kind is FailureKind.UNAVAILABLE
    assert [call["route"] for call in admin.calls()] == ["restart"]


def test_a_404_right_after_our_own_duplicate_reads_as_no_space_not_as_an_error(
    hub_factory: Callable[..., HubSimServer], template: str
) -> None:
    """Whether that means "not visible yet" is the core's call, from status.duplicateRequestedTime."""
    hub = hub_factory(transient_error_seconds=30)
    client = client_for(hub.url, template)
    try:
        space_id = f"alice/ags-{uuid.uuid4()}"
        duplicate(client, template, space_id)
        assert asyncio.run(client.space(space_id)) is None
    finally:
        asyncio.run(client.close())
        set_client_factory(default_client_factory)


def test_listing_ownership_and_release(client: HubClient, template: str) -> None:
    uid = str(uuid.uuid4())
    space_id = f"alice/ags-{uid}"
    duplicate(client, template, space_id, uid)
    listed = asyncio.run(client.list_spaces("alice", "ags-"))
    assert [space.space_id for space in listed] == [space_id]
    assert listed[0].created_at is not None
    ownership = asyncio.run(client.ownership(space_id))
    assert ownership is not None and (ownership.session_uid, ownership.session) == (uid, "team/s")
    assert ownership.cluster_id == "c1"
    asyncio.run(client.release(space_id))
    released = asyncio.run(client.ownership(space_id))
    assert released is not None and (released.session_uid, released.cluster_id) == (uid, "")
    asyncio.run(client.delete(space_id))
    assert asyncio.run(client.ownership(space_id)) is None


def test_missing_template_and_foreign_owner_are_told_apart(client: HubClient, template: str) -> None:
    missing = failure_of(
        client.duplicate(
            template="alice/no-such-template",
            space_id=f"alice/ags-{uuid.uuid4()}",
            private=True,
            token="t",
            secrets={},
            session_uid="u",
            session_ref="team/s",
        )
    )
    assert missing.failure.kind is FailureKind.TEMPLATE_NOT_FOUND
    foreign = failure_of(
        client.duplicate(
            template=template,
            space_id=f"bob/ags-{uuid.uuid4()}",
            private=True,
            token="t",
            secrets={},
            session_uid="u",
            session_ref="team/s",
        )
    )
    assert foreign.failure.kind is FailureKind.FORBIDDEN


def test_the_fleet_listing_gives_each_space_its_runtime_in_pages_of_500_as_observation(
    hub_factory: Callable[..., HubSimServer], template: str
) -> None:
    """One paginated listing per owner, with each Space's runtime, waiting behind
    deletions and creates at the gate (it is observation)."""
    hub = hub_factory(page_size=2, page_size_max=500)
    for index in range(7):
        hub.admin.plant_space(f"alice/ags-{index}", private=True, stage="PAUSED" if index == 3 else "RUNNING")
    hub.admin.plant_space("alice/other", private=True)
    client = client_for(hub.url, template)
    priorities: list[Priority] = []
    before = client.gate.before_request

    def recording(
        priority: Priority = Priority.OBSERVE, not_after: float | None = None, tenant: str = ""
    ) -> None:
        priorities.append(priority)
        time.sleep(0.2)  # waits at the gate behind other calls
        before(priority, not_after, tenant)

    client.gate.before_request = recording  # type: ignore[method-assign]
    asked = time.monotonic()
    try:
        listing = asyncio.run(client.list_owner_spaces("alice", "ags-"))
    finally:
        asyncio.run(client.close())
        set_client_factory(default_client_factory)
    # As fresh as its sending (after its wait at the gate), not as its asking: what this operator
    # did while it waited shows in it.
    assert asked + 0.2 <= listing.taken_at <= time.monotonic()
    listed = listing.spaces
    assert sorted(listed) == [f"alice/ags-{index}" for index in range(7)]
    assert listed["alice/ags-3"].stage == "PAUSED" and listed["alice/ags-0"].stage == "RUNNING"
    assert listed["alice/ags-0"].current_hardware == "cpu-basic" and listed["alice/ags-0"].private
    # No `host` in a listing: each app's address is the operator's template and the Space's subdomain.
    assert listed["alice/ags-0"].sandbox_url == f"{hub.url}/_sandbox/alice-ags-0"
    assert [c["route"] for c in hub.admin.calls()] == ["list_spaces"]  # 7 Spaces: one page of up to 500
    assert listing.calls == 1  # what the next listing will cost the Hub's window
    assert priorities == [Priority.OBSERVE]
