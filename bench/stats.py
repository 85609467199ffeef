"""Pure helpers of the benchmark: percentiles, the RSS slope, API-server counters, the table and the JSON."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

#: The headline figures, in table order, with their unit; the JSON uses these names.
HEADLINE: Final = (
    ("ready_all_s", "all Ready after the first apply (s)"),
    ("ready_p50_ms", "apply -> Ready p50 (ms)"),
    ("ready_p95_ms", "apply -> Ready p95 (ms)"),
    ("ready_p99_ms", "apply -> Ready p99 (ms)"),
    ("ready_after_last_build_s", "last Ready after the last build ended (s)"),
    ("ready_after_healthy_p50_ms", "Ready after the app could answer, p50 (ms)"),
    ("ready_after_healthy_p99_ms", "Ready after the app could answer, p99 (ms)"),
    ("neighbour_ready_ms", "another namespace's session, applied after them: apply -> Ready (ms)"),
    ("neighbour_ready_behind", "... sessions of the burst Ready before it"),
    ("delete_all_s", "all gone after the first delete (s)"),
    ("delete_p50_ms", "delete -> gone p50 (ms)"),
    ("delete_p99_ms", "delete -> gone p99 (ms)"),
    ("cpu_s", "operator CPU, apply to all gone (s)"),
    ("apiserver_cpu_s", "API server CPU, apply to all gone (s)"),
    ("rss_peak_mib", "operator peak RSS (MiB)"),
    ("rss_idle_mib", "operator RSS when live, before the first apply (MiB)"),
    ("rss_per_session_kib", "peak RSS above that, per session (KiB)"),
    ("api_writes_per_session", "API writes per session, apply -> Ready"),
    ("api_writes_per_session_delete", "API writes per session, delete -> gone"),
    ("events_per_session", "Events per session, apply -> Ready"),
    ("hub_calls_per_session", "Hub calls per session, apply -> Ready"),
    ("hub_calls_per_session_delete", "Hub calls per session, delete -> gone"),
    ("hub_api_calls_per_session", "of which Hub API (huggingface.co/api)"),
    ("hub_429s", "429s received"),
    ("hub_calls_per_5min_steady", "Hub API calls per 5 min, all Ready (steady)"),
    ("app_health_checks_per_5min_steady", "sandbox app health checks per 5 min, steady"),
    ("drift_noticed_ms", "steady: a Space paused behind it -> the operator restarts it (ms)"),
    ("spaces_left", "Spaces left after delete"),
)

#: Times until Ready: a run that was not all Ready within its timeout knows them only from below
#: (those its Ready sessions measured stay exact: a percentile within the Ready share).
READY_TIMES: Final = (
    "ready_all_s",
    "ready_p50_ms",
    "ready_p95_ms",
    "ready_p99_ms",
    "ready_after_last_build_s",
)
#: Counts per session from apply to all Ready: such a run spent them until its timeout, a lower bound.
READY_COUNTS: Final = (
    "api_writes_per_session",
    "events_per_session",
    "hub_calls_per_session",
    "hub_api_calls_per_session",
)

#: API-server verbs that write (apiserver_request_total's `verb` label).
WRITE_VERBS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE", "APPLY"})
#: What a session costs the API server: the session (and its status), its Secret, Events about it.
WRITE_RESOURCES: Final = frozenset({"agentsessions", "secrets", "events"})
#: The API server's own CPU seconds (the Prometheus process collector's counter).
_PROCESS_CPU: Final = re.compile(r"^process_cpu_seconds_total\s+(?P<value>\S+)$", re.MULTILINE)
_SAMPLE: Final = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\}\s+(?P<value>\S+)$")
_LABEL: Final = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

WriteKey = tuple[str, str, str]  # (resource, subresource, verb)


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100): a value that was measured, never an interpolation."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def slope_per_hour(samples: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) samples, per hour; 0 for fewer than two distinct times."""
    if len(samples) < 2:
        return 0.0
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_v = sum(v for _, v in samples) / n
    spread = sum((t - mean_t) ** 2 for t, _ in samples)
    if spread == 0:
        return 0.0
    return sum((t - mean_t) * (v - mean_v) for t, v in samples) / spread * 3600


def last_build_end(spaces: Iterable[Mapping[str, Any]], exclude: Collection[str]) -> float | None:
    """When the last Space first reached RUNNING (emulator monotonic time), from the admin listing."""
    built = [first for space_id, first in first_running(spaces).items() if space_id not in exclude]
    return max(built) if built else None


