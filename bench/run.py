"""The benchmark: sandbox-operator and a simple reference operator on one workload.

    .venv/bin/python -m bench.run --scenario overhead --sessions 100 --json bench.json
    .venv/bin/python -m bench.run --scenario hub-shape --sessions 1000 --json bench.json
    .venv/bin/python -m bench.run --scenario soak --sessions 1000 --minutes 60 --json soak.json

(from the repository root; `make bench` and `make soak` run these after `make setup`.) It starts
a local control plane and the Hub emulator, installs the chart, and for each operator in turn
(sandbox-operator, then the reference in bench/reference_operator.py) resets the emulator, starts
the operator as its own process with the chart's ServiceAccount identity, creates the sessions at
once in a fresh namespace, waits until all are Ready, deletes them and waits until all are gone.
Figures come from the outside: a watch of the sessions (times), the operator's /proc entry (CPU,
peak RSS), the API server's own /metrics (writes) and the emulator's call counters (Hub calls,
429s). It prints a table and merges the figures into the JSON file under [scenario][N]. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, cast

from kubernetes import client, watch
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException

from bench import stats
from sandbox_operator import api
from sandbox_operator.config.settings import OperatorConfig
from sandbox_operator.hub.sandbox_health import SANDBOX_AUTH_HEADER
from sandbox_operator.k8s.client import KEY_HUB_TOKEN, KEY_SANDBOX_URL, KEY_TOKEN
from sandbox_testbench.controlplane import ControlPlane, find_binaries
from sandbox_testbench.controlplane.processes import free_ports, launch
from sandbox_testbench.dev import (
    DEV_OWNER,
    DEV_RATE_LIMIT,
    DEV_TEMPLATE,
    DEV_TOKENS,
    DEV_TRANSIENT_ERROR_SECONDS,
    install_chart,
    service_account_env,
    start_operator,
    stop_process,
)
from sandbox_testbench.hubsim import HubSimAdmin, HubSimConfig, HubSimServer

REFERENCE: Final = Path(__file__).resolve().parent / "reference_operator.py"
#: The operator's Hub gate would measure itself where the emulator enforces no limit: lift it there.
OVERHEAD_OPERATOR_ENV: Final = {"SANDBOX_OPERATOR_HUB_RATE": "0"}
#: A flavor no session is approved for: patching to it and back never requests hardware (soak).
UNAPPROVED_FLAVOR: Final = "t4-small"
CREATE_THREADS: Final = 8
#: `--neighbour`: the one session of another namespace, applied right after the N.
NEIGHBOUR: Final = "neighbour"
#: Seconds the deletes are waited for after a run that was not all Ready within its timeout.
DELETE_WAIT_AFTER_TIMEOUT: Final = 120.0
#: kopf's log format marks levels as `[ERROR   ]`; a traceback is an error however it was logged.
LOG_ERROR_MARKERS: Final = ("[ERROR", "[CRITICAL", "Traceback (most recent call last)")
SOAK_HEADLINE: Final = (
    "minutes",
    "patches",
    "rss_start_mib",
    "rss_end_mib",
    "rss_peak_mib",
    "rss_slope_mib_per_hour",
    "rss_slope_mib_per_hour_second_half",
    "log_errors",
    "liveness_failures",
    "sessions_lagging",
    "watch_stalled",
    "hub_calls_per_minute",
)


@dataclass(frozen=True)
class Scenario:
    name: str
    hubsim: HubSimConfig
    operator_env: Mapping[str, str]
    timeout: float  # for all Ready, and again for all gone (DELETE_WAIT_AFTER_TIMEOUT if not all Ready)


def scenario(name: str, args: argparse.Namespace) -> Scenario:
    """Emulator and operator settings of each scenario (see bench/README.md)."""
    base: dict[str, Any] = {
        "tokens": DEV_TOKENS,  # the operator's and the read token the dev chart installs
        "templates": [DEV_TEMPLATE],
        "hardware_switch_seconds": 0,
        "call_log_size": 1,  # the counters are what the benchmark reads
    }
    overrides = dict(item.split("=", 1) for item in args.operator_env)
    if name == "pool":
        # Builds as long as the real Hub's; no rate limit, so the claims, not the Hub gate, are measured.
        config = HubSimConfig(
            **base,
            build_seconds=args.build_min,
            build_seconds_max=args.build_max,
            build_seed=args.seed,
            transient_error_seconds=DEV_TRANSIENT_ERROR_SECONDS,
        )
        return Scenario(name, config, {**OVERHEAD_OPERATOR_ENV, **overrides}, timeout=args.timeout or 1800)
    if name == "hub-shape":
        config = HubSimConfig(
            **base,
            build_seconds=args.build_min,
            build_seconds_max=args.build_max,
            build_seed=args.seed,
            transient_error_seconds=DEV_TRANSIENT_ERROR_SECONDS,
            rate_limit=DEV_RATE_LIMIT,
        )
        return Scenario(name, config, overrides, timeout=args.timeout or 7200)
    config = HubSimConfig(**base, build_seconds=0, transient_error_seconds=0)
    return Scenario(name, config, {**OVERHEAD_OPERATOR_ENV, **overrides}, timeout=args.timeout or 1200)


# -- the stack ------------------------------------------------------------------------------------


@dataclass
class Stack:
    plane: ControlPlane
    hub: HubSimServer
    state: Path
    custom: client.CustomObjectsApi
    core: client.CoreV1Api

    @property
    def admin(self) -> HubSimAdmin:
        return self.hub.admin

    def apiserver(self) -> tuple[Counter[stats.WriteKey], float]:
        """The API server's write requests so far, and its CPU seconds."""
        metrics = self.plane.kubectl()("get", "--raw", "/metrics", timeout=120).stdout
        return stats.api_writes(metrics), stats.process_cpu_seconds(metrics)

    def hub_calls(self) -> Counter[tuple[str, int]]:
        return stats.hub_calls(self.admin.call_counts(), DEV_OWNER)


