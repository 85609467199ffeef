"""The one place the operator talks to the Hugging Face Hub.

Every Hub call goes through `HubClient`, which runs the unmodified `huggingface_hub`
client on a small bounded thread pool (the client is synchronous; deletions have a pool of
their own, so calls waiting at the gate never hold them back) and turns its exceptions into
`HubError`s the decision core understands (hub/errors.py). Every HTTP request the client sends,
pagination included, first passes the process-wide `HubGate` in an httpx request hook
(hub/transport.py). Idempotent reads are retried a few times in the call after a 5xx, timeout or
reset; writes are not, the decision core requeues the session with backoff instead. The sandbox
health check goes to the Space's app, not the Hub API (hub/sandbox_health.py).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from typing import TypeVar

import aiohttp
from huggingface_hub import HfApi, SpaceInfo, set_client_factory
from huggingface_hub.utils._headers import build_hf_headers
from huggingface_hub.utils._pagination import paginate

from sandbox_operator.api import SANDBOX_TOKEN_SECRET, Hardware
from sandbox_operator.config.settings import OperatorConfig
from sandbox_operator.core.model import (
    MARKER_CLUSTER_ID,
    MARKER_SESSION,
    MARKER_SESSION_UID,
    FailureKind,
    HealthResult,
    HubFailure,
    SpaceView,
)
from sandbox_operator.fairness import CURRENT_TURN, FairLimiter
from sandbox_operator.hub.errors import HubError, classify, duplicate_failure
from sandbox_operator.hub.gate import HubGate, NotLeader, Priority
from sandbox_operator.hub.prices import hourly_prices
from sandbox_operator.hub.sandbox_health import check_health
from sandbox_operator.hub.spaces import ListedSpace, Listing, Ownership, space_view
from sandbox_operator.hub.transport import client_factory, in_thread, last_sent
from sandbox_operator.observability import metrics

log = logging.getLogger(__name__)
T = TypeVar("T")
#: First in-call retry delay of an idempotent read; doubles per attempt, with jitter.
READ_RETRY_BASE = 0.5
#: Spaces per page of the fleet listing: what huggingface.js's listSpaces asks the Hub for
#: (packages/hub/src/lib/list-spaces.ts, `limit: "500"`); 1,000 Spaces are two calls.
LIST_PAGE_SIZE = 500
#: The properties the fleet listing asks for: the runtime (stage, hardware, sleep time), privacy, and
#: the subdomain the Space's app answers at (`host` is not expandable: config/sandbox_url.py builds it).
LIST_EXPAND = ("runtime", "private", "subdomain")
#: Seconds a whoami answer (the token's user and orgs) is reused; the Hub rate-limits whoami hard.
WHOAMI_CACHE_SECONDS = 60.0


class HubClient:
    """Async facade over `HfApi` for the calls the operator needs, and nothing more."""

    def __init__(self, config: OperatorConfig) -> None:
        self.gate = HubGate(config.hub_rate, config.hub_burst)
        set_client_factory(client_factory(config.hub_timeout, self.gate))
        self._api = HfApi(endpoint=config.hub_endpoint, token=config.hub_token or None)
        self._endpoint = config.hub_endpoint.rstrip("/")
        self._config = config
        self._pool = ThreadPoolExecutor(max_workers=config.hub_concurrency, thread_name_prefix="hub")
        #: Who gets the next of `_pool`'s workers: sessions created first, namespaces in turn.
        self._workers = FairLimiter(config.hub_concurrency)
        #: Deletions never queue behind calls that wait at the gate in every worker of `_pool`.
        self._urgent_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="hub-urgent")
        self._http: aiohttp.ClientSession | None = None
        #: The last whoami answer (monotonic time, user, orgs), reused for WHOAMI_CACHE_SECONDS.
        self._whoami: tuple[float, str, frozenset[str]] | None = None

    async def _call(
        self,
        route: str,
        fn: Callable[[], T],
        *,
        idempotent: bool = False,
        priority: Priority = Priority.CHANGE,
        not_after: float | None = None,
    ) -> T:
        """`not_after` (monotonic): a request still waiting at the gate then is not sent at all."""
        loop = asyncio.get_running_loop()
        retries = self._config.hub_read_retries if idempotent else 0
        urgent = priority is Priority.DELETE
        turn = CURRENT_TURN.get()
        run = in_thread(route, priority, fn, not_after, turn.namespace if turn is not None else "")
        for attempt in range(retries + 1):
            try:
                if urgent:
                    return await loop.run_in_executor(self._urgent_pool, run)
                async with self._workers.hold():  # the gate orders by priority among the workers
                    return await loop.run_in_executor(self._pool, run)
            except Exception as error:
                failure = classify(route, error)
                if failure.failure.kind is FailureKind.RATE_LIMITED:
                    # The pause may outlast this answer's Retry-After (another call's was longer).
                    wait = max(failure.failure.retry_after or 0.0, self.gate.paused_for())
                    failure = HubError(route, replace(failure.failure, retry_after=wait), sent=failure.sent)
                elif (
                    failure.failure.kind is FailureKind.UNAVAILABLE
                    and attempt < retries
                    and not isinstance(error, NotLeader)
                ):
                    metrics.HUB_RETRIES.labels(route).inc()
                    delay = READ_RETRY_BASE * 2**attempt * (0.5 + random.random())
                    log.debug("retrying %s in %.1fs: %s", route, delay, failure.failure.message)
                    await asyncio.sleep(delay)
                    continue
                raise failure from error
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def whoami(self) -> str:
        user, _ = await self._identity()
        return user

    async def _identity(self) -> tuple[str, frozenset[str]]:
        """The token's user and the orgs it belongs to (whoami-v2), cached briefly."""
        cached = self._whoami
        if cached is not None and time.monotonic() - cached[0] < WHOAMI_CACHE_SECONDS:
            return cached[1], cached[2]
        info = await self._call(
            "whoami", lambda: self._api.whoami(), idempotent=True, priority=Priority.OBSERVE
        )
        orgs = frozenset(str(org["name"]) for org in info.get("orgs") or [] if org.get("name"))
        self._whoami = (time.monotonic(), str(info["name"]), orgs)
        return self._whoami[1], self._whoami[2]

    async def check_owner_access(self, space_id: str) -> None:
        """Raise a HubAccessLost `HubError` unless the token can still see the owner namespace.

        The Hub answers 404 for a private Space the token cannot see, so "not found" proves the
        Space gone only while the owner is the token's user or one of its orgs (whoami-v2).
        """
        owner = space_id.split("/", 1)[0]
        user, orgs = await self._identity()
        if owner == user or owner in orgs:
            return
        seen = ", ".join(sorted(orgs)) or "none"
        raise HubError(
            "whoami",
            HubFailure(
                FailureKind.ACCESS_LOST,
                f"Space {space_id} is not found, but the Hub token (user {user}, orgs: {seen}) cannot see "
                f"namespace {owner}, so it may still exist; restore the token's access to {owner}",
            ),
        )

    async def hardware_prices(self) -> dict[str, float]:
        """USD per hour per flavor, from the Hub's live hardware catalog."""
        rows = await self._call(
            "hardware_catalog",
            lambda: self._api.list_spaces_hardware(),
            idempotent=True,
            priority=Priority.OBSERVE,
        )
        return hourly_prices(rows)

    async def space(self, space_id: str, *, with_marker: bool = False) -> SpaceView | None:
        """The Space's state, or None if it does not exist. `with_marker` also reads its ownership marker."""
        try:
            info = await self._call(
                "space_info",
                lambda: self._api.space_info(space_id),
                idempotent=True,
                priority=Priority.OBSERVE,
            )
        except HubError as error:
            if error.failure.kind is FailureKind.NOT_FOUND:
                return None
            raise
        view = space_view(info, self._endpoint, self._config.sandbox_url_template)
        if view.stage == "UNKNOWN":
            runtime = await self._call(
                "runtime",
                lambda: self._api.get_space_runtime(space_id),
                idempotent=True,
                priority=Priority.OBSERVE,
            )
            view = replace(
                view,
                stage=str(runtime.stage),
                current_hardware=runtime.hardware,
                requested_hardware=runtime.requested_hardware,
                sleep_time=runtime.sleep_time,
            )
        if with_marker:
            ownership = await self.ownership(space_id)
            if ownership is None:
                return None
            view = replace(view, marker_uid=ownership.session_uid, marker_cluster=ownership.cluster_id)
        return view

    async def ownership(self, space_id: str, *, deleting: bool = False) -> Ownership | None:
        """The Space's ownership marker, or None if the Space is gone; `deleting`: read for a deletion,
        which goes before observation at the gate."""
        try:
            variables = await self._call(
                "variables",
                lambda: self._api.get_space_variables(space_id),
                idempotent=True,
                priority=Priority.DELETE if deleting else Priority.OBSERVE,
            )
        except HubError as error:
            if error.failure.kind is FailureKind.NOT_FOUND:
                return None
            raise

        def value(key: str) -> str:
            entry = variables.get(key)
            return entry.value if entry is not None else ""

        return Ownership(value(MARKER_SESSION_UID), value(MARKER_CLUSTER_ID), value(MARKER_SESSION))

    async def list_spaces(self, owner: str, prefix: str) -> list[ListedSpace]:
        """The owner's Spaces whose name contains `prefix`: one paginated listing, no per-Space call."""

        def call() -> list[ListedSpace]:
            found = self._api.list_spaces(author=owner, search=prefix)
            return [ListedSpace(info.id, info.created_at) for info in found]

        return await self._call("list_spaces", call, idempotent=True, priority=Priority.OBSERVE)

    async def list_owner_spaces(self, owner: str, prefix: str) -> Listing:
        """The owner's Spaces whose name contains `prefix`, each with its runtime: one paginated call
        (`GET /api/spaces?author=…&search=…&expand=runtime&expand=private&expand=subdomain`, pages
        of LIST_PAGE_SIZE) for the whole fleet, where `space_info` would be one call per Space.
        Each view's sandbox URL comes from the Space's `subdomain` (`host` is not expandable)."""
        url = f"{self._endpoint}/api/spaces"
        params = {"author": owner, "search": prefix, "expand": list(LIST_EXPAND), "limit": LIST_PAGE_SIZE}

        def call() -> Listing:
            # huggingface_hub's own paginator: HfApi.list_spaces would stop after `limit` items in all.
            headers = build_hf_headers(token=self._config.hub_token or None)
            pages = iter(paginate(url, params, headers))
            first = next(pages, None)
            sent_at = last_sent()  # the first page's
            items = [] if first is None else [first, *pages]
            infos = (SpaceInfo(**item) for item in items)  # type: ignore[no-untyped-call]
            return Listing(
                sent_at,
                {
                    info.id: space_view(info, self._endpoint, self._config.sandbox_url_template)
                    for info in infos
                },
                calls=max(1, math.ceil(len(items) / LIST_PAGE_SIZE)),
            )

        return await self._call("list_spaces", call, idempotent=True, priority=Priority.OBSERVE)

    async def duplicate(
        self,
        *,
        template: str,
        space_id: str,
        private: bool,
        token: str,
        secrets: dict[str, str],
        session_uid: str,
        session_ref: str,
        send_by: datetime | None = None,
        sleep_time: int | None = None,
    ) -> None:
        """Create the Space on cpu-basic, with the token and marker in the same request.

        A request that cannot leave for the Hub by `send_by` is never sent, so the time a
        duplicate may still land after a session is deleted has a bound.
        """
        space_secrets = [{"key": SANDBOX_TOKEN_SECRET, "value": token}] + [
            {"key": key, "value": value} for key, value in sorted(secrets.items())
        ]
        variables = [
            {"key": MARKER_SESSION_UID, "value": session_uid},
            {"key": MARKER_CLUSTER_ID, "value": self._config.cluster_id},
            {"key": MARKER_SESSION, "value": session_ref},
        ]

        def call() -> None:
            self._api.duplicate_repo(
                from_id=template,
                to_id=space_id,
                repo_type="space",
                private=private,
                space_hardware=Hardware.CPU_BASIC.value,  # type: ignore[arg-type]
                space_secrets=space_secrets,
                space_variables=variables,
                space_sleep_time=sleep_time,
            )

        not_after = None
        if send_by is not None:
            not_after = time.monotonic() + (send_by - datetime.now(UTC)).total_seconds()
        try:
            await self._call("duplicate", call, not_after=not_after)
        except HubError as error:
            meant = duplicate_failure(error, template, space_id)
            if meant is None:
                raise
            raise meant from error

    async def set_token(self, space_id: str, token: str) -> None:
        await self._call("secrets", lambda: self._api.add_space_secret(space_id, SANDBOX_TOKEN_SECRET, token))

    async def claim_marker(self, space_id: str, session_uid: str, session_ref: str) -> None:
        """Move the ownership marker of a pooled Space to the session that claimed it, with this
        cluster's current id (the pool may have marked it under a previous one)."""
        for key, value in (
            (MARKER_SESSION_UID, session_uid),
            (MARKER_CLUSTER_ID, self._config.cluster_id),
            (MARKER_SESSION, session_ref),
        ):
            await self._set_variable(space_id, key, value)

    async def mark_cluster(self, space_id: str, cluster_id: str) -> None:
        """Rewrite the cluster id in the Space's ownership marker (the Hub's variable write adds or
        updates a key: docs/hub-fidelity.md F25)."""
        await self._set_variable(space_id, MARKER_CLUSTER_ID, cluster_id)

    async def _set_variable(self, space_id: str, key: str, value: str) -> None:
        await self._call("variables", partial(self._api.add_space_variable, space_id, key, value))

    async def request_hardware(self, space_id: str, flavor: str, sleep_time: int | None) -> None:
        """Move the Space to `flavor`; `sleep_time` goes with the request (paid hardware never sleeps
        otherwise)."""
        await self._call(
            "hardware",
            lambda: self._api.request_space_hardware(
                space_id,
                flavor,  # type: ignore[arg-type]
                sleep_time=sleep_time,
            ),
        )

    async def set_sleep_time(self, space_id: str, seconds: int) -> None:
        await self._call("sleeptime", lambda: self._api.set_space_sleep_time(space_id, seconds))

    async def restart(self, space_id: str) -> None:
        await self._call("restart", lambda: self._api.restart_space(space_id))

    async def pause(self, space_id: str) -> None:
        await self._call("pause", lambda: self._api.pause_space(space_id))

    async def release(self, space_id: str) -> None:
        """Drop this cluster from the Space's marker: kept by policy, it is no longer ours to sweep.

        The session UID and name stay, so where the Space came from remains visible.
        """
        try:
            await self._call(
                "variables",
                lambda: self._api.delete_space_variable(space_id, MARKER_CLUSTER_ID),
                priority=Priority.DELETE,
            )
        except HubError as error:
            if error.failure.kind is not FailureKind.NOT_FOUND:
                raise

    async def delete(self, space_id: str) -> bool:
        """Delete the Space; False when the Hub does not show it (deleted already, or not visible to
        the token: a caller that must know which checks the owner's access)."""
        try:
            await self._call(
                "delete",
                lambda: self._api.delete_repo(space_id, repo_type="space"),
                priority=Priority.DELETE,
            )
        except HubError as error:
            if error.failure.kind is FailureKind.NOT_FOUND:
                return False
            raise
        return True

    async def health(self, sandbox_url: str, token: str, hub_token: str) -> HealthResult:
        """The sandbox's answer at its health endpoint (`health_path`) through the Hub's edge."""
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        url = sandbox_url.rstrip("/") + self._config.health_path
        return await check_health(self._http, url, token, hub_token)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._urgent_pool.shutdown(wait=False, cancel_futures=True)
