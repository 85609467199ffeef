"""Synchronous client for the emulator's /_sim admin API (stdlib only, usable from tests and the CLI)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


class HubSimAdminError(RuntimeError):
    """An admin call answered non-2xx; `body` is the decoded JSON error (or raw text)."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"hubsim admin call failed with {status}: {body}")
        self.status = status
        self.body = body


class HubSimAdmin:
    """Drive a running emulator: plant Spaces, force stages, inject faults, read the call log."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url}/_sim{path}", data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                detail: Any = json.loads(raw)
            except ValueError:
                detail = raw.decode(errors="replace")
            raise HubSimAdminError(exc.code, detail) from None

    def spaces(self) -> list[dict[str, Any]]:
        """Every Space with its stage, hardware, history, variables and secret values."""
        result: list[dict[str, Any]] = self._call("GET", "/spaces")
        return result

    def space(self, space_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/spaces/{space_id}")
        return result

    def plant_space(
        self,
        space_id: str,
        *,
        private: bool = False,
        sdk: str = "docker",
        stage: str = "RUNNING",
        hardware: str | None = None,
        variables: dict[str, str] | None = None,
        secrets: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Create a Space directly in `stage`, with an app file, bypassing auth and builds."""
        body: dict[str, Any] = {
            "id": space_id,
            "private": private,
            "sdk": sdk,
            "stage": stage,
            "hardware": hardware,
            "variables": variables or {},
            "secrets": secrets or {},
        }
        result: dict[str, Any] = self._call("POST", "/spaces", body)
        return result

    def set_stage(self, space_id: str, stage: str) -> dict[str, Any]:
        """Force a stage (sticky: scheduled transitions are dropped)."""
        result: dict[str, Any] = self._call("POST", f"/spaces/{space_id}/stage", {"stage": stage})
        return result

    def sleep(self, space_id: str) -> dict[str, Any]:
        """Put a RUNNING Space to sleep now, as if its sleep time had run out (409 if it is not running)."""
        result: dict[str, Any] = self._call("POST", f"/spaces/{space_id}/sleep")
        return result

    def rate_limit(self) -> dict[str, Any]:
        """The enforced quota (None: none), its window, the calls counted per caller in this window, and
        the seconds since this window began (`intoWindow`)."""
        result: dict[str, Any] = self._call("GET", "/rate-limit")
        return result

    def set_rate_limit(self, quota: int | None, window: int = 300) -> dict[str, Any]:
        """Enforce `quota` API calls per caller per `window` seconds (None: no limit); counts start afresh."""
        result: dict[str, Any] = self._call("PUT", "/rate-limit", {"quota": quota, "window": window})
        return result

    def set_build_failures(self, count: int, stage: str = "BUILD_ERROR") -> dict[str, Any]:
        """Make the next `count` builds that would reach RUNNING end in `stage`."""
        result: dict[str, Any] = self._call("POST", "/build-failures", {"count": count, "stage": stage})
        return result

    def delays(self) -> dict[str, float]:
        result: dict[str, float] = self._call("GET", "/delays")
        return result

    def set_delays(
        self,
        *,
        build: float | None = None,
        hardware_switch: float | None = None,
        wake: float | None = None,
        transient_errors: float | None = None,
        transient_error_calls: int | None = None,
    ) -> dict[str, float]:
        """Change only the knobs given; they apply to operations started afterwards.

        `transient_errors` (seconds) and `transient_error_calls` open a window after each private
        duplicate in which its hardware and secrets routes answer 401 and its runtime and info 404.
        """
        body = {
            "build": build,
            "hardwareSwitch": hardware_switch,
            "wake": wake,
            "transientErrors": transient_errors,
            "transientErrorCalls": transient_error_calls,
        }
        result: dict[str, float] = self._call(
            "PUT", "/delays", {k: v for k, v in body.items() if v is not None}
        )
        return result

    def add_fault(
        self,
        route: str,
        status: int,
        *,
        count: int | None = None,
        seconds: float | None = None,
        retry_after: int | None = None,
    ) -> dict[str, Any]:
        """Fail `route` ("*" = every /api route) with `status`; no count and no seconds = until cleared."""
        body = {
            "route": route,
            "status": status,
            "count": count,
            "seconds": seconds,
            "retryAfter": retry_after,
        }
        result: dict[str, Any] = self._call("POST", "/faults", body)
        return result

    def faults(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/faults")
        return result

    def clear_faults(self) -> None:
        self._call("DELETE", "/faults")

    def calls(self) -> list[dict[str, Any]]:
        """The log of /api and sandbox calls, oldest first."""
        result: list[dict[str, Any]] = self._call("GET", "/calls")
        return result

    def clear_calls(self) -> None:
        self._call("DELETE", "/calls")

    def call_counts(self) -> list[dict[str, Any]]:
        """Calls per `user`, `route` and `status` since the last reset: every call, unlike `calls()`."""
        result: list[dict[str, Any]] = self._call("GET", "/call-counts")
        return result

    def reset(self) -> None:
        """Back to the configured world (templates, delays), with no faults and an empty call log."""
        self._call("POST", "/reset")