@contextmanager
def stack(state: Path, hubsim: HubSimConfig) -> Iterator[Stack]:
    """Control plane, emulator and chart, as dev mode has them, without an operator."""
    plane = ControlPlane(state / "controlplane", find_binaries(), die_with_parent=True)
    plane.start()
    hub = HubSimServer(hubsim)
    try:
        hub.start()
        install_chart(plane, hub.url, state)
        configuration = client.Configuration()
        kube_config.load_kube_config(str(plane.kubeconfig), client_configuration=configuration)
        configuration.connection_pool_maxsize = 2 * CREATE_THREADS
        api_client = client.ApiClient(configuration)
        custom = client.CustomObjectsApi(api_client)
        wait_for(lambda: serves_sessions(custom), 60, "the API server to serve AgentSessions")
        yield Stack(plane, hub, state, custom, client.CoreV1Api(api_client))
    finally:
        hub.stop()
        plane.stop()


def serves_sessions(custom: client.CustomObjectsApi) -> bool:
    """A fresh CRD answers 429 'storage is (re)initializing' for a moment: no operator should start then."""
    try:
        custom.list_cluster_custom_object(api.GROUP, api.VERSION, api.PLURAL, limit=1)
    except ApiException:
        return False
    return True


# -- operators ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Operator:
    label: str
    start: Callable[[Stack, Scenario], tuple[subprocess.Popen[bytes], str]]
    log_name: str


def start_ours(st: Stack, sc: Scenario) -> tuple[subprocess.Popen[bytes], str]:
    return start_operator(st.plane, st.hub.url, st.state, env=sc.operator_env)


def start_reference(st: Stack, sc: Scenario) -> tuple[subprocess.Popen[bytes], str]:
    liveness = f"http://127.0.0.1:{free_ports(1)[0]}/healthz"
    argv = [sys.executable, str(REFERENCE), "--liveness", liveness]
    env = service_account_env(st.plane, st.hub.url, st.state)
    return launch("reference", argv, st.state, die_with_parent=True, env=env), liveness


OURS: Final = Operator("sandbox-operator", start_ours, "operator")
REFERENCE_OPERATOR: Final = Operator("reference", start_reference, "reference")


