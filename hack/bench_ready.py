"""Benchmark: time from creating an AgentSession to Ready=True, on the real stack.

Starts the dev environment (local control plane, Hub emulator with zero delays, the operator
as a subprocess), then creates sessions one at a time and measures each, then a burst at once.
Prints figures; asserts nothing.

    .venv/bin/python hack/bench_ready.py --sessions 20 --burst 50 [--hub-rate 0]

With the default Hub rate (3 calls/s, burst 20) a burst measures the rate limit, not the
operator; `--hub-rate 0` lifts it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch

from sandbox_operator import api
from sandbox_operator.dev import dev_environment


def manifest(name: str) -> dict[str, Any]:
    return {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": name}, "spec": {}}


def is_ready(obj: dict[str, Any]) -> bool:
    conditions = obj.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def wait_all_ready(
    custom: client.CustomObjectsApi, names: set[str], started: dict[str, float]
) -> dict[str, float]:
    """Ready times by name, from one watch (no polling)."""
    done: dict[str, float] = {}
    stream = watch.Watch().stream(
        custom.list_namespaced_custom_object,
        api.GROUP,
        api.VERSION,
        "default",
        api.PLURAL,
        timeout_seconds=300,
    )
    for event in stream:
        obj = event["object"]
        name = obj["metadata"]["name"]
        if name in names and name not in done and is_ready(obj):
            done[name] = time.perf_counter() - started[name]
            if len(done) == len(names):
                break
    return done


def operator_rss_mib(state: Path) -> float:
    """Resident memory of the operator process that dev mode started (its pid file)."""
    pid = (state / "pids" / "operator.pid").read_text().strip()
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def summary(label: str, seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    p90 = ms[min(len(ms) - 1, int(len(ms) * 0.9))]
    return (
        f"{label}: n={len(ms)} median={statistics.median(ms):.0f}ms p90={p90:.0f}ms "
        f"min={ms[0]:.0f}ms max={ms[-1]:.0f}ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=15, help="sessions created one after another")
    parser.add_argument("--burst", type=int, default=30, help="sessions created at once")
    parser.add_argument("--hub-rate", type=float, default=None, help="operator's Hub calls/s (0: unlimited)")
    args = parser.parse_args()
    if args.hub_rate is not None:
        os.environ["SANDBOX_OPERATOR_HUB_RATE"] = str(args.hub_rate)  # read by the operator process

    with tempfile.TemporaryDirectory(prefix="bench-ready-") as tmp:
        state = Path(tmp)
        with dev_environment(state, with_operator=True, build_seconds=0, hardware_seconds=0):
            config.load_kube_config(str(state / "controlplane" / "kubeconfig"))
            custom = client.CustomObjectsApi()
            sequential = []
            for i in range(args.sessions):
                name = f"seq-{i}"
                started = {name: time.perf_counter()}
                custom.create_namespaced_custom_object(
                    api.GROUP, api.VERSION, "default", api.PLURAL, manifest(name)
                )
                sequential.extend(wait_all_ready(custom, {name}, started).values())
            print(summary("apply->Ready, one at a time (emulator delays 0)", sequential[1:]))

            names = {f"burst-{i}" for i in range(args.burst)}
            started = {}
            burst_start = time.perf_counter()
            for name in sorted(names):
                started[name] = time.perf_counter()
                custom.create_namespaced_custom_object(
                    api.GROUP, api.VERSION, "default", api.PLURAL, manifest(name)
                )
            times = wait_all_ready(custom, names, started)
            print(summary(f"apply->Ready, {args.burst} at once", list(times.values())))
            elapsed = time.perf_counter() - burst_start
            print(f"burst of {args.burst}: all Ready {elapsed:.2f}s after the first apply")
            total = args.sessions + args.burst
            print(f"operator memory with {total} Ready sessions: {operator_rss_mib(state):.0f} MiB RSS")


if __name__ == "__main__":
    main()
