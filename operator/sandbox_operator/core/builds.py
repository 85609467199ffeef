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

#: Builds remembered per template: recent enough to follow a template that changes.
RECENT_BUILDS = 20
#: Close probing starts this share of the shortest recent build early: builds vary.
EARLY_SHARE = 0.1


@dataclass
class BuildTimes:
    """The recent build durations of each template (in memory: a restart learns them again)."""

    keep: int = RECENT_BUILDS
    _recent: dict[str, deque[float]] = field(default_factory=dict)

    def record(self, template: str, seconds: float) -> None:
        """A Space of `template` answered `seconds` after its build began."""
        self._recent.setdefault(template, deque(maxlen=self.keep)).append(max(0.0, seconds))

    def shortest(self, template: str | None) -> float | None:
        """The shortest recent build of `template`; None before the first one was seen."""
        recent = self._recent.get(template) if template is not None else None
        return min(recent) if recent else None


def probe_delay(elapsed: float, shortest: float | None, cadence: float) -> float:
    """Seconds until the next probe of a Space that has been building for `elapsed` seconds, whose
    template's builds took `shortest` seconds at least (None: not known yet): at `cadence` once the
    build may end, until then a single wait for that moment."""
    if shortest is None:
        return cadence
    close_from = shortest * (1.0 - EARLY_SHARE)
    return max(cadence, close_from - elapsed)