def alive(liveness: str) -> bool:
    try:
        with urllib.request.urlopen(liveness, timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def wait_alive(proc: subprocess.Popen[bytes], liveness: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while not alive(liveness):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"operator not live at {liveness}; see {log}")
        time.sleep(0.2)
    time.sleep(2.0)  # let start-up work (lease, first list) settle before the baselines


@dataclass
class Proc:
    """CPU and memory of a process from /proc."""

    pid: int

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    def _status_kib(self, key: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        raise RuntimeError(f"no {key} for pid {self.pid}")

    def rss_mib(self) -> float:
        return self._status_kib("VmRSS") / 1024

    def peak_rss_mib(self) -> float:
        return self._status_kib("VmHWM") / 1024


# -- the workload ---------------------------------------------------------------------------------


@dataclass
class Background:
    """A daemon thread that runs `_run` from `start` until `stop`."""

    _stop: threading.Event = field(default_factory=threading.Event, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True, name=type(self).__name__)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)

    def _run(self) -> None:
        raise NotImplementedError


@dataclass
class Watcher(Background):
    """Ready and gone times of the sessions of one namespace, from one watch (no polling)."""

    custom: client.CustomObjectsApi
    namespace: str
    ready: dict[str, float] = field(default_factory=dict)
    #: Each session's UID by name: its Space is named after it.
    uids: dict[str, str] = field(default_factory=dict)
    gone: dict[str, float] = field(default_factory=dict)
    latest: dict[str, dict[str, Any]] = field(default_factory=dict)

    def _run(self) -> None:
        resource_version = ""
        while not self._stop.is_set():
            try:
                if not resource_version:
                    listing = cast(
                        dict[str, Any],
                        self.custom.list_namespaced_custom_object(
                            api.GROUP, api.VERSION, self.namespace, api.PLURAL
                        ),
                    )
                    for obj in listing["items"]:
                        self._seen("ADDED", obj)
                    resource_version = listing["metadata"]["resourceVersion"]
                stream = watch.Watch().stream(
                    self.custom.list_namespaced_custom_object,
                    api.GROUP,
                    api.VERSION,
                    self.namespace,
                    api.PLURAL,
                    resource_version=resource_version,
                    timeout_seconds=10,
                )
                for event in stream:
                    obj = event["object"]
                    resource_version = obj["metadata"]["resourceVersion"]
                    self._seen(event["type"], obj)
                    if self._stop.is_set():
                        break
            except ApiException as error:
                if error.status == 410:
                    resource_version = ""  # expired: list again
                else:
                    time.sleep(1)

    def _seen(self, kind: str, obj: dict[str, Any]) -> None:
        now = time.monotonic()
        name = obj["metadata"]["name"]
        if kind == "DELETED":
            self.gone.setdefault(name, now)
            self.latest.pop(name, None)
            return
        self.latest[name] = obj
        self.uids[name] = obj["metadata"]["uid"]
        conditions = obj.get("status", {}).get("conditions", [])
        if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
            self.ready.setdefault(name, now)


def wait_for(done: Callable[[], bool], timeout: float, what: str) -> bool:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            print(f"  ! timed out after {timeout:.0f}s waiting for {what}", flush=True)
            return False
        time.sleep(0.2)
    return True


def manifest(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def in_parallel(fn: Callable[[str], object], names: list[str]) -> dict[str, float]:
    """Call `fn(name)` for every name on a few threads; return when each call began."""
    began: dict[str, float] = {}

    def one(name: str) -> None:
        began[name] = time.monotonic()
        fn(name)

    with ThreadPoolExecutor(CREATE_THREADS) as pool:
        list(pool.map(one, names))
    return began


def release_sessions(st: Stack, namespace: str, names: list[str]) -> None:
    """Drop the finalizers of sessions still there once their operator is stopped (it did not finish
    within the wait), so their namespace can go; their Spaces stay behind (`spaces_left`)."""
    for name in names:
        try:
            st.custom.patch_namespaced_custom_object(
                api.GROUP, api.VERSION, namespace, api.PLURAL, name, {"metadata": {"finalizers": None}}
            )
        except ApiException as error:
            if error.status != 404:
                raise


def create_namespace(st: Stack, name: str) -> None:
    st.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))


def delete_namespace(st: Stack, name: str) -> None:
    """Delete it and wait, so its garbage does not land in the next run's API-server counts."""
    st.plane.kubectl()("delete", "namespace", name, "--wait=true", "--timeout=600s", timeout=660)


def log_errors(log: Path) -> int:
    text = log.read_text(errors="replace") if log.exists() else ""
    return sum(1 for line in text.splitlines() if any(marker in line for marker in LOG_ERROR_MARKERS))


def latency_figures(prefix: str, began: Mapping[str, float], ended: Mapping[str, float]) -> dict[str, Any]:
    """Latencies per session over all of them: those that never ended within the wait count as longer
    than any, so a percentile that falls among them is None (not known), never a figure of the
    quick share alone."""
    latencies = [(ended[name] - began[name]) * 1000 for name in began if name in ended]
    missing = len(began) - len(latencies)
    first = min(began.values())
    return {
        f"{prefix}_all_s": (max(ended[n] for n in began) - first) if not missing else None,
        f"{prefix}_p50_ms": stats.censored_percentile(latencies, missing, 50),
        f"{prefix}_p95_ms": stats.censored_percentile(latencies, missing, 95),
        f"{prefix}_p99_ms": stats.censored_percentile(latencies, missing, 99),
        f"{prefix}_max_ms": max(latencies, default=None) if not missing else None,
        f"{prefix}_done": len(latencies),
        f"{prefix}_complete": not missing,
    }


def notice_drift(st: Stack, spaces: list[dict[str, Any]], deadline: float) -> float | None:
    """Pause one Ready session's Space behind the operator's back (as the Hub's owner could) and
    return how long until the operator asked the Hub to restart it; None if not by `deadline`."""
    space_id = next((s["id"] for s in spaces if s["id"] != DEV_TEMPLATE), None)
    if space_id is None:
        return None
    restarts = st.hub_calls()[("restart", 200)]
    st.admin.set_stage(space_id, "PAUSED")
    paused = time.monotonic()
    while time.monotonic() < deadline:
        if st.hub_calls()[("restart", 200)] > restarts:
            return time.monotonic() - paused
        time.sleep(0.5)
    return None


def burst_into_window(admin: HubSimAdmin, offset: float | None) -> float | None:
    """How far into the Hub's rate-limit window a burst sent now falls (seconds; None: no limit).
    With `offset`, it first waits until the window is that far in: when a burst spends a whole
    window, the tail depends on where it falls (docs/performance.md), so runs compare phase for phase."""
    standing = admin.rate_limit()
    if standing["quota"] is None:
        return None
    if offset is not None:
        time.sleep((offset - standing["intoWindow"]) % standing["window"])
        standing = admin.rate_limit()
    return float(standing["intoWindow"])


