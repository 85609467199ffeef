"""Observation by the batch: one listing per owner feeds every session's loop.

Polling each Space's runtime costs one Hub call per session per poll: a thousand building Spaces
would spend the account's 5-minute budget many times over. Instead, every `observe_interval` the
observer lists each watched owner's Spaces with their runtime (`HubClient.list_owner_spaces`,
one paginated call, 500 Spaces a page), keeps the latest listing, and wakes the loops whose Space
changed from what their last pass saw, vanished, or that are waiting for the Hub (building,
starting) without an edge probe to wake them (hub/edge_probe.py). A loop then reads its
Space from the listing instead of asking the Hub, so converged sessions cost nothing but their
share of the listing, and drift (a Space deleted, paused or moved to other hardware behind the
operator's back) is noticed within about one interval. While the edge probes fall behind, owners
are listed every second where the Hub's window pays for it; while creates are being sent, a listing
waits for them (one after them shows all their Spaces, and its calls are the creates').

A listing is used for a Space only when it was sent (its first page left the Hub gate) after this
operator last acted on that Space (an older one would not show the action), and not when it is
older than a few intervals (the Hub failed to answer: better ask per Space; a listing under way is
waited for first). A Space missing from a listing is only a hint:
the session confirms it with its own read before it concludes anything. A session's own read of
its Space serves its next passes as a listing asked for at that time would (a session polling an
unhealthy sandbox reads its Space once, not once a poll), and the sandbox's last health answer is
kept beside it while it holds (core/reads.py). This is I/O, in the shell: what the core receives is
still an `Observation` with a `SpaceView`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sandbox_operator.core.model import SpaceView
from sandbox_operator.core.reads import CheckedHealth, listing_serves, read_still_serves
from sandbox_operator.hub.errors import HubError
from sandbox_operator.hub.spaces import Listing

log = logging.getLogger(__name__)

#: A listing older than this many intervals is not used (the Hub did not answer since).
STALE_INTERVALS = 3

#: The shortest time (seconds, at most the interval) from the end of one listing of an owner to the
#: start of the next: in a burst, sessions waiting for a listing after they acted share the next one,
#: where each ending listing would start another at once, every one parsing the whole fleet (at 1,000
#: Spaces, about 140 listings in a 15-second burst and the operator's peak memory with them).
LISTING_SPACING = 1.0
#: The spacing while the Hub's window can pay for a listing that often until it resets: every session
#: of a burst waits about the spacing more for the listing that gives its app's address (1.1-1.6 s of
#: a thousand sessions' p50 at 1 s; 0.25 s gained nothing over 0.5: docs/performance.md, round eleven).
#: A window that cannot pay for it keeps its calls for the creates and the rest of the window.
LISTING_SPACING_WITH_ROOM = 0.5

#: How often a listing held back while creates are sent looks again (seconds).
CREATES_SENT_RECHECK = 0.25

ListSpaces = Callable[[str, str], Awaitable[Listing]]


@dataclass
class Watched:
    """A session loop the observer feeds: its Space, its wake-up, and whether it waits for the Hub."""

    space_id: str
    wakeup: asyncio.Event
    waiting: bool = False


def _owner(space_id: str) -> str:
    return space_id.split("/", 1)[0]


def _state(view: SpaceView | None) -> tuple[object, ...] | None:
    """What a session acts on, as both a listing and a read of the Space show it (a read may carry the
    marker): a difference here is news to the session."""
    if view is None:
        return None
    return (
        view.stage,
        view.current_hardware,
        view.requested_hardware,
        view.sleep_time,
        view.private,
        view.sandbox_url,
    )


@dataclass
class FleetObserver:
    """The latest listing per owner, and the loops it wakes; `interval` <= 0 turns it off."""

    list_spaces: ListSpaces
    prefix: str
    interval: float
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    #: Whether the Hub's window affords this many calls a second until it resets (`HubGate.affords`).
    affords: Callable[[float], bool] = lambda _: False
    #: Whether the edge probes of building Spaces fall behind (`EdgeProber.behind`): a listing then
    #: shows sooner than they do which builds ended.
    probes_behind: Callable[[], bool] = lambda: False
    #: Whether session `uid`'s Space is probed at its edge (`EdgeProber.probing`): its app's answer
    #: wakes the session, and a listing showing its Space as before is no news to it.
    probed: Callable[[str], bool] = lambda _: False
    #: Whether creates are being sent (`CreateSlots.sending`): a listing then waits for them, at most
    #: an interval.
    creates_sending: Callable[[], bool] = lambda: False
    _listings: dict[str, Listing] = field(default_factory=dict)
    _watched: dict[str, Watched] = field(default_factory=dict)
    #: When this operator last acted on each Space (monotonic): older listings do not show it.
    _acted: dict[str, float] = field(default_factory=dict)
    #: The listing under way per owner, which every caller in the meantime shares.
    _listing: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    #: When each owner's last listing ended (monotonic), answered or not: the next waits its spacing.
    _listed_at: dict[str, float] = field(default_factory=dict)
    #: Each Space's state as its session's last pass observed it: a listing showing the same is no news.
    _seen: dict[str, tuple[object, ...] | None] = field(default_factory=dict)
    #: Spaces this process duplicated (the Hub answered 200): they carry our marker, set in the same
    #: request. Lost on a restart, after which the marker is read as before.
    _created: set[str] = field(default_factory=set)
    #: Each Space as the operator last read it itself (monotonic time the read was asked): as good as
    #: a listing asked for then, until a newer listing or an action replaces it.
    _read: dict[str, tuple[float, SpaceView]] = field(default_factory=dict)
    #: Each Space's last health answer, reused while it still holds (core/reads.py).
    _health: dict[str, CheckedHealth] = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return self.interval > 0

    def watch(self, uid: str, space_id: str, wakeup: asyncio.Event, *, waiting: bool) -> None:
        """Feed the loop of session `uid` (its Space, whether it waits for the Hub) from now on.

        Called after each pass: a wake-up set during the pass by a listing sent before the pass's
        own last action on (or read of) the Space is dropped, since that listing would not be used;
        the next listing wakes it."""
        self._watched[uid] = Watched(space_id, wakeup, waiting)
        listing = self._listings.get(_owner(space_id))
        if listing is not None and listing.taken_at <= self._known_since(space_id):
            wakeup.clear()

    def forget(self, uid: str) -> None:
        watched = self._watched.pop(uid, None)
        if watched is not None:
            self._acted.pop(watched.space_id, None)
            self._seen.pop(watched.space_id, None)
            self._created.discard(watched.space_id)
            self._read.pop(watched.space_id, None)
            self._health.pop(watched.space_id, None)

    def created(self, space_id: str) -> None:
        """This process's duplicate made the Space: until it is confirmed, a read after the Hub's
        visibility lag need not read its marker again."""
        self._created.add(space_id)

    def made_here(self, space_id: str) -> bool:
        return space_id in self._created

    def saw(self, space_id: str, view: SpaceView | None) -> None:
        """The session's pass observed its Space so (from a listing or a read of its own)."""
        self._seen[space_id] = _state(view)

    def acted(self, space_id: str) -> None:
        """This operator just changed the Space: listings and reads asked for before now do not show
        that, so they are not used for it, nor is its last health answer."""
        self._acted[space_id] = self.clock()
        self._read.pop(space_id, None)
        self._health.pop(space_id, None)

    def read(self, space_id: str, view: SpaceView | None, asked_at: float) -> None:
        """The session read its Space itself, asked at `asked_at` (this observer's clock): until a
        newer listing, later passes use that read as they would a listing asked for then, while it
        shows the Space running as asked (`core.reads.read_still_serves`). A Space not
        found is not kept: the next pass asks again (it may be a fresh duplicate not visible yet)."""
        if view is None or not self.enabled:
            self._read.pop(space_id, None)
        elif asked_at > self._acted.get(space_id, -1.0):
            self._read[space_id] = (asked_at, view)

    def _known_since(self, space_id: str) -> float:
        """When the newest of the last action on the Space and the session's own read of it was
        asked: a listing asked for before then is not used for it."""
        read = self._read.get(space_id)
        return max(self._acted.get(space_id, -1.0), read[0] if read is not None else -1.0)

    def _fresh(self, taken_at: float) -> bool:
        return self.clock() - taken_at <= STALE_INTERVALS * self.interval

    def view(self, space_id: str) -> SpaceView | None:
        """The Space as the latest usable listing, or the session's own newer read, shows it; None:
        ask the Hub for this Space itself (nothing asked for since the last action on it, only what
        is too old, the Space not in the listing, or switching hardware in it)."""
        if not self.enabled:
            return None
        listing = self._usable_listing(space_id)
        if listing is not None:
            listed = listing.spaces.get(space_id)
            return listed if listed is None or listing_serves(listed) else None
        return self._serving_read(space_id)

    def _usable_listing(self, space_id: str) -> Listing | None:
        """The owner's latest listing, if it is fresh and newer than what the operator knows of the Space."""
        listing = self._listings.get(_owner(space_id))
        if listing is None or listing.taken_at <= self._known_since(space_id):
            return None
        return listing if self._fresh(listing.taken_at) else None

    def _serving_read(self, space_id: str) -> SpaceView | None:
        """The session's own read of the Space, while it is fresh and may stand in for the next ones."""
        read = self._read.get(space_id)
        return read[1] if read is not None and self._fresh(read[0]) and read_still_serves(read[1]) else None

    def has_news(self, space_id: str) -> bool:
        """Whether a fresh listing, or a read still serving, is newer than the operator's last action
        on the Space: `view` then says what the Hub shows of it (a Space gone from the listing too)."""
        if not self.enabled:
            return True
        return self._usable_listing(space_id) is not None or self._serving_read(space_id) is not None

    def health(self, space_id: str) -> CheckedHealth | None:
        """The Space's last health answer since the operator last acted on it (none is kept while
        observation by the batch is off: each pass then asks the Hub and the sandbox itself)."""
        return self._health.get(space_id)

    def checked(self, space_id: str, health: CheckedHealth) -> None:
        if self.enabled:
            self._health[space_id] = health

    async def listed(self, space_id: str) -> SpaceView | None:
        """`view`, after listing the owner's Spaces first if no listing of them was made yet and this
        process has not acted on the Space: after a restart, a thousand converged sessions share one
        listing instead of a call each, while a Space just created is read at once, never held back
        behind a listing that waits at the gate. A listing under way is shared too when the latest one
        no longer serves the Space (gone stale, or older than the last action on it): it costs no
        call, and a read of this Space alone would queue behind it at the gate anyway. A session the
        latest listing still serves does not wait for it: where the Hub's window paces a listing's
        pages, one takes half a minute, and a building Space's app answering meanwhile would wait
        with it (docs/performance.md, round twelve)."""
        owner = _owner(space_id)
        if self.enabled and (
            (owner in self._listing and not self.has_news(space_id))
            or (owner not in self._listings and space_id not in self._acted)
        ):
            await self.observe_owner(owner)
        return self.view(space_id)

    async def after_action(self, space_id: str) -> SpaceView | None:
        """The Space as the first listing sent after this operator last acted on it shows it (waiting
        for the listing under way, then one more if that one left before the action): Spaces this
        process just duplicated are confirmed by the next listing, which a whole burst of them shares,
        instead of a read each. None: no such listing (it failed), or it does not show the Space yet:
        the session reads its Space itself."""
        owner = _owner(space_id)
        for _ in range(2):
            if not self.enabled:
                return None
            listing = self._listings.get(owner)
            if listing is not None and listing.taken_at > self._acted.get(space_id, -1.0):
                return self.view(space_id)
            await self.observe_owner(owner)
        return self.view(space_id)

    def owners(self) -> set[str]:
        return {_owner(watched.space_id) for watched in self._watched.values()}

    async def observe_owner(self, owner: str) -> None:
        """List one owner's Spaces (or wait for the listing under way)."""
        task = self._listing.get(owner)
        if task is None:
            task = asyncio.ensure_future(self._list(owner, self._spacing_left(owner)))
            self._listing[owner] = task
            task.add_done_callback(lambda _: self._listing.pop(owner, None))
        await asyncio.shield(task)

    def _spacing_left(self, owner: str) -> float:
        """How long the next listing of `owner` waits for its spacing from the last one."""
        ended = self._listed_at.get(owner)
        if ended is None:
            return 0.0
        return max(0.0, min(self._spacing(owner), self.interval) - (self.clock() - ended))

    def _spacing(self, owner: str) -> float:
        """The shorter spacing while the Hub's window pays for listings of `owner` that often (each
        as many calls as its last one took), else the longer one."""
        with_room = self.affords(self._calls(owner) / LISTING_SPACING_WITH_ROOM)
        return LISTING_SPACING_WITH_ROOM if with_room else LISTING_SPACING

    def _calls(self, owner: str) -> int:
        """Hub API calls the next listing of `owner` takes: as many as its last one (1 before any)."""
        last = self._listings.get(owner)
        return last.calls if last is not None else 1

    async def _list(self, owner: str, delay: float = 0.0) -> None:
        """List one owner's Spaces (after `delay`, which callers in the meantime share) and wake the
        loops whose Space changed or vanished, or that wait."""
        if delay > 0:
            await self.sleep(delay)
        await self._after_creates()
        try:
            listing = await self.list_spaces(owner, self.prefix)
        except HubError as error:
            log.warning("listing the Spaces of %s failed: %s; sessions read their own", owner, error)
            return
        finally:
            self._listed_at[owner] = self.clock()
        previous = self._listings.get(owner)
        self._listings[owner] = listing
        spaces = listing.spaces
        for uid, watched in list(self._watched.items()):
            space_id = watched.space_id
            if _owner(space_id) != owner or listing.taken_at <= self._known_since(space_id):
                continue  # acted on or read since this listing was sent: it would not use it
            now = spaces.get(space_id)
            if space_id in self._seen:
                changed = self._seen[space_id] != _state(now)
            else:
                changed = previous is not None and previous.spaces.get(space_id) != now
            # A Space missing is news only to a session that saw it (drift): one whose create was
            # refused or is still in flight would be woken by every listing, out of its backoff.
            # A waiting session whose building Space is probed learns nothing from the same view
            # again: a burst's thousand would each make a pass on every listing.
            if changed or (watched.waiting and not self.probed(uid)):
                watched.wakeup.set()

    async def _after_creates(self) -> None:
        """Wait while creates are being sent, at most an interval: each call of a listing meanwhile is
        one a create could have had, and one listing after them shows every Space they made. A burst
        of 1,000 at the window's start spent 37 calls so (listings, and reads where the listing had
        left before a duplicate was answered): as many of its sessions waited for the next window
        (docs/performance.md, round thirteen). Creates waiting for the window's reset hold nothing."""
        until = self.clock() + self.interval
        while self.creates_sending() and self.clock() < until:
            await self.sleep(CREATES_SENT_RECHECK)

    async def close(self) -> None:
        """Stop the listings in flight, before the Hub client closes under them: a listing that outlived
        its callers (they wait shielded) would otherwise call a closed client as the process stops."""
        listings = list(self._listing.values())
        for task in listings:
            task.cancel()
        await asyncio.gather(*listings, return_exceptions=True)

    async def run(self) -> None:
        """Every interval, one listing per watched owner (the owners one after another); while the
        edge probes fall behind, every `LISTING_SPACING` where the Hub's window pays for it: a
        listing shows every Space whose build ended, where the probes reach each only every few
        seconds."""
        while True:
            started = self.clock()
            owners = sorted(self.owners())
            for owner in owners:
                await self.observe_owner(owner)
            while (left := self.interval - (self.clock() - started)) > 0:
                await self.sleep(min(LISTING_SPACING, left))
                if self._hurried(owners):
                    break

    def _hurried(self, owners: list[str]) -> bool:
        """The edge probes fall behind, and the Hub's window affords a listing of `owners` (each as
        many calls as its last one) every `LISTING_SPACING` until it resets."""
        if not owners or not self.probes_behind():
            return False
        return self.affords(sum(self._calls(owner) for owner in owners) / LISTING_SPACING)
