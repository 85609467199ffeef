"""The CI soak's verdict: it fails on RSS growth, log errors, refused patches and a stalled watch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench import soak_gate, stats

REPO = Path(__file__).resolve().parents[2]
HEALTHY = {
    "minutes": 5.0,
    "patches": 3000,
    "patch_errors": 0,
    "rss_slope_mib_per_hour_second_half": 40.0,
    "log_errors": 0,
    "liveness_failures": 0,
    "sessions_lagging": 0,
}


def test_a_healthy_run_passes() -> None:
    assert soak_gate.problems(HEALTHY) == []


def test_each_broken_limit_is_named() -> None:
    broken = {
        **HEALTHY,
        "rss_slope_mib_per_hour_second_half": 900.0,
        "log_errors": 2,
        "patch_errors": 1,
        "liveness_failures": 3,
        "sessions_lagging": 7,
    }
    found = soak_gate.problems(broken)
    assert len(found) == 5
    assert "900 MiB/h" in found[0] and "2 error lines" in found[1] and "7 sessions" in found[4]
    assert soak_gate.problems({**HEALTHY, "rss_slope_mib_per_hour_second_half": None}) != []
    assert soak_gate.problems(broken, max_rss_slope=1000.0) == found[1:]


def test_one_allocator_step_is_not_a_leak_however_short_the_run() -> None:
    """The CI soak (5 minutes) saw RSS step by about 10 MiB, up and down: a slope of 266 MiB/h over
    its second half. One step of 16 MiB is allowed; an hour's run is held to far less."""
    assert soak_gate.rss_slope_limit(5.0, 30.0, 16.0) == 576.0  # 1.5 * 16 MiB / 2.5 min
    assert soak_gate.rss_slope_limit(60.0, 30.0, 16.0) == 48.0
    assert soak_gate.rss_slope_limit(600.0, 30.0, 16.0) == 30.0
    assert soak_gate.problems({**HEALTHY, "rss_slope_mib_per_hour_second_half": 266.0}) == []
    hour = {**HEALTHY, "minutes": 60.0, "rss_slope_mib_per_hour_second_half": 266.0}
    assert soak_gate.problems(hour) == ["RSS grows 266 MiB/h in the second half (limit 48 MiB/h)"]


def gate(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench.soak_gate", str(path), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_command_reads_the_benchmarks_json(tmp_path: Path) -> None:
    path = tmp_path / "soak.json"
    result: dict[str, Any] = {**HEALTHY, "log_errors": 1}
    stats.merge_json(path, "soak", 1000, HEALTHY)
    stats.merge_json(path, "soak", 10, result)
    assert gate(path, "--sessions", "1000").returncode == 0
    failed = gate(path, "--sessions", "10")
    assert failed.returncode == 1 and "1 error lines" in failed.stderr
    assert gate(path, "--sessions", "5").returncode == 1  # no such run: never a silent pass
    assert json.loads(path.read_text())["soak"].keys() == {"1000", "10"}