def run_once(
    st: Stack,
    sc: Scenario,
    operator: Operator,
    n: int,
    steady_minutes: float = 0.0,
    timeout: float | None = None,
    neighbour: bool = False,
    window_offset: float | None = None,
) -> dict[str, Any]:
    """One operator, one workload: apply N at once, all Ready, (`steady_minutes` of them Ready,
    untouched), delete all, all gone; `timeout` (else the scenario's) bounds each wait. `neighbour`:
    one more session in a namespace of its own, applied right after the N (a tenant beside a burst).
    `window_offset`: the burst waits until the Hub's rate-limit window is that many seconds in."""
    wait = timeout or sc.timeout
    print(f"- {operator.label}: {n} sessions ({sc.name})", flush=True)
    st.admin.reset()
    namespace = f"bench-{operator.log_name}"
    create_namespace(st, namespace)
    next_door = f"{namespace}-next-door"
    if neighbour:
        create_namespace(st, next_door)
    proc, liveness = operator.start(st, sc)
    log = st.state / f"{operator.log_name}.log"
    try:
        wait_alive(proc, liveness, log)
        errors_at_start = log_errors(log)  # e.g. the API server's watch cache warming up after the chart
        ps = Proc(proc.pid)
        rss_idle = ps.peak_rss_mib()  # started, live, no session yet: what the operator costs at all
        watcher = Watcher(st.custom, namespace)
        watcher.start()
        next_watcher = Watcher(st.custom, next_door)
        if neighbour:
            next_watcher.start()
        names = [f"s-{i:05d}" for i in range(n)]
        into_window = burst_into_window(st.admin, window_offset)  # before the counters: a wait is idle
        if into_window is not None:
            print(f"  the burst starts {into_window:.0f}s into the Hub's rate-limit window", flush=True)
        (writes0, api_cpu0), calls0, cpu0 = st.apiserver(), st.hub_calls(), ps.cpu_seconds()

        def create(name: str) -> None:
            st.custom.create_namespaced_custom_object(
                api.GROUP, api.VERSION, namespace, api.PLURAL, manifest(name, namespace)
            )

        applied = in_parallel(create, names)
        neighbour_applied = time.monotonic()
        if neighbour:
            st.custom.create_namespaced_custom_object(
                api.GROUP, api.VERSION, next_door, api.PLURAL, manifest(NEIGHBOUR, next_door)
            )
            wait_for(lambda: NEIGHBOUR in next_watcher.ready, wait, "the neighbour Ready")
        all_ready = wait_for(lambda: len(watcher.ready) >= n, wait, f"{n} sessions Ready")
        ready = dict(watcher.ready)  # as at the end of the wait: later ones are not within it
        (writes1, _), calls1, cpu1 = st.apiserver(), st.hub_calls(), ps.cpu_seconds()
        spaces = st.admin.spaces()
        last_built = stats.last_build_end(spaces, exclude={DEV_TEMPLATE})
        after_healthy = stats.ready_after_healthy(ready, watcher.uids, stats.first_running(spaces))
        steady = Counter[tuple[str, int]]()
        drift_noticed: float | None = None
        if steady_minutes > 0:
            print(f"  all Ready; {steady_minutes:g} min steady state, one Space paused behind", flush=True)
            steady_end = time.monotonic() + steady_minutes * 60
            drift_noticed = notice_drift(st, spaces, steady_end)
            time.sleep(max(0.0, steady_end - time.monotonic()))
            steady = st.hub_calls() - calls1

        (writes_deleting, _), calls_deleting = st.apiserver(), st.hub_calls()  # after any steady state

        def delete(name: str) -> None:
            st.custom.delete_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL, name)

        deleted = in_parallel(delete, names)
        if neighbour:
            st.custom.delete_namespaced_custom_object(
                api.GROUP, api.VERSION, next_door, api.PLURAL, NEIGHBOUR
            )
        # Not all Ready: the delete figures mean nothing (the operator is still busy creating), so the
        # wait is short and what is left is let go below, keeping the invocation bounded.
        delete_wait = wait if all_ready else min(wait, DELETE_WAIT_AFTER_TIMEOUT)
        wait_for(lambda: len(watcher.gone) >= n, delete_wait, f"{n} sessions gone")
        gone = dict(watcher.gone)
        (writes2, api_cpu2), calls2, cpu2 = st.apiserver(), st.hub_calls(), ps.cpu_seconds()
        rss_peak = ps.peak_rss_mib()
        watcher.stop()
        next_watcher.stop()
    finally:
        stop_process(proc)
    per_5min = 5 / steady_minutes if steady_minutes > 0 else 0.0
    spaces_left = len([s for s in st.admin.spaces() if s["id"] != DEV_TEMPLATE])
    release_sessions(st, namespace, [name for name in names if name not in gone])
    delete_namespace(st, namespace)
    if neighbour:
        release_sessions(st, next_door, [NEIGHBOUR])
        delete_namespace(st, next_door)
    neighbour_ready = next_watcher.ready.get(NEIGHBOUR)

    # The bench's own creates and deletes are in the counts: take them out.
    ready_writes = writes1 - writes0
    ready_writes[("agentsessions", "", "POST")] -= n
    delete_writes = writes2 - writes_deleting
    delete_writes[("agentsessions", "", "DELETE")] -= n
    ready_calls, delete_calls = calls1 - calls0, calls2 - calls_deleting
    events = sum(v for (resource, _, _), v in ready_writes.items() if resource == "events")
    return {
        "sessions": n,
        "ready_timeout_s": wait,
        "burst_into_window_s": into_window,
        **latency_figures("ready", applied, ready),
        **latency_figures("delete", deleted, gone),
        # The emulator runs in this process: its timeline and the watch share time.monotonic. Not
        # known unless all were Ready (the last build may not even have begun).
        **(
            {
                "neighbour_ready_ms": (neighbour_ready - neighbour_applied) * 1000
                if neighbour_ready
                else None,
                "neighbour_ready_behind": sum(
                    1 for t in ready.values() if neighbour_ready and t < neighbour_ready
                ),
            }
            if neighbour
            else {}
        ),
        "ready_after_last_build_s": (
            max(ready.values()) - last_built if last_built is not None and all_ready else None
        ),
        # Ready minus the moment the session's Space first ran (its app could answer): what a user waits
        # for the operator to notice, whatever the build took.
        "ready_after_healthy_p50_ms": stats.percentile(after_healthy, 50) if after_healthy else None,
        "ready_after_healthy_p99_ms": stats.percentile(after_healthy, 99) if after_healthy else None,
        "cpu_s": cpu2 - cpu0,
        "cpu_s_ready": cpu1 - cpu0,
        # The benchmark's own creates, deletes and watches are in it, the same for either operator.
        "apiserver_cpu_s": api_cpu2 - api_cpu0,
        "rss_peak_mib": rss_peak,
        "rss_idle_mib": rss_idle,
        "rss_per_session_kib": (rss_peak - rss_idle) * 1024 / n,
        "api_writes_per_session": sum(ready_writes.values()) / n,
        "api_writes_per_session_delete": sum(delete_writes.values()) / n,
        "events_per_session": events / n,
        "api_writes": stats.flat_writes(ready_writes),
        "api_writes_delete": stats.flat_writes(delete_writes),
        "hub_calls_per_session": sum(ready_calls.values()) / n,
        "hub_api_calls_per_session": stats.api_calls(ready_calls) / n,
        "hub_calls_per_session_delete": sum(delete_calls.values()) / n,
        "hub_calls_by_route": stats.by_route(ready_calls),
        "hub_calls_by_route_delete": stats.by_route(delete_calls),
        "hub_429s": sum(v for (_, status), v in (calls2 - calls0).items() if status == 429),
        **(
            {
                "steady_minutes": steady_minutes,
                "drift_noticed_ms": drift_noticed * 1000 if drift_noticed is not None else None,
                "hub_calls_per_5min_steady": stats.api_calls(steady) * per_5min,
                "app_health_checks_per_5min_steady": stats.by_route(steady).get("health", 0) * per_5min,
                "hub_calls_by_route_steady": stats.by_route(steady),
            }
            if steady_minutes > 0
            else {}
        ),
        "spaces_left": spaces_left,
        "log_errors": log_errors(log) - errors_at_start,
        "log_errors_at_start": errors_at_start,
    }


