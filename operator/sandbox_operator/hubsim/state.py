"""The emulated Hub's world: Spaces, permissions and their lifecycle, with no HTTP in it.

The lifecycle is lazy: an operation sets the stage it starts in and schedules the later stages as
timestamped transitions; every lookup applies the transitions that are due. No background task runs,
so a stopped clock means a frozen Hub and a test can drive time with a fake clock.
"""

from __future__ import annotations

import hmac
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from secrets import token_hex

from pydantic import BaseModel

from .config import HubSimConfig, is_valid_space_id
from .constants import (
    APP_FILES,
    BUILDING_STAGES,
    DEFAULT_FLAVOR,
    HARDWARE_CATALOG,
    HARDWARE_HOLDING_STAGES,
    IDLE_STAGES,
    SERVING_STAGES,
)
from .faults import FaultBook

SANDBOX_TOKEN_SECRET = "SANDBOX_API_TOKEN"


class HubError(Exception):
    """A Hub-style failure; the HTTP layer renders its status, X-Error-* headers and {"error"} body."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


class RepoConflict(HubError):
    """409 for an existing repo; the body must carry the repo `url` because `exist_ok=True` reads it."""

    def __init__(self, space_id: str) -> None:
        super().__init__(409, "You already created this space repo")
        self.space_id = space_id


def repo_not_found() -> HubError:
    """The only not-found the client reliably maps to RepositoryNotFoundError over http:// (doc §2.1)."""
    return HubError(404, "Repository not found", code="RepoNotFound")


class KeyValue(BaseModel):
    """A secret or variable as the Hub API receives it."""

    key: str
    value: str
    description: str | None = None


@dataclass
class Entry:
    """A stored secret or variable; `updated_at` is monotonic like every time in the model."""

    value: str
    description: str | None
    updated_at: float


@dataclass(frozen=True)
class HardwareSample:
    """One point of a Space's hardware timeline, for billing-style assertions."""

    monotonic: float
    current: str | None
    requested: str | None


@dataclass(frozen=True)
class Transition:
    """A stage change scheduled for `due`; `take_requested` makes `current` catch up with `requested`."""

    due: float
    stage: str
    take_requested: bool


@dataclass
class Space:
    id: str
    sdk: str
    visibility: str
    files: list[str]
    created: float
    stage: str
    requested: str | None
    current: str | None = None
    sleep_time: int | None = None
    secrets: dict[str, Entry] = field(default_factory=dict)
    variables: dict[str, Entry] = field(default_factory=dict)
    duplicated_from: str | None = None
    hidden_until: float = 0.0
    oid: str = field(default_factory=lambda: token_hex(12))
    sha: str = field(default_factory=lambda: token_hex(20))
    pending: list[Transition] = field(default_factory=list)
    history: list[HardwareSample] = field(default_factory=list)

    @property
    def namespace(self) -> str:
        return self.id.split("/")[0]

    @property
    def name(self) -> str:
        return self.id.split("/")[1]

    @property
    def private(self) -> bool:
        return self.visibility == "private"

    @property
    def has_app(self) -> bool:
        return APP_FILES[self.sdk] in self.files


@dataclass
class Delays:
    build: float
    hardware_switch: float
    transient_404: float


@dataclass
class BuildFailures:
    """The next `count` builds that would reach RUNNING end in `stage` instead (decided at build start)."""

    count: int
    stage: str


@dataclass(frozen=True)
class CallRecord:
    monotonic: float
    method: str
    path: str
    query: str
    route: str
    status: int
    user: str | None
    flavor: str | None
    faulted: bool
    request_id: str


def initial_files(sdk: str, with_app: bool) -> list[str]:
    """What a Space's repo holds: the SDK's app file for templates and plants, a README for create_repo."""
    files = [".gitattributes", "README.md"]
    if with_app or sdk == "static":
        files += ["app.py", APP_FILES[sdk]] if sdk == "docker" else [APP_FILES[sdk]]
    return sorted(files)


def require_user(user: str | None) -> str:
    if user is None:
        raise HubError(401, "You must be authenticated to perform this action")
    return user


def _check_flavor(flavor: str) -> str:
    if flavor not in HARDWARE_CATALOG:
        raise HubError(
            400, f"Invalid hardware flavor '{flavor}', expected one of {', '.join(HARDWARE_CATALOG)}"
        )
    return flavor


def _sleep_time(seconds: int | None) -> int | None:
    """-1 is the client's 'never sleep', which the Hub reports as no gcTimeout."""
    if seconds is None or seconds == -1:
        return None
    if seconds <= 0:
        raise HubError(400, "Sleep time must be a positive number of seconds, or -1 to never sleep")
    return seconds


