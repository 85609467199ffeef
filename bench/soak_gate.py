"""Pass or fail a soak run (`make soak ... JSON=<file>`), for CI: the soak itself only measures.

    .venv/bin/python -m bench.soak_gate soak.json --sessions 1000

Fails (exit 1, one line per broken limit) when the operator's RSS grows faster than
`--max-rss-slope` MiB per hour over the second half of the run (the first half holds the warm-up:
caches, the allocator's first arenas), when any error or traceback reached its log, when a patch
was refused, or when the watch stalled (a liveness failure, or a session that never observed its
last patch). The slope limit is loose for a 5-minute run on purpose: RSS moves in steps of a few
MiB, so a short run's slope is noisy; a leak per reconcile (the memory growth kopf has seen, or an
unbounded cache) is far steeper.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: Default limit on the second half's RSS slope: 10 MiB over the last 2.5 minutes of a 5-minute run.
MAX_RSS_SLOPE_MIB_PER_HOUR = 240.0


def problems(result: Mapping[str, Any], max_rss_slope: float = MAX_RSS_SLOPE_MIB_PER_HOUR) -> list[str]:
    """What is wrong with one soak result (`[soak][N]` of the benchmark's JSON); empty: it passes."""
    found = []
    slope = result.get("rss_slope_mib_per_hour_second_half")
    if slope is None:
        found.append("no RSS samples: the soak did not run")
    elif slope > max_rss_slope:
        found.append(f"RSS grows {slope:.0f} MiB/h in the second half (limit {max_rss_slope:g} MiB/h)")
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
    args = parser.parse_args()
    results = json.loads(args.json.read_text()) if args.json.exists() else {}
    result = results.get("soak", {}).get(args.sessions)
    if result is None:
        print(f"soak gate: no soak result for N={args.sessions} in {args.json}", file=sys.stderr)
        sys.exit(1)
    found = problems(result, args.max_rss_slope)
    for problem in found:
        print(f"soak gate: FAIL: {problem}", file=sys.stderr)
    if found:
        sys.exit(1)
    slope = result["rss_slope_mib_per_hour_second_half"]
    print(f"soak gate: ok ({result['minutes']:.1f} min, {result['patches']} patches, RSS {slope:.0f} MiB/h)")


if __name__ == "__main__":
    main()