# -- warm pool ------------------------------------------------------------------------------------

POOL_NAME: Final = "warm"
#: Sessions whose sandbox the probe asks at once, and its pause between rounds: a round over 200
#: sessions takes tens of milliseconds, the resolution of the "answers its own token" figures.
PROBE_THREADS: Final = 16
PROBE_PAUSE: Final = 0.02


@dataclass
class TokenProbe(Background):
    """For each session, the first moment its sandbox answers the token of the session's OWN
    connection Secret, through the Hub's edge with the Secret's `hubToken`: what an agent does to
    connect. The Secret is read once its session's status names it (again after a 401 or 404, or
    while it lacks a key); the health check is repeated every round until it answers 200."""

    core: client.CoreV1Api
    watcher: Watcher
    namespace: str
    names: list[str]
    answered: dict[str, float] = field(default_factory=dict)

    def _run(self) -> None:
        connections: dict[str, dict[str, str]] = {}
        with ThreadPoolExecutor(PROBE_THREADS) as workers:
            while not self._stop.is_set() and len(self.answered) < len(self.names):
                pending = [name for name in self.names if name not in self.answered]
                list(workers.map(lambda name: self._probe(name, connections), pending))
                self._stop.wait(PROBE_PAUSE)

    def _probe(self, name: str, connections: dict[str, dict[str, str]]) -> None:
        status = (self.watcher.latest.get(name) or {}).get("status") or {}
        if not status.get("connectionSecret"):
            return
        connection = connections.get(name)
        if connection is None:
            connection = self._connection(status["connectionSecret"])
            if not all(connection.get(key) for key in (KEY_TOKEN, KEY_SANDBOX_URL, KEY_HUB_TOKEN)):
                return
            connections[name] = connection
        answer = sandbox_health(connection)
        if answer == 200:
            self.answered.setdefault(name, time.monotonic())
        elif answer in (401, 404):  # a token or read token that changed since: read the Secret again
            connections.pop(name, None)

    def _connection(self, secret: str) -> dict[str, str]:
        try:
            data = self.core.read_namespaced_secret(secret, self.namespace).data or {}
        except ApiException as error:
            if error.status == 404:
                return {}
            raise
        return {key: base64.b64decode(value).decode() for key, value in data.items()}


