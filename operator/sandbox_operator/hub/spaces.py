"""What the Hub shows of a Space, as the operator reads it: its view for the core, a listing of an
owner's Spaces, and the ownership marker in its variables."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from huggingface_hub import SpaceInfo

from sandbox_operator.config.sandbox_url import sandbox_url
from sandbox_operator.core.model import SpaceView

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ownership:
    """A Space's ownership marker variables; "" where a variable is absent."""

    session_uid: str
    cluster_id: str
    session: str


@dataclass(frozen=True)
class ListedSpace:
    """A Space as the list endpoint shows it: enough to pick sweeper candidates without more calls."""

    space_id: str
    created_at: datetime | None


@dataclass(frozen=True)
class Listing:
    """One owner's Spaces as one listing showed them, and when its first page left the gate for
    the Hub (monotonic): what this operator did before then shows in it; a listing that waited at
    the gate behind other calls is as fresh as its sending, not as its asking."""

    taken_at: float
    spaces: Mapping[str, SpaceView]
    #: Hub API calls it took (its pages): what the next listing of the owner will cost.
    calls: int = 1


def space_view(info: SpaceInfo, endpoint: str, app_template: str) -> SpaceView:
    """The Space as the core sees it; its app's address only from the operator's template and the
    Space's own subdomain (never the Hub's `host`, which a listing does not carry)."""
    runtime = info.runtime
    app_url = sandbox_url(app_template, info.subdomain)
    if app_url is None and info.subdomain:
        log.warning("Space %s: the Hub's subdomain %r is not a DNS label; its app is not addressed",
                    info.id, info.subdomain)  # fmt: skip
    stage = str(runtime.stage) if runtime is not None else "UNKNOWN"
    return SpaceView(
        space_id=info.id,
        stage=stage,
        current_hardware=str(runtime.hardware) if runtime is not None and runtime.hardware else None,
        requested_hardware=(
            str(runtime.requested_hardware) if runtime is not None and runtime.requested_hardware else None
        ),
        private=info.private,
        url=f"{endpoint}/spaces/{info.id}",
        sandbox_url=app_url,
        sleep_time=runtime.sleep_time if runtime is not None else None,
    )
