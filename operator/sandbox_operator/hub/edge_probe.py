"""A building Space's app, asked at the Hub's edge whether it answers yet: Ready within about a second.

Listings come every `observe_interval` (30 s): a session whose Space finished building would wait
for the next one. The Space's app answers at its own address (`https://{subdomain}.hf.space`,
docs/hub-fidelity.md F36), which is not the Hub API: asking its health endpoint costs no Hub call.
So while a session's Space builds (BUILDING or APP_STARTING: no app of an earlier build serves
meanwhile), this prober asks the app's health endpoint with the session's own sandbox token, and
the first healthy answer wakes the session: a Space that was building for a flavor and now answers
runs on it (F18), which the next listing confirms. A pool's building Spaces are probed the same way,
each with its own token (pools/loop.py).

Probes cost CPU here and at the edge, so they are bounded process-wide (`edge_probe_rate` a
second; an edge that answers 429, a limit no public source names, halves the rate in use), and a
Space is probed closely only from a little before its template's builds end (core/builds.py learns
how long they take). When more are due than the rate allows, the one due
longest goes first, then the oldest build: each waiting Space is probed as often as the others
(a strict oldest-first order would starve a young Space that finished among older ones still
building), and first come, first served among equals. When more are due than a second of the rate
(`behind`), the observer lists the owners every second where the Hub's window pays for it: one
listing shows every build that ended (hub/listing.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from http import HTTPStatus

from sandbox_operator.core.builds import BuildTimes, probe_delay
from sandbox_operator.core.model import HealthResult, SpaceView
from sandbox_operator.core.reads import listing_serves
from sandbox_operator.observability import metrics

log = logging.getLogger(__name__)

#: How often the prober looks for probes that are due.
TICK = 0.1
#: Longest wait for one probe's answer: the next one is due by then anyway.
PROBE_TIMEOUT = 5.0
#: The stages of a build with no app serving meanwhile: an app answering now is the new build's.
BUILD_STAGES = frozenset({"BUILDING", "APP_STARTING"})
#: After the edge answered a probe 429, the rate in use climbs back to `rate` over this many seconds.
EDGE_RECOVERY = 60.0
#: The lowest rate in use after 429s (probes a second): a few building Spaces still see their apps answer.
RATE_FLOOR = 1.0

Health = Callable[[str, str, str], Awaitable[HealthResult]]


@dataclass(frozen=True)
class ProbeTarget:
    """A building Space's app, and what a probe of it sends."""

    space_id: str
    #: The flavor it builds for: the one it runs on once its app answers (F18).
    requested: str
    sandbox_url: str
    token: str
    hub_token: str
    #: When its build began (wall clock, seconds).
    since: float
    #: The template it was duplicated from, when its build time teaches that template's.
    template: str | None = None


@dataclass
class _Probe:
    target: ProbeTarget
    due: float
    #: The Space as the Hub last showed it building (a listing or a read), when a session offered it.
    seen: SpaceView | None = None
    answer: HealthResult | None = None
    in_flight: bool = False