def sandbox_health(connection: Mapping[str, str]) -> int:
    """The status the sandbox's health endpoint answers to the connection Secret's credentials."""
    url = connection[KEY_SANDBOX_URL].rstrip("/") + OperatorConfig().health_path
    headers = {SANDBOX_AUTH_HEADER: f"Bearer {connection[KEY_TOKEN]}"}
    headers["Authorization"] = f"Bearer {connection[KEY_HUB_TOKEN]}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except (urllib.error.URLError, TimeoutError):
        return 0


def pool_manifest(namespace: str, replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.POOL_KIND,
        "metadata": {"name": POOL_NAME, "namespace": namespace},
        "spec": {"replicas": replicas},
    }


def pool_ready(st: Stack, namespace: str) -> int:
    pool = cast(
        dict[str, Any],
        st.custom.get_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.POOL_PLURAL, POOL_NAME),
    )
    return int((pool.get("status") or {}).get("ready", 0))


def pool_exists(st: Stack, namespace: str) -> bool:
    listing = cast(
        dict[str, Any],
        st.custom.list_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.POOL_PLURAL),
    )
    return bool(listing["items"])


def run_batch(
    st: Stack, sc: Scenario, watcher: Watcher, namespace: str, names: list[str], warm: bool
) -> dict[str, Any]:
    """Create the sessions at once (naming the pool when `warm`), wait until all are Ready (and, when
    `warm`, until each sandbox answers the session's own token), delete them."""
    spec = {"poolRef": {"name": POOL_NAME}} if warm else {}
    calls0 = st.hub_calls()
    probe = TokenProbe(st.core, watcher, namespace, names)
    if warm:
        probe.start()

    def create(name: str) -> None:
        st.custom.create_namespaced_custom_object(
            api.GROUP, api.VERSION, namespace, api.PLURAL, manifest(name, namespace, **spec)
        )

    applied = in_parallel(create, names)
    wait_for(lambda: all(name in watcher.ready for name in names), sc.timeout, f"{len(names)} sessions Ready")
    if warm:
        wait_for(
            lambda: len(probe.answered) == len(names),
            sc.timeout,
            f"{len(names)} sandboxes to answer their tokens",
        )
        probe.stop()
    calls = st.hub_calls() - calls0
    launch_types = Counter(
        (watcher.latest.get(name, {}).get("status") or {}).get("launchType") or "cold" for name in names
    )
    in_parallel(
        lambda name: st.custom.delete_namespaced_custom_object(
            api.GROUP, api.VERSION, namespace, api.PLURAL, name
        ),
        names,
    )
    wait_for(lambda: all(name in watcher.gone for name in names), sc.timeout, f"{len(names)} sessions gone")
    return {
        **latency_figures("ready", applied, watcher.ready),
        **(latency_figures("answers", applied, probe.answered) if warm else {}),
        "launch_types": dict(launch_types),
        "hub_calls_per_session": sum(calls.values()) / len(names),
        "hub_calls_by_route": stats.by_route(calls),
    }


def run_pool(st: Stack, sc: Scenario, n: int, claims: list[int]) -> dict[str, Any]:
    """A pool of N; for each batch size: that many sessions claiming at once (apply -> Ready), then as
    many created cold, each batch on a full pool."""
    print(f"- pool of {n}: claims at once {claims}, beside as many cold creates ({sc.name})", flush=True)
    st.admin.reset()
    namespace = "bench-pool"
    create_namespace(st, namespace)
    proc, liveness = start_ours(st, sc)
    log = st.state / "operator.log"
    batches: dict[str, Any] = {}
    fills: list[float] = []
    try:
        wait_alive(proc, liveness, log)
        errors_at_start = log_errors(log)
        ps = Proc(proc.pid)
        watcher = Watcher(st.custom, namespace)
        watcher.start()
        began = time.monotonic()
        st.custom.create_namespaced_custom_object(
            api.GROUP, api.VERSION, namespace, api.POOL_PLURAL, pool_manifest(namespace, n)
        )
        for size in claims:
            wait_for(lambda: pool_ready(st, namespace) >= n, sc.timeout, f"the pool of {n} to fill")
            fills.append(time.monotonic() - began)
            print(f"  pool full after {fills[-1]:.0f}s; {size} claims at once", flush=True)
            warm = run_batch(st, sc, watcher, namespace, [f"w{size}-{i:04d}" for i in range(size)], warm=True)
            print(f"  {size} cold creates at once", flush=True)
            cold = run_batch(
                st, sc, watcher, namespace, [f"c{size}-{i:04d}" for i in range(size)], warm=False
            )
            batches[str(size)] = {"warm": warm, "cold": cold}
            began = time.monotonic()
        st.custom.delete_namespaced_custom_object(
            api.GROUP, api.VERSION, namespace, api.POOL_PLURAL, POOL_NAME
        )
        # The pool itself (its finalizer goes once its Spaces are gone), so the namespace can go too.
        wait_for(lambda: not pool_exists(st, namespace), sc.timeout, "the pool gone")
        rss_peak = ps.peak_rss_mib()
        watcher.stop()
    finally:
        stop_process(proc)
    spaces_left = len([s for s in st.admin.spaces() if s["id"] != DEV_TEMPLATE])
    delete_namespace(st, namespace)
    return {
        "pool": n,
        "batches": batches,
        "pool_fill_s": fills,
        "rss_peak_mib": rss_peak,
        "spaces_left": spaces_left,
        "log_errors": log_errors(log) - errors_at_start,
    }


