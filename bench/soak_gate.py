"""Pass or fail a soak run (`make soak ... JSON=<file>`), for CI: the soak itself only measures.

    .venv/bin/python -m bench.soak_gate soak.json --sessions 1000

Fails (exit 1, one line per broken limit) when the operator's RSS grew too fast over the second
half of the run (the first half holds the warm-up: caches, the allocator's first arenas), when
any error or traceback reached its log, when a patch was refused, or when the watch stalled (a
liveness failure, or a session that never observed its last patch).

RSS moves in steps: the allocator takes and gives back arenas of several MiB (steps of about
10 MiB, up and down, in a 5-minute soak of 1,000 sessions). A least-squares slope over a short
window turns one such step into a steep slope (a step of S MiB in the middle of a window of W
hours gives 1.5 * S / W MiB/h), so the limit is the larger of `--max-rss-slope` and the slope of
one `--rss-step` in the middle of the window: a 5-minute run catches only fast leaks (the kind
kopf has seen, growing by GiB), the one-hour run slow ones.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: The RSS slope allowed however long the run (MiB per hour).
MAX_RSS_SLOPE_MIB_PER_HOUR = 30.0
#: One allocator step of RSS (MiB) allowed within the measured window, however short.
RSS_STEP_MIB = 16.0


def rss_slope_limit(minutes: float, max_rss_slope: float, rss_step: float) -> float:
    """The slope limit (MiB/h) over the second half of a run of `minutes`: `max_rss_slope`, or the
    least-squares slope of one `rss_step` in the middle of that half, whichever is larger."""
    window_hours = minutes / 2 / 60
    return max(max_rss_slope, 1.5 * rss_step / window_hours) if window_hours > 0 else max_rss_slope


def problems(
    result: Mapping[str, Any],
    max_rss_slope: float = MAX_RSS_SLOPE_MIB_PER_HOUR,
    rss_step: float = RSS_STEP_MIB,
) -> list[str]:
    """What is wrong with one soak result (`[soak][N]` of the benchmark's JSON); empty: it passes."""
    found = []
    slope = result.get("rss_slope_mib_per_hour_second_half")
    limit = rss_slope_limit(result.get("minutes", 0.0), max_rss_slope, rss_step)
    if slope is None:
        found.append("no RSS samples: the soak did not run")
    elif slope > limit:
        found.append(f"RSS grows {slope:.0f} MiB/h in the second half (limit {limit:.0f} MiB/h)")
    if result.get("log_errors", 0):
        found.append(f"{result['log_errors']} error lines or tracebacks in the operator's log")
    if result.get("patch_errors", 0):
        found.append(f"{result['patch_errors']} spec patches refused by the API server")
    if result.get("liveness_failures", 0):
        failures = result["liveness_failures"]
        found.append(f"the liveness endpoint failed {failures} times (loop or watch stalled)")
    if result.get("sessions_lagging", 0):
        lagging = result["sessions_lagging"]
        found.append(f"{lagging} sessions never observed their last patch (watch stalled)")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("json", type=Path, help="the benchmark's JSON file")
    parser.add_argument("--sessions", required=True, help="N of the soak run to judge")
    parser.add_argument("--max-rss-slope", type=float, default=MAX_RSS_SLOPE_MIB_PER_HOUR, help="MiB/h")
    parser.add_argument("--rss-step", type=float, default=RSS_STEP_MIB, help="MiB allowed as one step")
    args = parser.parse_args()
    results = json.loads(args.json.read_text()) if args.json.exists() else {}
    result = results.get("soak", {}).get(args.sessions)
    if result is None:
        print(f"soak gate: no soak result for N={args.sessions} in {args.json}", file=sys.stderr)
        sys.exit(1)
    found = problems(result, args.max_rss_slope, args.rss_step)
    for problem in found:
        print(f"soak gate: FAIL: {problem}", file=sys.stderr)
    if found:
        sys.exit(1)
    slope = result["rss_slope_mib_per_hour_second_half"]
    limit = rss_slope_limit(result["minutes"], args.max_rss_slope, args.rss_step)
    print(
        f"soak gate: ok ({result['minutes']:.1f} min, {result['patches']} patches, "
        f"RSS {slope:.0f} MiB/h in the second half, limit {limit:.0f} MiB/h)"
    )


if __name__ == "__main__":
    main()