def first_running(spaces: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """When each Space first reached RUNNING (emulator monotonic time), by Space id: from then on its
    app could answer its health check."""
    firsts = {
        space["id"]: next((s["monotonic"] for s in space["timeline"] if s["stage"] == "RUNNING"), None)
        for space in spaces
    }
    return {space_id: first for space_id, first in firsts.items() if first is not None}


def ready_after_healthy(
    ready: Mapping[str, float], uids: Mapping[str, str], running: Mapping[str, float]
) -> list[float]:
    """Per Ready session (by name), ms from its Space's first RUNNING to its Ready: both operators name
    a session's Space after its UID (`<owner>/<prefix>-<uid>`), so the Space is found by that suffix."""
    by_uid = {space_id.rsplit("/", 1)[-1][-36:]: first for space_id, first in running.items()}
    return [
        (ready[name] - by_uid[uids[name]]) * 1000 for name in ready if name in uids and uids[name] in by_uid
    ]


def api_writes(metrics_text: str) -> Counter[WriteKey]:
    """Write requests per (resource, subresource, verb) from the API server's /metrics text."""
    counts: Counter[WriteKey] = Counter()
    for line in metrics_text.splitlines():
        match = _SAMPLE.match(line)
        if match is None:
            continue
        labels = dict(_LABEL.findall(match["labels"]))
        resource, verb = labels.get("resource", ""), labels.get("verb", "")
        if resource in WRITE_RESOURCES and verb in WRITE_VERBS:
            counts[(resource, labels.get("subresource", ""), verb)] += int(float(match["value"]))
    return counts


def process_cpu_seconds(metrics_text: str) -> float:
    """The CPU seconds the API server has used, from its /metrics text (0 if it does not say)."""
    match = _PROCESS_CPU.search(metrics_text)
    return float(match["value"]) if match is not None else 0.0


def hub_calls(counts: Iterable[Mapping[str, Any]], user: str) -> Counter[tuple[str, int]]:
    """Calls per (route, status) from the emulator's call counters: `user`'s Hub API calls and all
    sandbox-app calls (the app's health route carries no Hub user)."""
    result: Counter[tuple[str, int]] = Counter()
    for row in counts:
        if row["user"] == user or row["user"] is None:
            result[(row["route"], row["status"])] += row["count"]
    return result


#: Emulator routes of the Space's own app (`https://{subdomain}.hf.space`, fidelity F36), not of the
#: Hub API: the Hub's API rate limit (F34) does not count them.
APP_ROUTES: Final = frozenset({"health", "app"})


def api_calls(calls: Counter[tuple[str, int]]) -> int:
    """Calls to the Hub API only (what its rate limit counts), without the Space apps' routes."""
    return sum(n for (route, _), n in calls.items() if route not in APP_ROUTES)


def by_route(calls: Counter[tuple[str, int]]) -> dict[str, int]:
    routes: Counter[str] = Counter()
    for (route, _), n in calls.items():
        routes[route] += n
    return dict(sorted(routes.items()))


def flat_writes(writes: Counter[WriteKey]) -> dict[str, int]:
    """`resource[/subresource] VERB` -> count, for the JSON."""
    return {
        f"{resource}{'/' + sub if sub else ''} {verb}": n
        for (resource, sub, verb), n in sorted(writes.items())
        if n
    }


def ratio(ours: float | None, reference: float | None) -> float | None:
    """ours / reference, or None where it means nothing (a zero or missing reference)."""
    if ours is None or reference is None or reference == 0 or math.isnan(ours) or math.isnan(reference):
        return None
    return ours / reference


def censored_percentile(values: Sequence[float], missing: int, p: float) -> float | None:
    """Nearest-rank percentile of `values` and `missing` more that never ended (larger than any):
    None when the rank falls among those, i.e. the percentile is not known, only that it exceeds the
    wait."""
    ordered = sorted(values)
    total = len(ordered) + missing
    if total == 0:
        return None
    rank = max(1, math.ceil(p / 100 * total))
    return ordered[rank - 1] if rank <= len(ordered) else None


Bound = tuple[float | None, str]


def bound(result: Mapping[str, Any], key: str) -> Bound:
    """A figure with how it is known: "" exact, ">" or "≥" a lower bound, for a run whose sessions were
    not all Ready within its timeout (`ready_complete` false): a time it did not measure exceeds the
    wait, its counts so far are the least it would have spent."""
    value = result.get(key)
    if result.get("ready_complete", True):
        return value, ""
    if key in READY_TIMES and value is None:
        if key == "ready_after_last_build_s":
            return None, ""
        wait = float(result["ready_timeout_s"])
        return (wait * 1000 if key.endswith("_ms") else wait), ">"
    if key in READY_COUNTS:
        return value, "≥"
    return value, ""


def bounded_ratio(ours: Bound, reference: Bound) -> Bound:
    """ours / reference with its direction: exact, "<" (the reference is only bounded from below) or ">"
    (ours is); unknown when both are bounds."""
    value = ratio(ours[0], reference[0])
    if value is None or (ours[1] and reference[1]):
        return None, ""
    if reference[1]:
        return value, "<" if reference[1] == ">" else "≤"
    if ours[1]:
        return value, ours[1]
    return value, ""


def ratio_bounds(ours: Mapping[str, Any], reference: Mapping[str, Any]) -> dict[str, str]:
    """The headline ratios known only as bounds, e.g. {"ready_all_s": "<0.41"} when the reference was
    not all Ready within its timeout (`ratio` leaves those out: None)."""
    bounds = {}
    for key, _ in HEADLINE:
        value, op = bounded_ratio(bound(ours, key), bound(reference, key))
        if op and value is not None:
            bounds[key] = f"{op}{value:.3g}"
    return bounds


def exact_ratio(ours: Mapping[str, Any], reference: Mapping[str, Any], key: str) -> float | None:
    """ours / reference where both are measured, None where either is only a bound."""
    value, op = bounded_ratio(bound(ours, key), bound(reference, key))
    return None if op else value


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _bound_cell(figure: Bound) -> str:
    value, op = figure
    return op + _cell(value) if value is not None else "-"


def table(title: str, ours: Mapping[str, Any], reference: Mapping[str, Any] | None) -> str:
    """Headline figures, ours next to the reference and their ratio."""
    rows = [("figure", "sandbox-operator", "reference", "ratio")]
    for key, label in HEADLINE:
        if key not in ours:
            continue
        mine, ref = bound(ours, key), bound(reference, key) if reference else (None, "")
        r, op = bounded_ratio(mine, ref)
        rows.append((label, _bound_cell(mine), _bound_cell(ref), "-" if r is None else f"{op}{r:.2f}x"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [title]
    for i, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) if j == 0 else cell.rjust(w) for j, (cell, w) in
                               enumerate(zip(row, widths, strict=True))))  # fmt: skip
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    for label, result in (("sandbox-operator", ours), ("reference", reference or {})):
        if not result.get("ready_complete", True):
            lines.append(
                f"  ! {label}: not all Ready within {result['ready_timeout_s']:.0f}s ({result['ready_done']} "
                f"of {result['sessions']}): '>' and '≥' mark what it only bounds, '<' and '≤' the ratios"
            )
    return "\n".join(lines)