class HubState:
    """All mutable emulator state; not thread-safe, the server touches it from its event loop only."""

    def __init__(self, config: HubSimConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self._epoch = time.time() - clock()
        self.reset()

    def reset(self) -> None:
        """Back to the configured world: templates only, config delays, no faults, empty call log."""
        now = self.now()
        self.delays = Delays(
            self.config.build_seconds, self.config.hardware_switch_seconds, self.config.transient_404_seconds
        )
        self.build_failures = BuildFailures(0, "BUILD_ERROR")
        self.faults = FaultBook()
        self.calls: deque[CallRecord] = deque(maxlen=self.config.call_log_size)
        self.spaces: dict[str, Space] = {}
        for template in self.config.templates:
            space = Space(
                id=template,
                sdk="docker",
                visibility="public",
                files=initial_files("docker", True),
                created=now,
                stage="RUNNING",
                requested=DEFAULT_FLAVOR,
            )
            self._set_hardware(space, now, DEFAULT_FLAVOR, DEFAULT_FLAVOR)
            self.spaces[template] = space

    def now(self) -> float:
        return self._clock()

    def wall_of(self, monotonic: float) -> float:
        """Wall-clock time of a monotonic instant, so scheduled transitions get exact timestamps."""
        return self._epoch + monotonic

    # -- permissions ---------------------------------------------------------------------------

    def user_for_token(self, token: str) -> str | None:
        return self.config.tokens.get(token)

    def orgs_of(self, user: str) -> list[str]:
        return self.config.orgs.get(user, [])

    def can_write(self, user: str | None, namespace: str) -> bool:
        return user is not None and (user == namespace or namespace in self.orgs_of(user))

    def can_read(self, user: str | None, space: Space) -> bool:
        return not space.private or self.can_write(user, space.namespace)

    # -- lifecycle -----------------------------------------------------------------------------

    def _set_hardware(self, space: Space, at: float, current: str | None, requested: str | None) -> None:
        space.current, space.requested = current, requested
        sample = HardwareSample(at, current, requested)
        last = space.history[-1] if space.history else None
        if last is None or (last.current, last.requested) != (current, requested):
            space.history.append(sample)

    def _settle(self, space: Space, now: float) -> None:
        while space.pending and space.pending[0].due <= now:
            step = space.pending.pop(0)
            space.stage = step.stage
            self._set_hardware(
                space, step.due, space.requested if step.take_requested else space.current, space.requested
            )

    def _build_outcome(self, space: Space) -> str:
        if not space.has_app:
            return "NO_APP_FILE"
        if self.build_failures.count > 0:
            self.build_failures.count -= 1
            return self.build_failures.stage
        return "RUNNING"

    def _start_build(self, space: Space, now: float) -> None:
        """BUILDING, then APP_STARTING halfway if the container will start, then the outcome.

        `current` is null for the whole build, as on a fresh Hub Space; the outcome step takes the
        `requested` flavor of that moment, so a hardware request during the build is honoured.
        """
        outcome = self._build_outcome(space)
        starts = outcome in HARDWARE_HOLDING_STAGES
        space.stage = "BUILDING"
        self._set_hardware(space, now, None, space.requested)
        end = now + self.delays.build
        space.pending = [Transition(now + self.delays.build / 2, "APP_STARTING", False)] if starts else []
        space.pending.append(Transition(end, outcome, starts))

    def _boot(self, space: Space, now: float) -> None:
        """Static Spaces are served as files: RUNNING at once with no hardware (cassette, doc §5)."""
        if space.sdk == "static":
            space.stage = "RUNNING"
            self._set_hardware(space, now, None, None)
        else:
            self._start_build(space, now)

    def _force(self, space: Space, stage: str, now: float) -> None:
        space.pending = []
        space.stage = stage
        self._set_hardware(
            space, now, space.requested if stage in HARDWARE_HOLDING_STAGES else None, space.requested
        )

    # -- lookups -------------------------------------------------------------------------------

    def _lookup(self, space_id: str, now: float) -> Space | None:
        space = self.spaces.get(space_id)
        if space is not None:
            self._settle(space, now)
        return space

    def visible_space(self, user: str | None, space_id: str) -> Space:
        """A Space the caller may see; private-and-foreign or freshly-duplicated ones look missing."""
        now = self.now()
        space = self._lookup(space_id, now)
        if space is None or not self.can_read(user, space) or now < space.hidden_until:
            raise repo_not_found()
        return space

    def writable_space(self, user: str | None, space_id: str) -> Space:
        """401 anonymous, 404 invisible, 403 visible but not yours: the Hub's order of refusals."""
        user = require_user(user)
        space = self.visible_space(user, space_id)
        if not self.can_write(user, space.namespace):
            raise HubError(403, f"You don't have the rights to manage the Space {space_id}")
        return space

    def list_spaces(self, user: str | None, author: str | None, search: str | None) -> list[Space]:
        now = self.now()
        found = []
        for space in self.spaces.values():
            self._settle(space, now)
            if (
                self.can_read(user, space)
                and (author is None or space.namespace == author)
                and (search is None or search.lower() in space.id.lower())
            ):
                found.append(space)
        return found

    # -- Hub API operations --------------------------------------------------------------------

    def _entries(self, items: Iterable[KeyValue], now: float) -> dict[str, Entry]:
        return {item.key: Entry(item.value, item.description, now) for item in items}

    def _new_space_id(self, user: str, space_id: str) -> str:
        if not is_valid_space_id(space_id):
            raise HubError(400, f"Invalid repository id '{space_id}'")
        namespace = space_id.split("/")[0]
        if not self.can_write(user, namespace):
            raise HubError(
                403, f'You don\'t have the rights to create a space under the namespace "{namespace}"'
            )
        if space_id in self.spaces:
            raise RepoConflict(space_id)
        return space_id

    def create_space(
        self,
        user: str | None,
        *,
        namespace: str | None,
        name: str,
        repo_type: str | None,
        sdk: str | None,
        visibility: str | None,
        hardware: str | None,
        sleep_time: int | None,
        secrets: list[KeyValue],
        variables: list[KeyValue],
    ) -> Space:
        """create_repo: the repo holds a README only, so a non-static build ends in NO_APP_FILE (doc §5)."""
        user = require_user(user)
        if repo_type != "space":
            raise HubError(400, "hubsim only emulates Spaces: 'type' must be 'space'")
        if sdk not in APP_FILES:
            raise HubError(400, f"Invalid sdk {sdk!r}, expected one of {', '.join(APP_FILES)}")
        space_id = self._new_space_id(user, f"{namespace or user}/{name}")
        now = self.now()
        requested = None if sdk == "static" else _check_flavor(hardware or DEFAULT_FLAVOR)
        space = Space(
            id=space_id,
            sdk=sdk,
            visibility=visibility or "public",
            files=initial_files(sdk, False),
            created=now,
            stage="BUILDING",
            requested=requested,
            sleep_time=_sleep_time(sleep_time),
            secrets=self._entries(secrets, now),
            variables=self._entries(variables, now),
        )
        self.spaces[space_id] = space
        self._boot(space, now)
        return space

    def duplicate(
        self,
        user: str | None,
        source_id: str,
        *,
        target_id: str,
        visibility: str | None,
        hardware: str | None,
        sleep_time: int | None,
        secrets: list[KeyValue],
        variables: list[KeyValue],
    ) -> Space:
        """Copy the source's files (not its secrets or variables) and build on the requested flavor."""
        user = require_user(user)
        source = self.visible_space(user, source_id)
        space_id = self._new_space_id(user, target_id)
        now = self.now()
        requested = None if source.sdk == "static" else _check_flavor(hardware or DEFAULT_FLAVOR)
        space = Space(
            id=space_id,
            sdk=source.sdk,
            visibility=visibility or source.visibility,
            files=list(source.files),
            created=now,
            stage="BUILDING",
            requested=requested,
            sleep_time=_sleep_time(sleep_time),
            secrets=self._entries(secrets, now),
            variables=self._entries(variables, now),
            duplicated_from=source.id,
            hidden_until=now + self.delays.transient_404,
        )
        self.spaces[space_id] = space
        self._boot(space, now)
        return space

    def delete_space(
        self, user: str | None, *, namespace: str | None, name: str, repo_type: str | None
    ) -> None:
        user = require_user(user)
        space_id = f"{namespace or user}/{name}"
        space = self._lookup(space_id, self.now())
        if repo_type != "space" or space is None or not self.can_read(user, space):
            raise repo_not_found()
        if not self.can_write(user, space.namespace):
            raise HubError(403, f"You don't have the rights to delete the Space {space_id}")
        del self.spaces[space_id]

    def _runtime_control(self, user: str | None, space_id: str, what: str) -> Space:
        space = self.writable_space(user, space_id)
        if space.sdk == "static":
            raise HubError(400, f"Cannot {what} a static Space")
        return space

    def request_hardware(self, user: str | None, space_id: str, flavor: str, sleep_time: int | None) -> Space:
        """`requested` changes at once; `current` follows after the switch delay (or at the build end).

        A running Space stays up on its old hardware in `config.hardware_switch_stage` until the switch
        completes; a building one just builds onto the new flavor; a paused one keeps it for its
        restart; a failed one is rebuilt on it.
        """
        space = self._runtime_control(user, space_id, "request hardware for")
        _check_flavor(flavor)
        now = self.now()
        if sleep_time is not None:
            space.sleep_time = _sleep_time(sleep_time)
        self._set_hardware(space, now, space.current, flavor)
        if space.stage in SERVING_STAGES:
            if flavor != space.current or space.pending:
                space.stage = self.config.hardware_switch_stage
                space.pending = [Transition(now + self.delays.hardware_switch, "RUNNING", True)]
        elif space.stage not in BUILDING_STAGES | IDLE_STAGES:
            self._start_build(space, now)
        return space

    def set_sleep_time(self, user: str | None, space_id: str, seconds: int) -> Space:
        space = self._runtime_control(user, space_id, "set the sleep time of")
        space.sleep_time = _sleep_time(seconds)
        return space

    def pause(self, user: str | None, space_id: str) -> Space:
        """PAUSED until a restart; `requested` is kept (cassette), nothing runs so `current` is null."""
        space = self._runtime_control(user, space_id, "pause")
        self._force(space, "PAUSED", self.now())
        return space

    def restart(self, user: str | None, space_id: str) -> Space:
        space = self._runtime_control(user, space_id, "restart")
        self._start_build(space, self.now())
        return space

    def set_entry(self, user: str | None, space_id: str, kind: str, item: KeyValue) -> Space:
        space = self.writable_space(user, space_id)
        self._store(space, kind)[item.key] = Entry(item.value, item.description, self.now())
        return space

    def delete_entry(self, user: str | None, space_id: str, kind: str, key: str) -> Space:
        """Deleting a missing key succeeds, as on the Hub (cassette)."""
        space = self.writable_space(user, space_id)
        self._store(space, kind).pop(key, None)
        return space

    @staticmethod
    def _store(space: Space, kind: str) -> dict[str, Entry]:
        return space.secrets if kind == "secrets" else space.variables

    def check_edge(self, space_id: str, hub_token: str | None) -> None:
        """The Hub's edge in front of every Space's app: a private Space's app is reached only with a Hub
        token that may read it (401 without a valid one, 404 for one that may not see it); public pass."""
        space = self._lookup(space_id, self.now())
        if space is None:
            raise HubError(404, f"No Space {space_id}")
        if not space.private:
            return
        user = self.user_for_token(hub_token) if hub_token else None
        if user is None:
            raise HubError(401, "A Hub token with read access is required for this private Space")
        if not self.can_read(user, space):
            raise repo_not_found()

    def check_sandbox(self, space_id: str, bearer: str | None) -> Space:
        """The Space's own app behind the edge: 404 no Space, 503 not serving, 401 wrong sandbox token
        (which the sandbox server reads from `X-Sandbox-Authorization`), else healthy."""
        space = self._lookup(space_id, self.now())
        if space is None:
            raise HubError(404, f"No Space {space_id}")
        if space.stage not in SERVING_STAGES:
            raise HubError(503, f"Space {space_id} is not running (stage {space.stage})")
        secret = space.secrets.get(SANDBOX_TOKEN_SECRET)
        if (
            secret is None
            or bearer is None
            or not hmac.compare_digest(secret.value.encode(), bearer.encode())
        ):
            raise HubError(401, "Invalid or missing sandbox token")
        return space

    # -- admin ---------------------------------------------------------------------------------

    def all_spaces(self) -> list[Space]:
        now = self.now()
        for space in self.spaces.values():
            self._settle(space, now)
        return list(self.spaces.values())

    def admin_space(self, space_id: str) -> Space:
        space = self._lookup(space_id, self.now())
        if space is None:
            raise repo_not_found()
        return space

    def plant(
        self,
        space_id: str,
        *,
        private: bool,
        sdk: str,
        stage: str,
        hardware: str | None,
        variables: dict[str, str],
        secrets: dict[str, str],
    ) -> Space:
        """Put a Space straight into a stage (default RUNNING) with an app file, bypassing auth and builds."""
        if not is_valid_space_id(space_id):
            raise HubError(400, f"Invalid repository id '{space_id}'")
        if space_id in self.spaces:
            raise RepoConflict(space_id)
        now = self.now()
        requested = None if sdk == "static" else _check_flavor(hardware or DEFAULT_FLAVOR)
        space = Space(
            id=space_id,
            sdk=sdk,
            visibility="private" if private else "public",
            files=initial_files(sdk, True),
            created=now,
            stage=stage,
            requested=requested,
            secrets={k: Entry(v, None, now) for k, v in secrets.items()},
            variables={k: Entry(v, None, now) for k, v in variables.items()},
        )
        self._force(space, stage, now)
        self.spaces[space_id] = space
        return space

    def force_stage(self, space_id: str, stage: str) -> Space:
        """Sticky: pending transitions are dropped, the Space stays in `stage` until something acts on it."""
        space = self.admin_space(space_id)
        self._force(space, stage, self.now())
        return space
