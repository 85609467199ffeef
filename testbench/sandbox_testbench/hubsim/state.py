"""The emulated Hub's world: Spaces, permissions and their lifecycle, with no HTTP in it.

The lifecycle is lazy: an operation sets the stage it starts in and schedules the later stages as
timestamped transitions; every lookup applies the transitions that are due. No background task runs,
so a stopped clock means a frozen Hub and a test can drive time with a fake clock.
"""

from __future__ import annotations

import hmac
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from secrets import token_hex
from typing import Final

from pydantic import BaseModel

from .config import HubSimConfig, is_valid_space_id
from .constants import (
    APP_FILES,
    ASLEEP,
    BILLED_STAGES,
    BUILDING_STAGES,
    DEFAULT_FLAVOR,
    HARDWARE_CATALOG,
    HARDWARE_HOLDING_STAGES,
    IDLE_STAGES,
    SERVING_STAGES,
    effective_sleep_time,
)
from .faults import FaultBook
from .ratelimit import RateLimiter

SANDBOX_TOKEN_SECRET = "SANDBOX_API_TOKEN"
#: Route -> status a fresh private duplicate answers while its transient window is open (fidelity: F32).
TRANSIENT_STATUS: Final[dict[str, int]] = {"hardware": 401, "secrets": 401, "runtime": 404, "space_info": 404}


class HubSimError(Exception):
    """A Hub-style failure; the HTTP layer renders its status, X-Error-* headers and {"error"} body."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


class RepoConflict(HubSimError):
    """409 for an existing repo; the body must carry the repo `url` because `exist_ok=True` reads it."""

    def __init__(self, space_id: str) -> None:
        super().__init__(409, "You already created this space repo")
        self.space_id = space_id


def repo_not_found() -> HubSimError:
    """The only not-found the client reliably maps to RepositoryNotFoundError over http:// (fidelity: F3)."""
    return HubSimError(404, "Repository not found", code="RepoNotFound")


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
class Sample:
    """One point of a Space's runtime timeline: what it showed from `monotonic` on, for billing."""

    monotonic: float
    stage: str
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
    transient: TransientWindow | None = None
    oid: str = field(default_factory=lambda: token_hex(12))
    sha: str = field(default_factory=lambda: token_hex(20))
    pending: list[Transition] = field(default_factory=list)
    timeline: list[Sample] = field(default_factory=list)
    #: Start of the current idle period: the last request to the app, or when the Space last came up.
    idle_since: float = 0.0
    #: When the app last started running, and when it was last used (a request other than its health
    #: check): what its health answer reports as its last activity (fidelity: F41).
    app_started: float = 0.0
    app_used: float = 0.0

    def __post_init__(self) -> None:
        self.idle_since = self.idle_since or self.created

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

    @property
    def gc_timeout(self) -> int | None:
        """Idle seconds before it sleeps; static Spaces are files, they never sleep (fidelity: F19, F26)."""
        return None if self.sdk == "static" else effective_sleep_time(self.requested, self.sleep_time)

    def hardware_history(self) -> list[Sample]:
        """The timeline with only the points where `current` or `requested` changed."""
        changes: list[Sample] = []
        for sample in self.timeline:
            if not changes or (changes[-1].current, changes[-1].requested) != (
                sample.current,
                sample.requested,
            ):
                changes.append(sample)
        return changes

    def billed_seconds(self, now: float) -> dict[str, float]:
        """Seconds billed per flavor: time in a billed stage, on the flavor it runs (fidelity: F29)."""
        billed: dict[str, float] = {}
        ends = [sample.monotonic for sample in self.timeline[1:]] + [now]
        for sample, end in zip(self.timeline, ends, strict=True):
            flavor = sample.current or sample.requested
            if sample.stage in BILLED_STAGES and flavor is not None and end > sample.monotonic:
                billed[flavor] = billed.get(flavor, 0.0) + end - sample.monotonic
        return billed


@dataclass
class Delays:
    """Timing knobs, changeable at run time through the admin API; they apply to operations started later."""

    build: float
    #: With it, each build draws its duration from [build, build_max] (seeded, see HubState.reset).
    build_max: float | None
    hardware_switch: float
    wake: float
    transient_errors: float
    transient_error_calls: int


@dataclass
class TransientWindow:
    """A fresh private duplicate's routes fail until both budgets are spent (fidelity: F32)."""

    until: float
    calls_left: int

    def open(self, now: float) -> bool:
        return now < self.until or self.calls_left > 0


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
        raise HubSimError(401, "You must be authenticated to perform this action")
    return user


