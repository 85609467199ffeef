"""Configuration of the Hub emulator: who exists, which templates are seeded, how slow the Hub is."""

from __future__ import annotations

import re
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .constants import Stage

#: huggingface_hub's repo id rule, with the namespace made mandatory (fidelity: F6).
_REPO_ID_RE: Final = re.compile(r"^\b[\w\-.]+\b/\b[\w\-.]{1,96}\b$")


def is_valid_space_id(space_id: str) -> bool:
    """Mirror the client-side repo id validation so the emulator rejects what the Hub would."""
    return (
        _REPO_ID_RE.match(space_id) is not None
        and "--" not in space_id
        and ".." not in space_id
        and not space_id.endswith(".git")
    )


class HubSimConfig(BaseModel):
    """Initial world of the emulator; `POST /_sim/reset` returns to exactly this."""

    model_config = ConfigDict(extra="forbid")

    tokens: dict[str, str] = Field(default_factory=dict, description="bearer token -> username")
    orgs: dict[str, list[str]] = Field(default_factory=dict, description="username -> orgs it can write to")
    templates: list[str] = Field(
        default_factory=list, description="public RUNNING docker Spaces seeded at start, duplicable by anyone"
    )
    build_seconds: float = Field(default=3.0, ge=0)
    build_seconds_max: float | None = Field(
        default=None,
        ge=0,
        description="with it, each build lasts a random time from build_seconds to this (fidelity: F18)",
    )
    build_seed: int = Field(default=0, description="seed of the random build times; reset starts it afresh")
    hardware_switch_seconds: float = Field(default=3.0, ge=0)
    wake_seconds: float = Field(default=3.0, ge=0, description="a sleeping Space's way back to RUNNING")
    transient_error_seconds: float = Field(
        default=0.0,
        ge=0,
        description="a fresh private duplicate's hardware, secrets (401), runtime, info (404) fail this long",
    )
    transient_error_calls: int = Field(
        default=0, ge=0, description="... and for at least this many of those calls (0: time only)"
    )
    rate_limit: int | None = Field(
        default=None, ge=1, description="API calls per caller per window; None: counted as unlimited"
    )
    rate_limit_window: int = Field(default=300, ge=1, description="the Hub's fixed window, in seconds")
    hardware_switch_stage: Stage = Field(
        default="RUNNING_APP_STARTING",
        description="stage while `current` lags `requested` on a running Space; 'RUNNING' reproduces the "
        "trap where the stage says RUNNING but the old hardware still serves",
    )
    page_size: int = Field(default=100, ge=1, description="list_spaces page size without a `limit` query")
    page_size_max: int = Field(
        default=500,
        ge=1,
        description="largest list_spaces page a `limit` query gets (huggingface.js asks for 500; F14)",
    )
    call_log_size: int = Field(default=10_000, ge=1, description="calls kept by /_sim/calls, oldest dropped")
    public_url: str | None = Field(
        default=None,
        description="base URL advertised in urls, `host` and Link headers; default: the request origin",
    )

    @field_validator("templates")
    @classmethod
    def _templates_are_space_ids(cls, value: list[str]) -> list[str]:
        bad = [t for t in value if not is_valid_space_id(t)]
        if bad:
            raise ValueError(f"template ids must look like 'namespace/name': {bad}")
        return value

    @field_validator("public_url")
    @classmethod
    def _strip_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value
