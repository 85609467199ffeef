"""What a failed Hub call means: the failure kinds the decision core understands, from the exceptions
of `huggingface_hub`, its HTTP transport and the gate, with a message for people."""

from __future__ import annotations

import time

import httpx2
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

from sandbox_operator.core.model import FailureKind, HubFailure
from sandbox_operator.hub.gate import HubPaused, NotLeader, SendDeadlinePassed, retry_after_seconds


class HubError(Exception):
    """A Hub call failed in a way the session must show and retry."""

    def __init__(self, route: str, failure: HubFailure, *, sent: bool = True) -> None:
        super().__init__(f"{route}: {failure.message}")
        self.route = route
        self.failure = failure
        #: False when the gate refused the request locally: nothing reached the Hub.
        self.sent = sent


class SpaceExistsError(Exception):
    """The duplicate target already exists (a previous attempt got through)."""


def classify(route: str, error: Exception) -> HubError:
    """Map a huggingface_hub / transport exception to a failure kind with a message for people."""
    if isinstance(error, HubPaused):
        return HubError(
            route,
            HubFailure(
                FailureKind.RATE_LIMITED,
                f"not sent: {error} (Retry-After)",
                error.remaining,
            ),
            sent=False,
        )
    if isinstance(error, NotLeader | SendDeadlinePassed):
        return HubError(route, HubFailure(FailureKind.UNAVAILABLE, f"not sent: {error}"), sent=False)
    if isinstance(error, RepositoryNotFoundError):
        # A 404, or the 401 the Hub answers for a repo the token cannot see (huggingface_hub
        # turns both into this): the Space does not exist, is not visible yet, or is out of sight.
        return HubError(
            route, HubFailure(FailureKind.NOT_FOUND, f"the Hub does not show the Space on {route}")
        )
    if isinstance(error, HfHubHTTPError) and error.response is not None:
        return _classify_answer(route, error)
    if isinstance(error, httpx2.TimeoutException):
        return HubError(route, HubFailure(FailureKind.UNAVAILABLE, f"{route} timed out"))
    if isinstance(error, httpx2.TransportError | OSError):
        return HubError(
            route, HubFailure(FailureKind.UNAVAILABLE, f"cannot reach the Hub for {route}: {error}")
        )
    raise error


def _classify_answer(route: str, error: HfHubHTTPError) -> HubError:
    """An HTTP error the Hub answered, by its status code."""
    response = error.response
    code = response.status_code
    server = (error.server_message or "").strip() or response.reason_phrase
    if code == 429:
        retry_after = retry_after_seconds(response.headers, time.time())
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
            retry_after_seconds(response.headers, time.time()),
        ),
    )


def duplicate_failure(error: HubError, template: str, space_id: str) -> Exception | None:
    """What a failed duplicate means: a template that cannot be seen, or a target that exists already
    (a previous attempt got through); None: the failure as it is."""
    if error.failure.kind is FailureKind.NOT_FOUND:
        return HubError(
            "duplicate",
            HubFailure(
                FailureKind.TEMPLATE_NOT_FOUND,
                f"template Space {template} does not exist or is not visible",
            ),
        )
    cause = error.__cause__
    if isinstance(cause, HfHubHTTPError) and cause.response is not None and cause.response.status_code == 409:
        return SpaceExistsError(space_id)
    return None
