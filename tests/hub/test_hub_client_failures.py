"""The Hub client's reading of the Hub's failures, against the emulator: what a 401/404 is, whether
the token can still see an owner, a duplicate that missed its send deadline, the health status."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from sandbox_operator.core.model import FailureKind, HealthResult
from sandbox_operator.hub.client import HubClient
from sandbox_testbench.hubsim import HubSimAdmin, HubSimServer
from tests.support.hub import duplicate, failure_of


def test_a_not_found_on_a_write_is_a_hub_failure_not_an_escaping_exception(
    client: HubClient, template: str
) -> None:
    missing = f"alice/ags-{uuid.uuid4()}"
    for call in (
        client.request_hardware(missing, "cpu-basic", None),
        client.restart(missing),
        client.set_token(missing, "sbx_new"),
    ):
        assert failure_of(call).failure.kind is FailureKind.NOT_FOUND


def test_a_401_is_told_apart_from_a_404(client: HubClient, admin: HubSimAdmin, template: str) -> None:
    space_id = f"alice/ags-{uuid.uuid4()}"
    duplicate(client, template, space_id)
    admin.add_fault("hardware", 401, count=1)
    assert (
        failure_of(client.request_hardware(space_id, "t4-small", 900)).failure.kind
        is FailureKind.UNAUTHORIZED
    )
    admin.add_fault("hardware", 404, count=1)
    assert (
        failure_of(client.request_hardware(space_id, "t4-small", 900)).failure.kind is FailureKind.NOT_FOUND
    )


def test_owner_access_follows_whoami_user_and_orgs_and_is_cached(
    client: HubClient, admin: HubSimAdmin
) -> None:
    admin.clear_calls()
    asyncio.run(client.check_owner_access("alice/ags-1"))
    asyncio.run(client.check_owner_access("acme/ags-2"))  # alice's org
    lost = failure_of(client.check_owner_access("bob/ags-3"))
    assert lost.failure.kind is FailureKind.ACCESS_LOST
    assert "bob" in lost.failure.message and "acme" in lost.failure.message
    assert [call["route"] for call in admin.calls()] == ["whoami"]


def test_a_private_space_the_token_cannot_see_answers_not_found(
    client: HubClient, admin: HubSimAdmin
) -> None:
    """The reason a 404 needs the access check: the emulator hides foreign private Spaces, as the Hub does."""
    admin.plant_space("bob/ags-hidden", private=True)
    assert asyncio.run(client.space("bob/ags-hidden")) is None
    assert asyncio.run(client.ownership("bob/ags-hidden")) is None


def test_a_duplicate_past_its_send_deadline_is_never_sent(
    client: HubClient, admin: HubSimAdmin, template: str
) -> None:
    space_id = f"alice/ags-{uuid.uuid4()}"
    admin.clear_calls()
    late = failure_of(
        client.duplicate(
            template=template,
            space_id=space_id,
            private=True,
            token="t",
            secrets={},
            session_uid="u",
            session_ref="team/s",
            send_by=datetime.now(UTC) - timedelta(seconds=1),
        )
    )
    assert late.failure.kind is FailureKind.UNAVAILABLE and "not sent" in late.failure.message
    assert admin.calls() == []
    duplicate(client, template, space_id, send_by=datetime.now(UTC) + timedelta(seconds=30))
    assert [call["route"] for call in admin.calls()] == ["duplicate"]


def test_health_carries_the_status_the_sandbox_answered(
    client: HubClient, admin: HubSimAdmin, hub: HubSimServer, template: str
) -> None:
    space_id = f"alice/ags-{uuid.uuid4()}"
    duplicate(client, template, space_id)
    view = asyncio.run(client.space(space_id))
    assert view is not None and view.sandbox_url is not None
    url = view.sandbox_url

    async def both() -> tuple[HealthResult, HealthResult]:
        # Past the edge of the private Space with the owner's token; the sandbox checks its own.
        return await client.health(url, "sbx_t", "hf_alice"), await client.health(
            url, "sbx_wrong", "hf_alice"
        )

    healthy, rejected = asyncio.run(both())
    assert healthy.ok and healthy.status == 200
    assert not rejected.ok and rejected.status == 401