def merge_json(path: Path, scenario: str, n: int, result: Mapping[str, Any]) -> dict[str, Any]:
    """Write `result` under [scenario][n] of the JSON file, keeping the other scenarios and sizes."""
    data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    data.setdefault(scenario, {})[str(n)] = result
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return data


#: The pooled scenario's columns: per batch size, warm claims beside cold creates.
POOL_COLUMNS: Final = (
    ("claims", "claims"),
    ("warm_p50_ms", "warm p50 (ms)"),
    ("warm_p99_ms", "warm p99 (ms)"),
    ("warm_max_ms", "warm max (ms)"),
    ("answers_p50_ms", "answers p50 (ms)"),
    ("answers_p99_ms", "answers p99 (ms)"),
    ("warm_launched", "got warm"),
    ("cold_p50_ms", "cold p50 (ms)"),
    ("cold_p99_ms", "cold p99 (ms)"),
    ("cold_launched", "created cold"),
)


def pool_rows(batches: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per batch size (`batches[size]` holds its `warm` and `cold` figures), smallest first."""
    rows = []
    for size in sorted(batches, key=int):
        warm, cold = batches[size].get("warm") or {}, batches[size].get("cold") or {}
        rows.append(
            {
                "claims": int(size),
                "warm_p50_ms": warm.get("ready_p50_ms"),
                "warm_p99_ms": warm.get("ready_p99_ms"),
                "warm_max_ms": warm.get("ready_max_ms"),
                "answers_p50_ms": warm.get("answers_p50_ms"),
                "answers_p99_ms": warm.get("answers_p99_ms"),
                "warm_launched": (warm.get("launch_types") or {}).get("warm"),
                "cold_p50_ms": cold.get("ready_p50_ms"),
                "cold_p99_ms": cold.get("ready_p99_ms"),
                "cold_launched": (cold.get("launch_types") or {}).get("cold", cold.get("ready_done")),
            }
        )
    return rows


def pool_table(title: str, batches: Mapping[str, Mapping[str, Any]]) -> str:
    """apply -> Ready of sessions claiming from a warm pool, beside the same number created cold."""
    rows = [tuple(label for _, label in POOL_COLUMNS)]
    rows += [tuple(_cell(row[key]) for key, _ in POOL_COLUMNS) for row in pool_rows(batches)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(POOL_COLUMNS))]
    lines = [title]
    for i, row in enumerate(rows):
        lines.append("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
