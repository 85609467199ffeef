"""Request bodies: the Hub API's (lenient, extra keys ignored like the Hub) and the admin API's (strict)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .constants import Sdk, Stage
from .faults import ANY_API_ROUTE, ROUTE_NAMES
from .state import KeyValue

Visibility = Literal["public", "private", "protected"]


class _HubBody(BaseModel):
    """The client sends keys the emulator has no use for (volumes, resourceGroupId, ...) (fidelity: F10)."""

    model_config = ConfigDict(extra="ignore")


class _NewSpaceBody(_HubBody):
    visibility: Visibility | None = None
    private: bool | None = None
    hardware: str | None = None
    sleepTimeSeconds: int | None = None
    secrets: list[KeyValue] = Field(default_factory=list)
    variables: list[KeyValue] = Field(default_factory=list)

    def resolved_visibility(self) -> str | None:
        """Old clients (and the recorded ones) send `private: bool`, not `visibility` (fidelity: F10)."""
        if self.visibility is not None or self.private is None:
            return self.visibility
        return "private" if self.private else "public"


class CreateBody(_NewSpaceBody):
    name: str
    organization: str | None = None
    type: str | None = None
    sdk: str | None = None


class DuplicateBody(_NewSpaceBody):
    repository: str


class DeleteBody(_HubBody):
    name: str
    organization: str | None = None
    type: str | None = None


class HardwareBody(_HubBody):
    flavor: str
    sleepTimeSeconds: int | None = None


class SleepTimeBody(_HubBody):
    seconds: int


class KeyBody(_HubBody):
    key: str


class _AdminBody(BaseModel):
    """Admin calls are written by test authors: reject unknown keys so typos do not pass silently."""

    model_config = ConfigDict(extra="forbid")


class PlantBody(_AdminBody):
    id: str
    private: bool = False
    sdk: Sdk = "docker"
    stage: Stage = "RUNNING"
    hardware: str | None = None
    variables: dict[str, str] = Field(default_factory=dict)
    secrets: dict[str, str] = Field(default_factory=dict)


class StageBody(_AdminBody):
    stage: Stage


class BuildFailuresBody(_AdminBody):
    count: int = Field(ge=0)
    stage: Stage = "BUILD_ERROR"


class DelaysBody(_AdminBody):
    build: float | None = Field(default=None, ge=0)
    hardwareSwitch: float | None = Field(default=None, ge=0)
    wake: float | None = Field(default=None, ge=0)
    transientErrors: float | None = Field(default=None, ge=0)
    transientErrorCalls: int | None = Field(default=None, ge=0)


class RateLimitBody(_AdminBody):
    quota: int | None = Field(ge=1)
    window: int = Field(default=300, ge=1)


class FaultBody(_AdminBody):
    route: str
    status: int = Field(ge=400, le=599)
    count: int | None = Field(default=None, ge=1)
    seconds: float | None = Field(default=None, gt=0)
    retryAfter: int | None = Field(default=None, ge=0)

    @field_validator("route")
    @classmethod
    def _known_route(cls, value: str) -> str:
        if value != ANY_API_ROUTE and value not in ROUTE_NAMES:
            raise ValueError(f"unknown route {value!r}, expected '*' or one of {', '.join(ROUTE_NAMES)}")
        return value
