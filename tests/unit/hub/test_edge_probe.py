"""A building Space's app is probed at its edge on a short cadence around when its build should end,
oldest build first within a process-wide rate, and its first healthy answer wakes its session."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from sandbox_operator.core.builds import EARLY_SHARE, BuildTimes, probe_delay
from sandbox_operator.core.model import HealthResult, SpaceView
from sandbox_operator.hub.edge_probe import EdgeProber, ProbeTarget
from sandbox_operator.hub.sandbox_health import sandbox_answer

TEMPLATE = "templates/box"


def _sample(name: str, **labels: str) -> float:
    """A metric's value as a scrape would read it."""
    return REGISTRY.get_sample_value(f"sandbox_operator_{name}", labels) or 0.0


def test_build_times_keep_the_shortest_build_that_ended_within_their_memory() -> None:
    builds = BuildTimes(memory=900.0)
    assert builds.shortest(TEMPLATE, 0.0) is None
    assert builds.shortest(None, 0.0) is None
    for ended, seconds in ((100.0, 70.0), (110.0, 61.3), (120.0, 90.0)):
        builds.record(TEMPLATE, seconds, ended)
    assert builds.shortest(TEMPLATE, 120.0) == 61.3
    assert builds.shortest("templates/other", 120.0) is None
    # 1,010 s: 61.3 s ended more than 900 s ago; 90 s is the shortest since.
    assert builds.shortest(TEMPLATE, 1010.0 + 1) == 90.0
    # Long after the last build, the latest still counts (nothing newer says otherwise).
    assert builds.shortest(TEMPLATE, 10_000.0) == 90.0
    builds.record(TEMPLATE, 75.0, 10_001.0)
    assert builds.shortest(TEMPLATE, 10_001.0) == 75.0


def test_the_longest_builds_of_a_burst_ending_last_do_not_hide_its_shortest() -> None:
    """A burst's Spaces end longest build last: the next burst is probed from before its shortest."""
    builds = BuildTimes()
    burst = [60.0 + (i * 37 % 1000) * 0.06 for i in range(1000)]  # builds of 60-120 s
    ends = sorted((i * 0.04 + seconds, seconds) for i, seconds in enumerate(burst))  # started over 40 s
    for ended, seconds in ends:  # recorded as they end: the longest last
        builds.record(TEMPLATE, seconds, ended)
    assert builds.shortest(TEMPLATE, 300.0) == 60.0


def test_probes_are_close_only_from_a_little_before_the_build_may_end() -> None:
    assert probe_delay(0.0, None, 1.0) == 1.0  # nothing learned yet: at the cadence from the start
    close_from = 60.0 * (1 - EARLY_SHARE)
    assert probe_delay(10.0, 60.0, 1.0) == close_from - 10.0  # one wait, to then
    assert probe_delay(close_from - 0.5, 60.0, 1.0) == 1.0
    assert probe_delay(100.0, 60.0, 1.0) == 1.0  # a long build: at the cadence until it answers
    assert probe_delay(10.0, 60.0, 0.0) == close_from - 10.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Edge:
    """The apps' edge: which URLs answer healthy, and who was asked."""

    def __init__(self) -> None:
        self.running: set[str] = set()
        self.asked: list[str] = []

    async def health(self, sandbox_url: str, token: str, hub_token: str) -> HealthResult:
        self.asked.append(sandbox_url)
        if sandbox_url in self.running and token == "t":
            return HealthResult(True, "200 OK", 200)
        return HealthResult(False, f"{sandbox_url} answered 503", 503)


def _target(i: int, since: float, template: str | None = TEMPLATE, token: str = "t") -> ProbeTarget:
    return ProbeTarget(f"o/s-{i}", "cpu-basic", f"http://edge/s-{i}", token, "", since, template)


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_within_the_rate_the_probe_due_longest_goes_first_then_the_oldest_build() -> None:
    async def scenario() -> None:
        clock, edge = Clock(), Edge()
        prober = EdgeProber(edge.health, rate=2.0, cadence=1.0, clock=clock)
        for i, since in enumerate((clock.now - 5, clock.now - 50, clock.now - 20)):
            prober.offer(f"u{i}", _target(i, since))
        clock.now += 1.0
        prober.tick()
        await _settle()
        assert edge.asked == ["http://edge/s-1", "http://edge/s-2"]  # two a second, oldest first
        clock.now += 1.0
        prober.tick()
        await _settle()
        # Nothing learned yet, all three are due again: the one that waited longest goes first.
        assert edge.asked[2:] == ["http://edge/s-0", "http://edge/s-1"]

    asyncio.run(scenario())