def _check_flavor(flavor: str) -> str:
    if flavor not in HARDWARE_CATALOG:
        raise HubSimError(
            400, f"Invalid hardware flavor '{flavor}', expected one of {', '.join(HARDWARE_CATALOG)}"
        )
    return flavor


def _sleep_time(seconds: int | None) -> int | None:
    """-1 is the client's 'never sleep', which the Hub reports as no gcTimeout (fidelity: F30)."""
    if seconds is None or seconds == -1:
        return None
    if seconds <= 0:
        raise HubSimError(400, "Sleep time must be a positive number of seconds, or -1 to never sleep")
    return seconds


def _sleep_time_for(flavor: str | None, seconds: int | None, kept: int | None) -> int | None:
    """cpu-basic's sleep time is fixed: a request for it is accepted and ignored (fidelity: F27)."""
    if seconds is None or flavor == DEFAULT_FLAVOR:
        return kept
    return _sleep_time(seconds)


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
            self.config.build_seconds,
            self.config.build_seconds_max,
            self.config.hardware_switch_seconds,
            self.config.wake_seconds,
            self.config.transient_error_seconds,
            self.config.transient_error_calls,
        )
        self.build_failures = BuildFailures(0, "BUILD_ERROR")
        self.faults = FaultBook()
        self.rate_limiter = RateLimiter(self.config.rate_limit, self.config.rate_limit_window)
        self.calls: deque[CallRecord] = deque(maxlen=self.config.call_log_size)
        #: Calls per (user, route, status), never truncated like the log: what a benchmark counts.
        self.call_counts: Counter[tuple[str | None, str, int]] = Counter()
        self.build_random = random.Random(self.config.build_seed)
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
            self._record(space, now, "RUNNING", DEFAULT_FLAVOR, DEFAULT_FLAVOR)
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

    def _record(
        self, space: Space, at: float, stage: str, current: str | None, requested: str | None
    ) -> None:
        """The one way a Space's runtime changes, so its timeline (and bill) sees every change."""
        if stage == "RUNNING" and space.stage != "RUNNING":
            space.idle_since = at  # (re)starting to run starts a fresh idle period (fidelity: F26)
            space.app_started = at  # a fresh app process, which remembers no earlier use (fidelity: F41)
        space.stage, space.current, space.requested = stage, current, requested
        last = space.timeline[-1] if space.timeline else None
        if last is None or (last.stage, last.current, last.requested) != (stage, current, requested):
            space.timeline.append(Sample(at, stage, current, requested))

    def _settle(self, space: Space, now: float) -> None:
        """Apply the due transitions, then the sleep that idleness implies, each at its own time."""
        while space.pending and space.pending[0].due <= now:
            step = space.pending.pop(0)
            current = space.requested if step.take_requested else space.current
            self._record(space, step.due, step.stage, current, space.requested)
        timeout = space.gc_timeout
        if space.stage == "RUNNING" and not space.pending and timeout is not None:
            # Never before its last change: the timeline (and the bill) stays in order.
            falls_asleep = max(space.idle_since + timeout, space.timeline[-1].monotonic)
            if falls_asleep <= now:
                self._record(space, falls_asleep, ASLEEP, None, space.requested)

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
        self._record(space, now, "BUILDING", None, space.requested)
        duration = self._build_duration()
        end = now + duration
        space.pending = [Transition(now + duration / 2, "APP_STARTING", False)] if starts else []
        space.pending.append(Transition(end, outcome, starts))

    def _build_duration(self) -> float:
        """The fixed build delay, or a seeded draw from the range (fidelity: F18)."""
        low, high = self.delays.build, self.delays.build_max
        return low if high is None or high <= low else self.build_random.uniform(low, high)

    def _boot(self, space: Space, now: float) -> None:
        """Static Spaces are served as files: RUNNING at once with no hardware (fidelity: F19)."""
        if space.sdk == "static":
            self._record(space, now, "RUNNING", None, None)
        else:
            self._start_build(space, now)

    def _force(self, space: Space, stage: str, now: float) -> None:
        space.pending = []
        current = space.requested if stage in HARDWARE_HOLDING_STAGES else None
        self._record(space, now, stage, current, space.requested)

    def _wake(self, space: Space, now: float) -> None:
        """A sleeping Space restarts its image: APP_STARTING, then RUNNING on `requested` (fidelity: F28)."""
        self._record(space, now, "APP_STARTING", None, space.requested)
        space.pending = [Transition(now + self.delays.wake, "RUNNING", True)]

    # -- lookups -------------------------------------------------------------------------------

    def _lookup(self, space_id: str, now: float) -> Space | None:
        space = self.spaces.get(space_id)
        if space is not None:
            self._settle(space, now)
        return space

    def visible_space(self, user: str | None, space_id: str) -> Space:
        """A Space the caller may see; private-and-foreign ones look missing (fidelity: F5)."""
        space = self._lookup(space_id, self.now())
        if space is None or not self.can_read(user, space):
            raise repo_not_found()
        return space

    def transient_failure(self, user: str | None, space_id: str, route: str) -> HubSimError | None:
        """The error a fresh private duplicate answers on `route` while its window is open (fidelity: F32).

        Only the Space's own writers see it (others get the usual refusals), and each such answer
        spends one call of the window's budget.
        """
        status = TRANSIENT_STATUS.get(route)
        space = self.spaces.get(space_id)
        if status is None or space is None or space.transient is None:
            return None
        if not self.can_write(user, space.namespace) or not space.transient.open(self.now()):
            return None
        space.transient.calls_left = max(0, space.transient.calls_left - 1)
        if status == 401:
            return HubSimError(401, "Invalid username or password.", code="RepoNotFound")
        return repo_not_found()

    def writable_space(self, user: str | None, space_id: str) -> Space:
        """401 anonymous, 404 invisible, 403 visible but not yours: the Hub's order of refusals."""
        user = require_user(user)
        space = self.visible_space(user, space_id)
        if not self.can_write(user, space.namespace):
            raise HubSimError(403, f"You don't have the rights to manage the Space {space_id}")
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
            raise HubSimError(400, f"Invalid repository id '{space_id}'")
        namespace = space_id.split("/")[0]
        if not self.can_write(user, namespace):
            raise HubSimError(
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
        """create_repo: a README only, so a non-static build ends in NO_APP_FILE (fidelity: F19)."""
        user = require_user(user)
        if repo_type != "space":
            raise HubSimError(400, "hubsim only emulates Spaces: 'type' must be 'space'")
        if sdk not in APP_FILES:
            raise HubSimError(400, f"Invalid sdk {sdk!r}, expected one of {', '.join(APP_FILES)}")
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
            sleep_time=_sleep_time_for(requested, sleep_time, None),
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
            sleep_time=_sleep_time_for(requested, sleep_time, None),
            secrets=self._entries(secrets, now),
            variables=self._entries(variables, now),
            duplicated_from=source.id,
        )
        if space.private and (self.delays.transient_errors > 0 or self.delays.transient_error_calls > 0):
            space.transient = TransientWindow(
                now + self.delays.transient_errors, self.delays.transient_error_calls
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
            raise HubSimError(403, f"You don't have the rights to delete the Space {space_id}")
        del self.spaces[space_id]

    def _runtime_control(self, user: str | None, space_id: str, what: str) -> Space:
        space = self.writable_space(user, space_id)
        if space.sdk == "static":
            raise HubSimError(400, f"Cannot {what} a static Space")
        return space

    def request_hardware(self, user: str | None, space_id: str, flavor: str, sleep_time: int | None) -> Space:
        """`requested` changes at once; `current` follows after the switch delay (or at the build end).

        A running Space stays up on its old hardware in `config.hardware_switch_stage` until the switch
        completes; a building one just builds onto the new flavor; a paused or sleeping one keeps it
        for its restart or wake; a failed one is rebuilt on it (fidelity: F20).
        """
        space = self._runtime_control(user, space_id, "request hardware for")
        _check_flavor(flavor)
        now = self.now()
        self._set_sleep_time(space, _sleep_time_for(flavor, sleep_time, space.sleep_time), now)
        if space.stage in SERVING_STAGES:
            switching = flavor != space.current or bool(space.pending)
            stage = self.config.hardware_switch_stage if switching else space.stage
            self._record(space, now, stage, space.current, flavor)
            if switching:
                space.pending = [Transition(now + self.delays.hardware_switch, "RUNNING", True)]
        else:
            self._record(space, now, space.stage, space.current, flavor)
            if space.stage not in BUILDING_STAGES | IDLE_STAGES | {ASLEEP}:
                self._start_build(space, now)
        return space

    def _set_sleep_time(self, space: Space, seconds: int | None, now: float) -> None:
        """A sleep time shorter than the idle time so far puts the Space to sleep now, not in the past.

        Lazily, like every transition: the next lookup shows it asleep.
        """
        space.sleep_time = seconds
        timeout = space.gc_timeout
        if timeout is not None and space.idle_since + timeout < now:
            space.idle_since = now - timeout

    def set_sleep_time(self, user: str | None, space_id: str, seconds: int) -> Space:
        """Answered with the runtime whatever the flavor; the client warns on cpu-basic (fidelity: F27)."""
        space = self._runtime_control(user, space_id, "set the sleep time of")
        self._set_sleep_time(space, _sleep_time_for(space.requested, seconds, space.sleep_time), self.now())
        return space

    def pause(self, user: str | None, space_id: str) -> Space:
        """PAUSED until a restart; `requested` kept, nothing runs so `current` is null (fidelity: F21)."""
        space = self._runtime_control(user, space_id, "pause")
        self._force(space, "PAUSED", self.now())
        return space

    def restart(self, user: str | None, space_id: str) -> Space:
        space = self._runtime_control(user, space_id, "restart")
        self._start_build(space, self.now())
        return space

    def set_entry(self, user: str | None, space_id: str, kind: str, item: KeyValue) -> Space:
        """Adds the key or updates the one there (fidelity: F24, F25)."""
        space = self.writable_space(user, space_id)
        self._store(space, kind)[item.key] = Entry(item.value, item.description, self.now())
        self._secrets_changed(space, kind)
        return space

    def delete_entry(self, user: str | None, space_id: str, kind: str, key: str) -> Space:
        """Deleting a missing key succeeds, as on the Hub (fidelity: F24, F25)."""
        space = self.writable_space(user, space_id)
        if self._store(space, kind).pop(key, None) is not None:
            self._secrets_changed(space, kind)
        return space

    def _secrets_changed(self, space: Space, kind: str) -> None:
        """A running app sees a secret only from its next start, and the Hub restarts it for any
        change: the app rebuilds as on a restart (fidelity: F42). Variables restart nothing."""
        if kind == "secrets" and space.stage in SERVING_STAGES:
            self._start_build(space, self.now())

    @staticmethod
    def _store(space: Space, kind: str) -> dict[str, Entry]:
        return space.secrets if kind == "secrets" else space.variables

    def visit(self, space: Space, now: float) -> None:
        """A request reached the Space's app: activity, and a wake-up if asleep (fidelity: F26, F28)."""
        if space.stage == ASLEEP:
            self._wake(space, now)
        space.idle_since = max(space.idle_since, now)

    def use(self, space: Space) -> None:
        """A request to the app other than its health check: the sandbox was used (fidelity: F41)."""
        space.app_used = max(space.app_used, self.now())

    def last_activity(self, space: Space) -> float:
        """What the app's health answer reports: its last use, else its start (fidelity: F41)."""
        return max(space.app_started, space.app_used)

    def check_edge(self, space_id: str, hub_token: str | None) -> None:
        """The Hub's edge in front of every Space's app: a private Space's app is reached only with a Hub
        token that may read it (401 without a valid one, 404 for one that may not see it); public pass
        (fidelity: F37). A request the edge refuses never reaches the Space: no visit, no wake-up."""
        space = self._lookup(space_id, self.now())
        if space is None:
            raise HubSimError(404, f"No Space {space_id}")
        if not space.private:
            return
        user = self.user_for_token(hub_token) if hub_token else None
        if user is None:
            raise HubSimError(401, "A Hub token with read access is required for this private Space")
        if not self.can_read(user, space):
            raise repo_not_found()

    def check_sandbox(self, space_id: str, bearer: str | None) -> Space:
        """The Space's own app behind the edge: 404 no Space, 503 not serving (still a visit), 401 wrong
        sandbox token, which the sandbox server reads from `X-Sandbox-Authorization` (fidelity: F36)."""
        now = self.now()
        space = self._lookup(space_id, now)
        if space is None:
            raise HubSimError(404, f"No Space {space_id}")
        self.visit(space, now)
        if space.stage not in SERVING_STAGES:
            raise HubSimError(503, f"Space {space_id} is not running (stage {space.stage})")
        secret = space.secrets.get(SANDBOX_TOKEN_SECRET)
        if (
            secret is None
            or bearer is None
            or not hmac.compare_digest(secret.value.encode(), bearer.encode())
        ):
            raise HubSimError(401, "Invalid or missing sandbox token")
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
            raise HubSimError(400, f"Invalid repository id '{space_id}'")
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

    def sleep_now(self, space_id: str) -> Space:
        """As if its sleep time had just run out: only a running Space can fall asleep (fidelity: F26)."""
        space = self.admin_space(space_id)
        if space.stage != "RUNNING" or space.pending:
            raise HubSimError(409, f"Space {space_id} is {space.stage}, only a RUNNING Space can fall asleep")
        self._record(space, self.now(), ASLEEP, None, space.requested)
        return space