@dataclass
class EdgeProber:
    """The building Spaces of this process's sessions and pools, probed at their edge; `rate` <= 0: off."""

    health: Health
    rate: float
    #: Seconds between probes of one Space once its build may have ended.
    cadence: float
    clock: Callable[[], float] = time.time
    builds: BuildTimes = field(default_factory=BuildTimes)
    _probes: dict[str, _Probe] = field(default_factory=dict)
    _wakeups: dict[str, asyncio.Event] = field(default_factory=dict)
    #: When this process's duplicate of each session's Space was answered: its build began then (F18).
    _duplicated: dict[str, float] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    #: Probes that may still go this second (a token bucket of `rate`, one second's worth at most).
    _allowance: float = 0.0
    _last_tick: float | None = None
    #: Probes that were due at the last tick and that the rate left waiting.
    _overdue: int = 0
    #: The rate probes go at now: `rate`, or less for a while after the edge answered 429.
    _rate_in_use: float = 0.0
    #: When a 429 last cut the rate in use, and when that was last logged.
    _last_cut: float | None = None
    _last_warned: float | None = None

    def __post_init__(self) -> None:
        self._allowance = self._rate_in_use = max(0.0, self.rate)
        metrics.EDGE_PROBE_RATE.set_function(lambda: self._rate_in_use)  # read at each scrape

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def bind(self, uid: str, wakeup: asyncio.Event) -> None:
        """Wake session `uid` with this event when its Space's app answers."""
        self._wakeups[uid] = wakeup

    def duplicated(self, uid: str) -> None:
        """The Hub just answered the session's duplicate: its Space's build begins now."""
        self._duplicated[uid] = self.clock()

    def build_began(self, uid: str) -> float | None:
        """When the session's Space began building, if this process duplicated it: a build time
        counted from the recorded request would include its wait for a turn and at the gate."""
        return self._duplicated.get(uid)

    def offer(self, uid: str, target: ProbeTarget, seen: SpaceView | None = None) -> None:
        """Probe this Space from now on (the same build: only the token or address may have changed)."""
        if not self.enabled:
            return
        probe = self._probes.get(uid)
        same = probe is not None and (probe.target.space_id, probe.target.requested) == (
            target.space_id,
            target.requested,
        )
        if probe is not None and same:
            probe.seen = seen
            asked = (probe.target.sandbox_url, probe.target.token, probe.target.hub_token)
            if asked != (target.sandbox_url, target.token, target.hub_token):
                # An answer to another token proves nothing about this one; the build began as before.
                probe.target, probe.answer = replace(target, since=probe.target.since), None
            return
        now = self.clock()
        wait = probe_delay(now - target.since, self.builds.shortest(target.template, now), cadence=0.0)
        self._probes[uid] = _Probe(target, due=now + wait, seen=seen)

    def building_view(
        self,
        uid: str,
        space: SpaceView,
        token: str | None,
        hub_token: str | None,
        *,
        private: bool,
        since: float,
        template: str | None,
    ) -> tuple[SpaceView, HealthResult | None]:
        """The Space as its app's edge shows it: building for a flavor, yet answering its health check
        with `token`, it runs on that flavor (F18) before any listing says so, with that answer. A Space
        building with an app address is offered for probing (its build began at `since`), once a
        private one has a read token to pass the edge with; any other is withdrawn."""
        requested = space.requested_hardware
        if space.stage not in BUILD_STAGES or requested is None or not token or not space.sandbox_url:
            answer = self._answered_running(uid, space, token, hub_token)
            self.withdraw(uid)
            return space, answer
        if private and not hub_token:
            return space, None  # its edge is not passed without a read token: the core says so once it runs
        answer = self.answered(uid, space.space_id, requested)
        if answer is not None:
            return replace(space, stage="RUNNING", current_hardware=requested), answer
        edge = ProbeTarget(
            space.space_id, requested, space.sandbox_url, token, hub_token or "", since, template
        )
        self.offer(uid, edge, seen=space)
        return space, None

    def _answered_running(
        self, uid: str, space: SpaceView, token: str | None, hub_token: str | None
    ) -> HealthResult | None:
        """The healthy answer of the app of a Space a listing now shows running on the flavor it was
        building for, asked at the same address with the tokens the session holds: that is its health
        check, not one more (a listing that caught up with the answer before the session's pass)."""
        probe = self._probes.get(uid)
        if probe is None or probe.answer is None or space.stage != "RUNNING":
            return None
        target = probe.target
        running = (space.space_id, space.current_hardware, space.sandbox_url, token, hub_token or "")
        built = (target.space_id, target.requested, target.sandbox_url, target.token, target.hub_token)
        return probe.answer if running == built else None

    def answered(self, uid: str, space_id: str, requested: str | None) -> HealthResult | None:
        """The healthy answer of the session's Space's app while it was building for `requested`."""
        probe = self._probes.get(uid)
        if probe is None or (probe.target.space_id, probe.target.requested) != (space_id, requested):
            return None
        return probe.answer

    def answered_view(self, uid: str, space_id: str) -> SpaceView | None:
        """The Space as the Hub last showed it building, once its app answered healthy since: no newer
        view of the Hub is needed to call it running (the answer is the news). A session whose listing
        has gone stale, or waits at the gate while creates spend the Hub's window, is Ready on it."""
        probe = self._probes.get(uid)
        if probe is None or probe.answer is None or probe.target.space_id != space_id:
            return None
        if probe.seen is None or not listing_serves(probe.seen):
            return None  # a switch of flavor: its end (a bill) is read from the Hub (core/reads.py)
        return probe.seen

    def probing(self, uid: str) -> bool:
        """Whether the session's Space is probed at its edge: its app's first answer wakes the session."""
        probe = self._probes.get(uid)
        return probe is not None and probe.answer is None

    def behind(self) -> bool:
        """Whether more probes were due at the last tick than the rate serves in a second: each
        building Space's app is then asked only every few seconds (a listing shows sooner which
        builds ended)."""
        return self._overdue > self._rate_in_use

    def withdraw(self, uid: str) -> None:
        """The session's Space is not building (any more): no more probes."""
        self._probes.pop(uid, None)

    def forget(self, uid: str) -> None:
        self.withdraw(uid)
        self._wakeups.pop(uid, None)
        self._duplicated.pop(uid, None)

    async def run(self) -> None:
        """Forever: every tick, the probes that are due, as many as the rate allows."""
        while True:
            self.tick()
            await asyncio.sleep(TICK)

    def tick(self) -> None:
        """Start the probes due now that the rate allows (each runs as a task of its own)."""
        now = self.clock()
        elapsed = TICK if self._last_tick is None else max(0.0, now - self._last_tick)
        self._last_tick = now
        self._rate_in_use = min(self.rate, self._rate_in_use + elapsed * self.rate / EDGE_RECOVERY)
        self._allowance = min(self._rate_in_use, self._allowance + elapsed * self._rate_in_use)
        due = [
            (probe.due, probe.target.since, uid)
            for uid, probe in self._probes.items()
            if probe.answer is None and not probe.in_flight and probe.due <= now
        ]
        started = sorted(due)[: int(self._allowance)]
        self._overdue = len(due) - len(started)
        for _, _, uid in started:
            self._allowance -= 1
            probe = self._probes[uid]
            probe.in_flight = True
            task = asyncio.ensure_future(self._probe(uid, probe))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _probe(self, uid: str, probe: _Probe) -> None:
        target = probe.target
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):  # not wait_for: no second task per probe
                answer = await self.health(target.sandbox_url, target.token, target.hub_token)
        except TimeoutError:
            answer = HealthResult(False, f"{target.sandbox_url} did not answer in {PROBE_TIMEOUT:.0f}s")
        finally:
            probe.in_flight = False
        now = self.clock()
        building = now - target.since
        refused = answer.status == HTTPStatus.TOO_MANY_REQUESTS
        metrics.EDGE_PROBES.labels("healthy" if answer.ok else "refused" if refused else "other").inc()
        if refused:
            self._refused(now)
        if self._probes.get(uid) is not probe:
            return  # withdrawn, or a new build, meanwhile
        if not answer.ok:
            shortest = self.builds.shortest(target.template, now)
            probe.due = now + probe_delay(building, shortest, self.cadence)
            return
        probe.answer = answer
        if target.template is not None:
            self.builds.record(target.template, building, now)
        log.debug("Space %s answers at its edge after %.1fs of build", target.space_id, building)
        wakeup = self._wakeups.get(uid)
        if wakeup is not None:
            wakeup.set()

    def _refused(self, now: float) -> None:
        """The edge refused a probe for its rate: probe half as fast, at most once a second (the probes
        in flight when it began refusing answer 429 too), and climb back over `EDGE_RECOVERY`."""
        if self._last_cut is not None and now - self._last_cut < 1.0:
            return
        self._last_cut = now
        self._rate_in_use = max(min(RATE_FLOOR, self.rate), self._rate_in_use / 2)
        self._allowance = min(self._allowance, self._rate_in_use)
        if self._last_warned is None or now - self._last_warned >= EDGE_RECOVERY:  # a line a minute
            self._last_warned = now
            log.warning(
                "the Hub's edge answered a health probe 429: probing building Spaces at %.0f a second "
                "for now",
                self._rate_in_use,
            )