def test_the_prober_is_behind_when_more_probes_are_due_than_a_second_of_its_rate() -> None:
    """Then a listing shows sooner which builds ended (hub/listing.py `FleetObserver.run`)."""

    async def scenario() -> None:
        clock, edge = Clock(), Edge()
        prober = EdgeProber(edge.health, rate=2.0, cadence=1.0, clock=clock)
        for i in range(4):
            prober.offer(f"u{i}", _target(i, clock.now))
        clock.now += 1.0
        prober.tick()
        await _settle()
        assert not prober.behind()  # two asked, two left waiting: a second of the rate
        assert prober.probing("u0") and not prober.probing("nobody")
        for i in (4, 5):
            prober.offer(f"u{i}", _target(i, clock.now))
        clock.now += 0.5  # the two asked are not due again yet; half a second's allowance: one probe
        prober.tick()
        await _settle()
        assert prober.behind()  # four due, one goes: three wait, more than a second of the rate
        edge.running.add("http://edge/s-0")
        for _ in range(4):  # each probe due again, two a second
            clock.now += 1.0
            prober.tick()
            await _settle()
        assert not prober.probing("u0")  # it answered: its session is woken, the probes end

    asyncio.run(scenario())


def test_an_edge_answering_429_halves_the_rate_in_use_and_it_climbs_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No public source names a limit of the apps' edge; one that answers 429 is obeyed, not fought."""

    class RefusingEdge(Edge):
        refusing = True

        async def health(self, sandbox_url: str, token: str, hub_token: str) -> HealthResult:
            self.asked.append(sandbox_url)
            if self.refusing:
                return HealthResult(False, f"{sandbox_url} answered 429", 429)
            return HealthResult(False, f"{sandbox_url} answered 503", 503)

    async def probed_in(prober: EdgeProber, clock: Clock, edge: Edge, seconds: int) -> int:
        asked = len(edge.asked)
        for _ in range(seconds * 10):
            clock.now += 0.1
            prober.tick()
            await _settle()
        return len(edge.asked) - asked

    async def scenario() -> None:
        clock, edge = Clock(), RefusingEdge()
        prober = EdgeProber(edge.health, rate=40.0, cadence=0.5, clock=clock)
        assert _sample("edge_probe_rate") == 40.0
        refused = _sample("edge_probes_total", answer="refused")
        for i in range(200):
            prober.offer(f"u{i}", _target(i, clock.now))
        # Refused all along: halved once a second (40, 20, 10, ... 1): a quarter of the 400 unrefused.
        probed = await probed_in(prober, clock, edge, 10)
        assert probed < 100
        cuts = [r for r in caplog.records if "answered a health probe 429" in r.getMessage()]
        assert len(cuts) == 1  # a line a minute at most, not one a cut
        assert prober.behind()  # 200 due, a probe or two a second serve them
        # What an alert reads: every refusal counted, and the rate in use cut.
        assert _sample("edge_probes_total", answer="refused") - refused == probed
        assert _sample("edge_probe_rate") < 2.0
        edge.refusing = False
        await probed_in(prober, clock, edge, 60)  # the rate climbs back over EDGE_RECOVERY
        assert await probed_in(prober, clock, edge, 10) == 400  # the whole rate again
        assert _sample("edge_probe_rate") == 40.0

    asyncio.run(scenario())


def test_the_first_healthy_answer_wakes_the_session_and_teaches_the_build_time() -> None:
    async def scenario() -> None:
        clock, edge = Clock(), Edge()
        prober = EdgeProber(edge.health, rate=10.0, cadence=1.0, clock=clock)
        woken = asyncio.Event()
        prober.bind("u0", woken)
        prober.offer("u0", _target(0, clock.now))
        answers = {a: _sample("edge_probes_total", answer=a) for a in ("healthy", "other")}
        clock.now += 1.0
        prober.tick()
        await _settle()
        assert not woken.is_set()
        assert prober.answered("u0", "o/s-0", "cpu-basic") is None
        edge.running.add("http://edge/s-0")
        clock.now += 60.0
        prober.tick()
        await _settle()
        assert woken.is_set()
        assert {a: _sample("edge_probes_total", answer=a) - n for a, n in answers.items()} == {
            "healthy": 1,
            "other": 1,
        }
        answer = prober.answered("u0", "o/s-0", "cpu-basic")
        assert answer is not None and answer.ok
        assert prober.answered("u0", "o/s-0", "t4-small") is None  # built for another flavor: not that
        assert prober.builds.shortest(TEMPLATE, clock.now) == 61.0
        asked = len(edge.asked)
        clock.now += 5.0
        prober.tick()
        await _settle()
        assert len(edge.asked) == asked  # answered: not asked again

        # The template's next Space is left alone until its build may end.
        prober.offer("u1", _target(1, clock.now))
        clock.now += 30.0
        prober.tick()
        await _settle()
        assert "http://edge/s-1" not in edge.asked
        clock.now += 61.0 * (1 - EARLY_SHARE) - 30.0
        prober.tick()
        await _settle()
        assert edge.asked[-1] == "http://edge/s-1"

    asyncio.run(scenario())


