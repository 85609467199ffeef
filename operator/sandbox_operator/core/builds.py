"""When to look at a building Space's app: each template's build time, learned from its recent builds.

A Space's app answers at the Hub's edge, which is not the Hub API (docs/hub-fidelity.md F36): asking
it costs no Hub call, but each probe costs CPU on both ends. So a Space is probed closely (every
`cadence` seconds) only from a little before its build should end, judged by the shortest of its
template's recent builds; until one build of a template was seen, its Spaces are probed at the
cadence from the start. Pure: times are seconds, the shell keeps the clock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

#: How long a template's builds count (seconds): a Space is probed closely from a little before the
#: shortest build of its template that ended within this time. Not the last few builds: a burst's
#: Spaces end longest build last, so its last builds are its longest, and the Spaces of the next
#: burst were probed only from 90 % of those (108 s for builds of 60-120 s), after most had
#: answered (docs/performance.md, round twelve). Long enough to span a burst; short enough to
#: follow a template whose builds got slower.
BUILD_MEMORY = 900.0
#: Close probing starts this share of the shortest recent build early: builds vary.
EARLY_SHARE = 0.1


@dataclass
class BuildTimes:
    """The recent build durations of each template (in memory: a restart learns them again)."""

    memory: float = BUILD_MEMORY
    #: Per template, (when it ended, seconds) of the builds that may still be the shortest within
    #: `memory`: oldest first, each shorter than every later one (a sliding minimum). The last is the
    #: latest build, kept however old.
    _recent: dict[str, deque[tuple[float, float]]] = field(default_factory=dict)

    def record(self, template: str, seconds: float, ended: float) -> None:
        """A Space of `template` answered `seconds` after its build began, at time `ended`."""
        builds = self._recent.setdefault(template, deque())
        seconds = max(0.0, seconds)
        while builds and builds[-1][1] >= seconds:
            builds.pop()  # never the shortest again: this one is as short, and newer
        builds.append((ended, seconds))

    def shortest(self, template: str | None, now: float) -> float | None:
        """The shortest build of `template` that ended within `memory` before `now` (else its latest);
        None before the first one was seen."""
        builds = self._recent.get(template) if template is not None else None
        if not builds:
            return None
        while len(builds) > 1 and builds[0][0] < now - self.memory:
            builds.popleft()
        return builds[0][1]


def probe_delay(elapsed: float, shortest: float | None, cadence: float) -> float:
    """Seconds until the next probe of a Space that has been building for `elapsed` seconds, whose
    template's builds took `shortest` seconds at least (None: not known yet): at `cadence` once the
    build may end, until then a single wait for that moment."""
    if shortest is None:
        return cadence
    close_from = shortest * (1.0 - EARLY_SHARE)
    return max(cadence, close_from - elapsed)
