"""The one place the operator talks to the Hugging Face Hub.

Every Hub call goes through `HubClient`, which runs the unmodified `huggingface_hub`
client on a small bounded thread pool (the client is synchronous) and turns its
exceptions into `HubError`s the decision core understands. The sandbox health check is a
plain async HTTP call and needs no thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, TypeVar

import aiohttp
import httpx2
from huggingface_hub import HfApi, SpaceInfo, set_client_factory
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError
from huggingface_hub.utils._http import hf_request_event_hook

from .api import SANDBOX_TOKEN_SECRET, Hardware
from .config import OperatorConfig
from .reconciler import (
    MARKER_CLUSTER_ID,
    MARKER_SESSION,
    MARKER_SESSION_UID,
    FailureKind,
    HealthResult,
    HubFailure,
    SpaceView,
)

log = logging.getLogger(__name__)
T = TypeVar("T")


class HubError(Exception):
    """A Hub call failed in a way the session must show and retry."""

    def __init__(self, route: str, failure: HubFailure) -> None:
        super().__init__(f"{route}: {failure.message}")
        self.route = route
        self.failure = failure


class SpaceExistsError(Exception):
    """The duplicate target already exists (a previous attempt got through)."""


def _retry_after(response: Any) -> float | None:
    value = response.headers.get("Retry-After") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def classify(route: str, error: Exception) -> HubError:
    """Map a huggingface_hub / transport exception to a failure kind with a message for people."""
    if isinstance(error, HfHubHTTPError) and error.response is not None:
        response = error.response
        code = response.status_code
        server = (error.server_message or "").strip() or response.reason_phrase
        if code == 429:
            retry_after = _retry_after(response)
            hint = f"; the Hub asks to wait {retry_after:.0f}s" if retry_after is not None else ""
            return HubError(
                route, HubFailure(FailureKind.RATE_LIMITED, f"rate limited on {route}{hint}", retry_after)
            )
        if code == 401:
            return HubError(
                route,
                HubFailure(
                    FailureKind.UNAUTHORIZED, f"the Hub rejected the operator's token on {route}: {server}"
                ),
            )
        if code == 403:
            return HubError(route, HubFailure(FailureKind.FORBIDDEN, f"the token may not {route}: {server}"))
        if code == 400:
            return HubError(route, HubFailure(FailureKind.BAD_REQUEST, f"the Hub refused {route}: {server}"))
        return HubError(
            route,
            HubFailure(
                FailureKind.UNAVAILABLE,
                f"the Hub answered {code} on {route}: {server}",
                _retry_after(response),
            ),
        )
    if isinstance(error, httpx2.TimeoutException):
        return HubError(route, HubFailure(FailureKind.UNAVAILABLE, f"{route} timed out"))
    if isinstance(error, httpx2.TransportError | OSError):
        return HubError(
            route, HubFailure(FailureKind.UNAVAILABLE, f"cannot reach the Hub for {route}: {error}")
        )
    raise error


def _client_factory(timeout: float) -> Callable[[], httpx2.Client]:
    def factory() -> httpx2.Client:
        # The default client has no timeout at all; a hung Hub must not hang a session.
        return httpx2.Client(
            event_hooks={"request": [hf_request_event_hook]}, follow_redirects=True, timeout=timeout
        )

    return factory


def _space_view(info: SpaceInfo, endpoint: str) -> SpaceView:
    runtime = info.runtime
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
        sandbox_url=info.host or (f"https://{info.subdomain}.hf.space" if info.subdomain else None),
    )


class HubClient:
    """Async facade over `HfApi` for the calls the operator needs, and nothing more."""

    def __init__(self, config: OperatorConfig) -> None:
        set_client_factory(_client_factory(config.hub_timeout))
        self._api = HfApi(endpoint=config.hub_endpoint, token=config.hub_token or None)
        self._endpoint = config.hub_endpoint.rstrip("/")
        self._config = config
        self._pool = ThreadPoolExecutor(max_workers=config.hub_concurrency, thread_name_prefix="hub")
        self._http: aiohttp.ClientSession | None = None

    async def _call(self, route: str, fn: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, fn)
        except RepositoryNotFoundError:
            raise
        except Exception as error:
            raise classify(route, error) from error

    async def whoami(self) -> str:
        info = await self._call("whoami", lambda: self._api.whoami(cache=True))
        return str(info["name"])

    async def space(self, space_id: str, *, with_marker: bool = False) -> SpaceView | None:
        """The Space's state, or None if it does not exist. `with_marker` also reads its ownership marker."""
        try:
            info = await self._call("space_info", lambda: self._api.space_info(space_id))
        except RepositoryNotFoundError:
            return None
        view = _space_view(info, self._endpoint)
        if view.stage == "UNKNOWN":
            runtime = await self._call("runtime", lambda: self._api.get_space_runtime(space_id))
            view = replace(
                view,
                stage=str(runtime.stage),
                current_hardware=runtime.hardware,
                requested_hardware=runtime.requested_hardware,
            )
        if with_marker:
            marker = await self.marker(space_id)
            if marker is None:
                return None
            view = replace(view, marker_uid=marker)
        return view

    async def marker(self, space_id: str) -> str | None:
        """The session UID in the Space's ownership marker ("" if unmarked), or None if the Space is gone."""
        try:
            variables = await self._call("variables", lambda: self._api.get_space_variables(space_id))
        except RepositoryNotFoundError:
            return None
        entry = variables.get(MARKER_SESSION_UID)
        return entry.value if entry is not None else ""

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
    ) -> None:
        """Create the Space on cpu-basic, with the token and marker in the same request."""
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
            )

        try:
            await self._call("duplicate", call)
        except RepositoryNotFoundError as error:
            raise HubError(
                "duplicate",
                HubFailure(
                    FailureKind.TEMPLATE_NOT_FOUND,
                    f"template Space {template} does not exist or is not visible",
                ),
            ) from error
        except HubError as error:
            cause = error.__cause__
            if (
                isinstance(cause, HfHubHTTPError)
                and cause.response is not None
                and cause.response.status_code == 409
            ):
                raise SpaceExistsError(space_id) from error
            raise

    async def set_token(self, space_id: str, token: str) -> None:
        await self._call("secrets", lambda: self._api.add_space_secret(space_id, SANDBOX_TOKEN_SECRET, token))

    async def request_hardware(self, space_id: str, flavor: str) -> None:
        await self._call(
            "hardware",
            lambda: self._api.request_space_hardware(space_id, flavor),  # type: ignore[arg-type]
        )

    async def restart(self, space_id: str) -> None:
        await self._call("restart", lambda: self._api.restart_space(space_id))

    async def delete(self, space_id: str) -> None:
        await self._call(
            "delete", lambda: self._api.delete_repo(space_id, repo_type="space", missing_ok=True)
        )

    async def health(self, sandbox_url: str, token: str) -> HealthResult:
        """GET the sandbox's health endpoint with its token; anything but 200 is unhealthy."""
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        url = sandbox_url.rstrip("/") + self._config.health_path
        try:
            async with self._http.get(url, headers={"Authorization": f"Bearer {token}"}) as response:
                if response.status == 200:
                    return HealthResult(True, "200 OK")
                return HealthResult(False, f"{url} answered {response.status}")
        except (aiohttp.ClientError, TimeoutError) as error:
            return HealthResult(False, f"{url} unreachable: {error or type(error).__name__}")

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