def test_an_answer_to_another_token_or_a_withdrawn_build_counts_for_nothing() -> None:
    async def scenario() -> None:
        clock, edge = Clock(), Edge()
        edge.running.add("http://edge/s-0")
        prober = EdgeProber(edge.health, rate=10.0, cadence=1.0, clock=clock)
        prober.offer("u0", _target(0, clock.now - 10, template=None))
        clock.now += 1.0
        prober.tick()
        await _settle()
        assert prober.answered("u0", "o/s-0", "cpu-basic") is not None
        prober.offer("u0", _target(0, clock.now, template=None, token="new"))  # the token was rotated
        assert prober.answered("u0", "o/s-0", "cpu-basic") is None
        prober.withdraw("u0")
        clock.now += 1.0
        asked = len(edge.asked)
        prober.tick()
        await _settle()
        assert len(edge.asked) == asked

    asyncio.run(scenario())


def test_a_prober_without_a_rate_probes_nothing() -> None:
    edge = Edge()
    prober = EdgeProber(edge.health, rate=0.0, cadence=1.0)
    assert not prober.enabled
    prober.offer("u0", _target(0, 0.0))
    assert prober.answered("u0", "o/s-0", "cpu-basic") is None


def test_only_the_sandbox_servers_json_counts_as_an_answer() -> None:
    """An edge page for a Space that does not run yet is no answer of the sandbox, whatever its status."""
    assert sandbox_answer('{"status": "ok"}') == {"status": "ok"}
    assert sandbox_answer("<!DOCTYPE html><title>Building</title>") is None
    assert sandbox_answer("") is None
    assert sandbox_answer('["ok"]') is None


def test_a_build_begins_when_the_hub_answered_this_processs_duplicate() -> None:
    clock, edge = Clock(), Edge()
    prober = EdgeProber(edge.health, rate=10.0, cadence=1.0, clock=clock)
    assert prober.build_began("u0") is None  # duplicated by an earlier process: its record is used
    prober.duplicated("u0")
    assert prober.build_began("u0") == clock.now
    prober.forget("u0")
    assert prober.build_began("u0") is None


def test_once_its_app_answers_the_space_last_seen_building_stands_without_a_newer_hub_view() -> None:
    async def scenario() -> None:
        clock, edge = Clock(), Edge()
        prober = EdgeProber(edge.health, rate=10.0, cadence=1.0, clock=clock)
        building = SpaceView("o/s-0", "BUILDING", None, "cpu-basic", sandbox_url="http://edge/s-0")
        prober.building_view("u0", building, "t", "", private=False, since=clock.now, template=None)
        assert prober.answered_view("u0", "o/s-0") is None  # offered, not answered yet
        edge.running.add("http://edge/s-0")
        clock.now += 1.0
        prober.tick()
        await _settle()
        assert prober.answered_view("u0", "o/s-0") == building
        assert prober.answered_view("u0", "o/s-1") is None  # another Space: not this answer
        view, health = prober.building_view("u0", building, "t", "", private=False, since=0.0, template=None)
        assert (view.stage, view.current_hardware) == ("RUNNING", "cpu-basic") and health is not None
        # A switch of flavor is not called running from the edge alone: its end starts a bill.
        switching = SpaceView("o/s-2", "BUILDING", "cpu-basic", "t4-small", sandbox_url="http://edge/s-2")
        edge.running.add("http://edge/s-2")
        prober.building_view("u2", switching, "t", "", private=False, since=clock.now, template=None)
        clock.now += 1.0
        prober.tick()
        await _settle()
        assert prober.answered("u2", "o/s-2", "t4-small") is not None
        assert prober.answered_view("u2", "o/s-2") is None

    asyncio.run(scenario())


def test_a_listing_that_caught_up_with_the_answer_takes_it_as_the_health_check() -> None:
    """The Space is listed running before the session's pass used its app's answer: no second check."""

    async def scenario() -> None:
        clock, edge = Clock(), Edge()
        prober = EdgeProber(edge.health, rate=10.0, cadence=1.0, clock=clock)
        url = "http://edge/s-0"
        building = SpaceView("o/s-0", "BUILDING", None, "cpu-basic", sandbox_url=url)
        running = SpaceView("o/s-0", "RUNNING", "cpu-basic", "cpu-basic", sandbox_url=url)
        other_flavor = SpaceView("o/s-0", "RUNNING", "t4-small", "t4-small", sandbox_url=url)

        async def answered() -> None:
            prober.building_view("u0", building, "t", "", private=False, since=clock.now, template=None)
            edge.running.add(url)
            clock.now += 1.0
            prober.tick()
            await _settle()

        def listed(view: SpaceView, token: str = "t") -> tuple[SpaceView, HealthResult | None]:
            return prober.building_view("u0", view, token, "", private=False, since=0.0, template=None)

        await answered()
        view, health = listed(running)
        assert view == running and health is not None and health.ok
        assert not prober.probing("u0")  # withdrawn: it runs
        await answered()
        assert listed(running, token="t2")[1] is None  # asked with a token the session no longer holds
        await answered()
        assert listed(other_flavor)[1] is None  # it runs on another flavor than it was built for

    asyncio.run(scenario())