# -- soak -----------------------------------------------------------------------------------------


def run_soak(st: Stack, sc: Scenario, n: int, minutes: float, patch_rate: float) -> dict[str, Any]:
    """N sessions, continuous hardware patches for `minutes`; RSS slope, log errors, watch stalls."""
    print(f"- soak: {n} sessions, {minutes:g} min of patches at {patch_rate:g}/s", flush=True)
    namespace = "bench-soak"
    create_namespace(st, namespace)
    proc, liveness = start_ours(st, sc)
    log = st.state / "operator.log"
    try:
        wait_alive(proc, liveness, log)
        errors_at_start = log_errors(log)  # e.g. the API server's watch cache warming up after the chart
        ps = Proc(proc.pid)
        watcher = Watcher(st.custom, namespace)
        watcher.start()
        names = [f"s-{i:05d}" for i in range(n)]
        in_parallel(
            lambda name: st.custom.create_namespaced_custom_object(
                api.GROUP, api.VERSION, namespace, api.PLURAL, manifest(name, namespace)
            ),
            names,
        )
        wait_for(lambda: len(watcher.ready) >= n, sc.timeout, f"{n} sessions Ready")
        calls0 = st.hub_calls()
        samples: list[tuple[float, float]] = []
        stalls, patches, errors_patching = 0, 0, 0
        start = time.monotonic()
        next_sample = start
        while time.monotonic() - start < minutes * 60:
            now = time.monotonic()
            if now >= next_sample:
                samples.append((now - start, ps.rss_mib()))
                stalls += 0 if alive(liveness) else 1
                next_sample += 5
            name = names[patches % n]
            flavor = UNAPPROVED_FLAVOR if (patches // n) % 2 == 0 else "cpu-basic"
            try:
                st.custom.patch_namespaced_custom_object(
                    api.GROUP, api.VERSION, namespace, api.PLURAL, name, {"spec": {"hardware": flavor}}
                )
            except ApiException:
                errors_patching += 1
            patches += 1
            time.sleep(max(0.0, start + patches / patch_rate - time.monotonic()))
        soak_seconds = time.monotonic() - start
        calls = st.hub_calls() - calls0

        def caught_up() -> bool:
            return all(
                obj.get("status", {}).get("observedGeneration") == obj["metadata"]["generation"]
                for obj in watcher.latest.values()
            )

        wait_for(caught_up, 120, "every session to observe its last patch")
        lagging = sum(
            1
            for obj in watcher.latest.values()
            if obj.get("status", {}).get("observedGeneration") != obj["metadata"]["generation"]
        )
        rss_peak = ps.peak_rss_mib()
        in_parallel(
            lambda name: st.custom.delete_namespaced_custom_object(
                api.GROUP, api.VERSION, namespace, api.PLURAL, name
            ),
            names,
        )
        wait_for(lambda: len(watcher.gone) >= n, sc.timeout, f"{n} sessions gone")
        watcher.stop()
    finally:
        stop_process(proc)
    delete_namespace(st, namespace)
    return {
        "minutes": soak_seconds / 60,
        "patches": patches,
        "patch_errors": errors_patching,
        "rss_start_mib": samples[0][1] if samples else None,
        "rss_end_mib": samples[-1][1] if samples else None,
        "rss_peak_mib": rss_peak,
        "rss_slope_mib_per_hour": stats.slope_per_hour(samples),
        # Without the warm-up (caches, first reconciles): what a longer run would keep doing.
        "rss_slope_mib_per_hour_second_half": stats.slope_per_hour(samples[len(samples) // 2 :]),
        "rss_samples": [[round(t, 1), round(v, 2)] for t, v in samples],
        "log_errors": log_errors(log) - errors_at_start,
        "log_errors_at_start": errors_at_start,
        "liveness_failures": stalls,
        "sessions_lagging": lagging,
        "watch_stalled": stalls > 0 or lagging > 0,
        "hub_calls_per_minute": sum(calls.values()) / (soak_seconds / 60),
        "hub_calls_by_route": stats.by_route(calls),
    }


def print_soak(result: Mapping[str, Any]) -> None:
    width = max(map(len, SOAK_HEADLINE))
    for key in SOAK_HEADLINE:
        value = result[key]
        print(f"  {key:<{width}}  {value:.2f}" if isinstance(value, float) else f"  {key:<{width}}  {value}")


# -- main -----------------------------------------------------------------------------------------


def git_commit() -> str:
    result = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False)
    return result.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenario", choices=["overhead", "hub-shape", "soak", "pool"], required=True)
    parser.add_argument("-n", "--sessions", type=int, default=10)
    parser.add_argument("--json", type=Path, default=None, help="merge the figures into this file")
    parser.add_argument("--no-reference", action="store_true", help="measure sandbox-operator only")
    parser.add_argument("--build-min", type=float, default=60.0, help="hub-shape: shortest build (s)")
    parser.add_argument("--build-max", type=float, default=120.0, help="hub-shape: longest build (s)")
    parser.add_argument("--seed", type=int, default=11, help="hub-shape, pool: seed of the build times")
    parser.add_argument(
        "--claims",
        default="1,50,200",
        help="pool: batch sizes of claims at once, comma-separated (at most N)",
    )
    parser.add_argument("--minutes", type=float, default=5.0, help="soak: how long to patch")
    parser.add_argument("--patch-rate", type=float, default=10.0, help="soak: spec patches per second")
    parser.add_argument(
        "--steady-minutes",
        type=float,
        default=0.0,
        help="overhead, hub-shape: once all are Ready, count our calls this long (scaled to 5 min)",
    )
    parser.add_argument(
        "--window-offset",
        type=float,
        default=None,
        metavar="SECONDS",
        help="hub-shape: each operator's burst waits until the Hub's rate-limit window is this far in "
        "(0: right after a reset); by default it starts wherever the window is, and says where",
    )
    parser.add_argument("--timeout", type=float, default=None, help="wait this long for all Ready / gone")
    parser.add_argument(
        "--reference-timeout",
        type=float,
        default=None,
        help="the same for the reference (default: --timeout); what it did not finish is reported as bounds",
    )
    parser.add_argument(
        "--operator-env", action="append", default=[], metavar="KEY=VALUE", help="extra operator setting"
    )
    parser.add_argument("--keep", type=Path, default=None, help="state dir to keep (logs); default: temp")
    parser.add_argument(
        "--neighbour",
        action="store_true",
        help="overhead, hub-shape: one more session in a namespace of its own, applied right after the N",
    )
    args = parser.parse_args()
    sc = scenario(args.scenario, args)
    meta = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "cpus": os.cpu_count(),
        "hubsim": sc.hubsim.model_dump(exclude={"tokens"}),
        "operator_env": dict(sc.operator_env),
    }
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        state = args.keep or Path(tmp)
        state.mkdir(parents=True, exist_ok=True)
        with stack(state, sc.hubsim) as st:
            if args.scenario == "soak":
                result = {**run_soak(st, sc, args.sessions, args.minutes, args.patch_rate), "meta": meta}
                print_soak(result)
            elif args.scenario == "pool":
                sizes = sorted({min(int(c), args.sessions) for c in args.claims.split(",") if c.strip()})
                result = {**run_pool(st, sc, args.sessions, sizes), "meta": meta}
                print()
                print(stats.pool_table(f"pool of {args.sessions}: apply -> Ready", result["batches"]))
                print(f"  pool filled after {', '.join(f'{s:.0f}s' for s in result['pool_fill_s'])}; "
                      f"Spaces left {result['spaces_left']}; log errors {result['log_errors']}")  # fmt: skip
            else:
                ours = run_once(
                    st,
                    sc,
                    OURS,
                    args.sessions,
                    args.steady_minutes,
                    neighbour=args.neighbour,
                    window_offset=args.window_offset,
                )
                result = {**ours, "meta": meta}
                reference = (
                    None
                    if args.no_reference
                    else run_once(
                        st,
                        sc,
                        REFERENCE_OPERATOR,
                        args.sessions,
                        timeout=args.reference_timeout,
                        neighbour=args.neighbour,
                        window_offset=args.window_offset,
                    )
                )
                if reference is not None:
                    result["reference"] = reference
                    result["ratio"] = {
                        key: stats.exact_ratio(result, reference, key) for key, _ in stats.HEADLINE
                    }
                    result["ratio_bound"] = stats.ratio_bounds(result, reference)
                print()
                print(stats.table(f"{args.scenario}, N={args.sessions}", result, reference))
                for key in ("hub_calls_by_route", "api_writes"):
                    print(f"  {key}, apply -> Ready:\n    ours      {result[key]}")
                    if reference is not None:
                        print(f"    reference {reference[key]}")
    if args.json is not None:
        stats.merge_json(args.json, args.scenario, args.sessions, result)
        print(f"figures written to {args.json} under [{args.scenario!r}][{str(args.sessions)!r}]")


if __name__ == "__main__":
    main()
