"""Driving the operator's Hub client against the emulator."""

from __future__ import annotations

import asyncio
from datetime import datetime

from sandbox_operator.hub import HubClient


def duplicate(
    client: HubClient, template: str, space_id: str, uid: str = "u1", send_by: datetime | None = None
) -> None:
    """Duplicate `template` as the private Space of session `team/s` (UID `uid`), as the operator does."""
    asyncio.run(
        client.duplicate(
            template=template,
            space_id=space_id,
            private=True,
            token="sbx_t",
            secrets={},
            session_uid=uid,
            session_ref="team/s",
            send_by=send_by,
        )
    )
