"""The benchmark's pure helpers: what it prints and writes must be right even though nothing is timed here."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest

from bench import stats


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(100, 0, -1)]  # 1..100, unsorted
    assert stats.percentile(values, 50) == 50
    assert stats.percentile(values, 95) == 95
    assert stats.percentile(values, 99) == 99
    assert stats.percentile(values, 100) == 100
    assert stats.percentile([7.0], 99) == 7.0
    assert stats.percentile([1.0, 2.0], 50) == 1.0  # a measured value, not 1.5
    assert math.isnan(stats.percentile([], 50))


def test_slope_per_hour_by_least_squares() -> None:
    flat = [(t * 5.0, 120.0) for t in range(50)]
    assert stats.slope_per_hour(flat) == 0
    growing = [(t * 5.0, 100.0 + t * 5.0 / 3600 * 12) for t in range(50)]  # 12 MiB/hour
    assert stats.slope_per_hour(growing) == pytest.approx(12)
    noisy = [(0.0, 100.0), (1800.0, 104.0), (3600.0, 100.0)]  # a bump is no trend
    assert stats.slope_per_hour(noisy) == pytest.approx(0)
    assert stats.slope_per_hour([(0.0, 1.0)]) == 0
    assert stats.slope_per_hour([(5.0, 1.0), (5.0, 2.0)]) == 0


METRICS = """\
# HELP apiserver_request_total [STABLE] Counter of apiserver requests
# TYPE apiserver_request_total counter
apiserver_request_total{code="201",component="apiserver",dry_run="",group="agents.sandbox-operator.dev",\
resource="agentsessions",scope="resource",subresource="",verb="POST",version="v1alpha1"} 10
apiserver_request_total{code="409",component="apiserver",dry_run="",group="agents.sandbox-operator.dev",\
resource="agentsessions",scope="resource",subresource="",verb="POST",version="v1alpha1"} 2
apiserver_request_total{code="200",component="apiserver",dry_run="",group="agents.sandbox-operator.dev",\
resource="agentsessions",scope="resource",subresource="status",verb="PATCH",version="v1alpha1"} 30
apiserver_request_total{code="201",component="apiserver",dry_run="",group="",\
resource="events",scope="resource",subresource="",verb="POST",version="v1"} 4
apiserver_request_total{code="201",component="apiserver",dry_run="",group="events.k8s.io",\
resource="events",scope="resource",subresource="",verb="POST",version="v1"} 1
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",\
resource="secrets",scope="resource",subresource="",verb="GET",version="v1"} 99
apiserver_request_total{code="200",component="apiserver",dry_run="",group="coordination.k8s.io",\
resource="leases",scope="resource",subresource="",verb="PUT",version="v1"} 50
apiserver_request_duration_seconds_count{resource="secrets",verb="PUT"} 3
"""


def test_api_writes_counts_writes_to_sessions_secrets_and_events_only() -> None:
    assert stats.api_writes(METRICS) == Counter(
        {
            ("agentsessions", "", "POST"): 12,  # failed writes still cost the API server
            ("agentsessions", "status", "PATCH"): 30,
            ("events", "", "POST"): 5,  # core and events.k8s.io alike
        }
    )
    assert stats.flat_writes(stats.api_writes(METRICS)) == {
        "agentsessions POST": 12,
        "agentsessions/status PATCH": 30,
        "events POST": 5,
    }


def test_hub_calls_count_the_operators_user_and_the_sandbox_app() -> None:
    rows = [
        {"user": "agents", "route": "duplicate", "status": 200, "count": 3},
        {"user": "agents", "route": "runtime", "status": 429, "count": 2},
        {"user": "agents", "route": "runtime", "status": 200, "count": 5},
        {"user": None, "route": "health", "status": 200, "count": 3},
        {"user": "someone-else", "route": "runtime", "status": 200, "count": 100},
    ]
    calls = stats.hub_calls(rows, "agents")
    assert calls[("runtime", 429)] == 2 and sum(calls.values()) == 13
    assert stats.by_route(calls) == {"duplicate": 3, "health": 3, "runtime": 7}


def test_the_hub_api_count_leaves_out_the_space_apps_routes() -> None:
    """The Hub's API rate limit covers huggingface.co/api (F34); health checks go to the Space's app."""
    calls = Counter({("space_info", 200): 3, ("list_spaces", 200): 2, ("health", 200): 5, ("health", 503): 1})
    assert stats.api_calls(calls) == 5


def test_ratio_and_table() -> None:
    assert stats.ratio(2.0, 4.0) == 0.5
    assert stats.ratio(1.0, 0.0) is None and stats.ratio(None, 1.0) is None
    assert stats.ratio(math.nan, 1.0) is None
    text = stats.table(
        "overhead, N=10", {"ready_all_s": 1.5, "hub_429s": 0}, {"ready_all_s": 6.0, "hub_429s": 3}
    )
    lines = text.splitlines()
    assert lines[0] == "overhead, N=10"
    assert lines[3].split()[-3:] == ["1.50", "6.00", "0.25x"]
    assert lines[4].split()[-3:] == ["0", "3", "0.00x"]
    assert "reference" in lines[1] and "-" in stats.table("t", {"ready_all_s": 1.0}, None).splitlines()[3]


def test_merge_json_keeps_other_scenarios_and_sizes(tmp_path: Path) -> None:
    path = tmp_path / "bench.json"
    stats.merge_json(path, "overhead", 10, {"ready_all_s": 1.0})
    stats.merge_json(path, "overhead", 100, {"ready_all_s": 5.0})
    stats.merge_json(path, "hub-shape", 20, {"hub_429s": 0})
    stats.merge_json(path, "overhead", 10, {"ready_all_s": 2.0})
    assert json.loads(path.read_text()) == {
        "hub-shape": {"20": {"hub_429s": 0}},
        "overhead": {"10": {"ready_all_s": 2.0}, "100": {"ready_all_s": 5.0}},
    }


def test_last_build_end_is_the_latest_first_running() -> None:
    def space(space_id: str, *stages: tuple[float, str]) -> dict[str, object]:
        return {"id": space_id, "timeline": [{"monotonic": t, "stage": stage} for t, stage in stages]}

    spaces = [
        space("templates/box", (0.0, "RUNNING")),
        space(
            "agents/a", (10.0, "BUILDING"), (70.0, "APP_STARTING"), (130.0, "RUNNING"), (400.0, "SLEEPING")
        ),
        space("agents/b", (11.0, "BUILDING"), (95.0, "RUNNING"), (200.0, "RUNNING_APP_STARTING")),
        space("agents/c", (12.0, "BUILDING")),  # still building: not counted
    ]
    assert stats.last_build_end(spaces, exclude={"templates/box"}) == 130.0
    assert stats.last_build_end(spaces[3:], exclude=set()) is None


def test_ready_after_healthy_pairs_each_session_with_its_spaces_first_running() -> None:
    uid_a, uid_b, uid_c = "a" * 8 + "-1111-2222-3333-" + "4" * 12, "b" * 36, "c" * 36
    running = {f"agents/ags-{uid_a}": 130.0, f"agents/ref-{uid_b}": 95.0, "templates/box": 0.0}
    ready = {"s-a": 131.5, "s-b": 95.25, "s-c": 50.0}  # s-c's Space never ran: left out
    uids = {"s-a": uid_a, "s-b": uid_b, "s-c": uid_c}
    assert sorted(stats.ready_after_healthy(ready, uids, running)) == [250.0, 1500.0]
    assert stats.first_running(
        [
            {
                "id": "x/y",
                "timeline": [{"monotonic": 1.0, "stage": "BUILDING"}, {"monotonic": 2.0, "stage": "RUNNING"}],
            },
            {"id": "x/z", "timeline": [{"monotonic": 1.0, "stage": "BUILDING"}]},
        ]
    ) == {"x/y": 2.0}


def test_pool_table_shows_warm_claims_beside_cold_creates_per_batch_size() -> None:
    batches = {
        "50": {
            "warm": {
                "ready_p50_ms": 120.0,
                "ready_p99_ms": 480.0,
                "ready_max_ms": 500.0,
                "answers_p50_ms": 130.0,
                "answers_p99_ms": 520.0,
                "launch_types": {"warm": 50},
            },
            "cold": {"ready_p50_ms": 61000.0, "ready_p99_ms": 64000.0, "launch_types": {"cold": 50}},
        },
        "1": {
            "warm": {
                "ready_p50_ms": 40.0,
                "ready_p99_ms": 40.0,
                "ready_max_ms": 40.0,
                "launch_types": {"warm": 1},
            }
        },
    }
    rows = stats.pool_rows(batches)
    assert [row["claims"] for row in rows] == [1, 50]
    assert rows[1]["warm_launched"] == 50 and rows[1]["cold_p99_ms"] == 64000.0
    assert rows[0]["cold_p50_ms"] is None
    assert (rows[1]["answers_p50_ms"], rows[1]["answers_p99_ms"]) == (130.0, 520.0)
    table = stats.pool_table("pool of 50", batches)
    assert table.splitlines()[1].split()[:3] == ["claims", "warm", "p50"]
    assert "480" in table and "64,000" in table


def test_a_run_not_all_ready_within_its_timeout_is_reported_as_bounds() -> None:
    """Percentiles count the sessions never Ready as slower than any; the table and the ratios say
    'not all Ready within T' instead of a figure of the quick share alone."""
    assert stats.censored_percentile([1.0, 2.0, 3.0], 1, 50) == 2.0
    assert stats.censored_percentile([1.0, 2.0, 3.0], 1, 99) is None
    assert stats.censored_percentile([], 0, 50) is None
    ours = {"ready_all_s": 400.0, "ready_p99_ms": 300_000.0, "hub_calls_per_session": 1.1, "hub_429s": 0}
    reference = {
        "sessions": 1000,
        "ready_timeout_s": 1200.0,
        "ready_complete": False,
        "ready_done": 600,
        "ready_all_s": None,
        "ready_p99_ms": None,
        "hub_calls_per_session": 70.0,
        "hub_429s": 5000,
    }
    assert stats.bound(reference, "ready_all_s") == (1200.0, ">")
    assert stats.bound(reference, "ready_p99_ms") == (1_200_000.0, ">")
    assert stats.bound(reference, "hub_calls_per_session") == (70.0, "≥")
    assert stats.exact_ratio(ours, reference, "ready_all_s") is None
    assert stats.exact_ratio(ours, reference, "hub_429s") == 0.0
    assert stats.ratio_bounds(ours, reference) == {
        "ready_all_s": "<0.333",
        "ready_p99_ms": "<0.25",
        "hub_calls_per_session": "≤0.0157",
    }
    text = stats.table("hub-shape, N=1000", ours, reference)
    rows = {line.split("  ")[0]: line.split() for line in text.splitlines()}
    assert rows["all Ready after the first apply (s)"][-3:] == ["400", ">1,200", "<0.33x"]
    assert rows["Hub calls per session, apply -> Ready"][-3:] == ["1.10", "≥70.00", "≤0.02x"]
    assert "reference: not all Ready within 1200s (600 of 1000)" in text


def test_the_api_servers_cpu_seconds_come_from_its_process_counter() -> None:
    text = METRICS + "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 52.71\n"
    assert stats.process_cpu_seconds(text) == 52.71
    assert stats.process_cpu_seconds(METRICS) == 0.0
