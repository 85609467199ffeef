"""Dev mode: a local control plane, the Hub emulator and the operator, wired together.

`run_dev` is the foreground supervisor: every process it starts dies with it, so Ctrl-C
(or `dev down`, which signals it) leaves nothing behind. `dev up` runs that supervisor in
the background and returns once `env.sh` is written, which is the signal that all is ready.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandbox_operator import api
from sandbox_operator.api.crd import render_crd, render_pool_crd
from sandbox_operator.config.settings import DEFAULT_OPERATOR_NAMESPACE

from .controlplane import ControlPlane, find_binaries, stop_from_state_dir
from .controlplane.helm import Helm
from .controlplane.plane import ADMIN_USER
from .controlplane.processes import free_ports, launch, log_path, log_tail
from .hubsim import HubSimConfig, HubSimServer
from .hubsim.views import sandbox_url_template

DEV_OWNER = "agents"
DEV_TEMPLATE = "templates/agent-sandbox"
#: How long a fresh private duplicate answers 401/404 on some routes in dev mode (docs/hub-fidelity.md F36).
DEV_TRANSIENT_ERROR_SECONDS = 2.0
#: The Hub's documented API quota of a free user, per 5-minute window (docs/hub-fidelity.md F38).
DEV_RATE_LIMIT = 1000
DEV_TOKEN = "hf_sim_operator"  # the emulator token the operator acts with (a fake, never a real credential)
#: A second token of the owner, standing in for a read-only one, which the emulator does not tell
#: apart: published to agent pods (the connection Secret's hubToken) to pass a private Space's edge.
DEV_READ_TOKEN = "hf_sim_reader"
#: A token of another Hub user, which may not see the owner's private Spaces (the edge answers 404).
DEV_OUTSIDER_TOKEN = "hf_sim_outsider"
#: Every token the dev emulator knows, and the Hub user each stands for.
DEV_TOKENS = {DEV_TOKEN: DEV_OWNER, DEV_READ_TOKEN: DEV_OWNER, DEV_OUTSIDER_TOKEN: "outsider"}
ENV_FILE = "env.sh"
SUPERVISOR_PID = "dev.pid"
#: How often the foreground supervisor checks that every process it started still runs.
PROCESS_CHECK_SECONDS = 1.0
RELEASE = "sandbox-operator"
#: The operator's default namespace: with the chart's default Lease name, `sandbox-operator run`
#: needs no Lease flag to find the Lease of the chart's Deployment.
RELEASE_NAMESPACE = DEFAULT_OPERATOR_NAMESPACE


class DevError(RuntimeError):
    pass


def hubsim_config(build_seconds: float, hardware_seconds: float) -> HubSimConfig:
    """Dev mode meets the Hub's rough edges: transient errors after a duplicate, the free-user API quota."""
    return HubSimConfig(
        tokens=DEV_TOKENS,
        templates=[DEV_TEMPLATE],
        build_seconds=build_seconds,
        hardware_switch_seconds=hardware_seconds,
        transient_error_seconds=DEV_TRANSIENT_ERROR_SECONDS,
        rate_limit=DEV_RATE_LIMIT,
    )


def install_crd(plane: ControlPlane) -> None:
    """Just the CRDs, from the generated schema (tests that need no chart)."""
    plane.kubectl()("apply", "-f", "-", stdin=render_crd())
    plane.kubectl()("apply", "-f", "-", stdin=render_pool_crd())
    wait_crd_established(plane)


def wait_crd_established(plane: ControlPlane) -> None:
    """Each CRD Established and served: until the API server's watch cache of a new resource has listed it,
    a list answers 429 "storage is (re)initializing", which an operator started then would log as an
    error. kubectl's list waits that out (it honours the answer's Retry-After)."""
    for plural in (api.PLURAL, api.POOL_PLURAL):
        plane.kubectl()("wait", "--for=condition=Established", "--timeout=60s", f"crd/{plural}.{api.GROUP}")
        plane.kubectl()("get", f"{plural}.{api.GROUP}", "--all-namespaces", "--output=name")


def chart_dir() -> Path:
    """The chart of this source checkout: dev mode installs exactly what users install."""
    chart = Path(__file__).resolve().parents[2] / "charts" / "sandbox-operator"
    if not (chart / "Chart.yaml").is_file():
        raise DevError(f"dev mode runs from a source checkout; no chart at {chart}")
    return chart


def install_chart(
    plane: ControlPlane, hub_url: str, state_dir: Path, overrides: Mapping[str, Any] | None = None
) -> None:
    """`helm install` the CRD, RBAC, approval policy and (pending: there is no kubelet) Deployment;
    `overrides` are top-level chart values over dev mode's."""
    helm = Helm(plane.bin_dir / "helm", state_dir / "helm", plane.kubeconfig)
    values: dict[str, Any] = {
        "hub": {
            "endpoint": hub_url,
            "sandboxUrlTemplate": sandbox_url_template(hub_url),
            "token": DEV_TOKEN,
            "readToken": {"token": DEV_READ_TOKEN},
        },
        "defaultOwner": DEV_OWNER,
        "defaultTemplate": DEV_TEMPLATE,
        **(overrides or {}),
    }
    helm("install", RELEASE, str(chart_dir()), "--namespace", RELEASE_NAMESPACE, "--create-namespace",
         "--values", str(helm.values_file(values)))  # fmt: skip
    wait_crd_established(plane)


def operator_env(plane: ControlPlane, hub_url: str) -> dict[str, str]:
    """Environment for `sandbox-operator run` against the dev control plane and emulator."""
    return {
        "KUBECONFIG": str(plane.kubeconfig),
        "HF_ENDPOINT": hub_url,
        # The emulator serves each Space's app under its own address, not at {subdomain}.hf.space.
        "SANDBOX_OPERATOR_SANDBOX_URL_TEMPLATE": sandbox_url_template(hub_url),
        "HF_TOKEN": DEV_TOKEN,
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "SANDBOX_OPERATOR_DEFAULT_OWNER": DEV_OWNER,
        "SANDBOX_OPERATOR_DEFAULT_TEMPLATE": DEV_TEMPLATE,
        # The Secret the chart made of hub.readToken, in the operator's (default) namespace.
        "SANDBOX_OPERATOR_HUB_READ_TOKEN_SECRET": f"{RELEASE}-hub-read",
    }


def service_account_env(plane: ControlPlane, hub_url: str, state_dir: Path) -> dict[str, str]:
    """The operator environment with the chart's ServiceAccount identity: its RBAC and nothing more."""
    account = plane.service_account_kubeconfig(
        state_dir / "operator.kubeconfig", RELEASE_NAMESPACE, RELEASE, duration="24h"
    )
    return {**os.environ, **operator_env(plane, hub_url), "KUBECONFIG": str(account)}


def start_operator(
    plane: ControlPlane, hub_url: str, state_dir: Path, env: Mapping[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """`sandbox-operator run` as a child (`env` overrides settings); returns it and its liveness URL."""
    # Free ports, so several dev environments (and tests) run side by side; kopf reads port 0 as 80.
    liveness_port, readiness_port, metrics_port = free_ports(3)
    liveness = f"http://127.0.0.1:{liveness_port}/healthz"
    argv = [sys.executable, "-m", "sandbox_operator", "run", "--liveness", liveness]
    argv += ["--readiness", f"http://127.0.0.1:{readiness_port}/readyz", "--metrics-port", str(metrics_port)]
    full_env = {**service_account_env(plane, hub_url, state_dir), **(env or {})}
    operator = launch("operator", argv, state_dir, die_with_parent=True, env=full_env)
    time.sleep(1.0)
    if operator.poll() is not None:
        raise DevError(f"the operator exited at start:\n{log_tail(state_dir, 'operator')}")
    return operator, liveness


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout`."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def write_env_file(state_dir: Path, plane: ControlPlane, hub_url: str) -> Path:
    env = operator_env(plane, hub_url)
    env["HUBSIM_ADMIN_URL"] = f"{hub_url}/_sim"
    lines = [f"export {key}={value!r}" for key, value in env.items()]
    # kubectl, helm, and beside them the operator's commands (kubectl-sandbox: `kubectl sandbox ...`).
    commands = Path(sys.executable).parent
    lines.append(f'export PATH={str(plane.bin_dir)!r}:{str(commands)!r}:"$PATH"')
    path = state_dir / ENV_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)  # atomic: `dev up` treats the file's appearance as "ready"
    return path


@dataclass(frozen=True)
class DevEnvironment:
    """What `dev_environment` started: its env file, and a look at whether each process still runs."""

    state_dir: Path
    env_file: Path
    plane: ControlPlane
    operator: subprocess.Popen[bytes] | None

    def death(self) -> str | None:
        """What has died (component, exit code, the end of its log), or None while everything runs."""
        exited = {name: (code, self.plane.state_dir) for name, code in self.plane.exited().items()}
        if self.operator is not None and self.operator.poll() is not None:
            exited["operator"] = (self.operator.returncode, self.state_dir)
        if not exited:
            return None
        return "\n".join(
            f"{name} {_ended(code)}; the end of {log_path(where, name)}:\n{log_tail(where, name)}"
            for name, (code, where) in exited.items()
        )


def _ended(code: int) -> str:
    """How a process ended, as a person reads it: a negative code is the signal that killed it."""
    if code >= 0:
        return f"exited (code {code})"
    try:
        return f"was killed by {signal.Signals(-code).name}"
    except ValueError:  # a signal without a name here
        return f"was killed by signal {-code}"


@contextmanager
def dev_environment(
    state_dir: Path,
    *,
    with_operator: bool,
    build_seconds: float = 3.0,
    hardware_seconds: float = 3.0,
    operator_settings: Mapping[str, str] | None = None,
) -> Iterator[DevEnvironment]:
    """Start everything, yield what runs, and stop everything on exit; `operator_settings` (environment
    variables of `run`) override dev mode's."""
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / ENV_FILE).unlink(missing_ok=True)
    plane = ControlPlane(state_dir / "controlplane", find_binaries())
    plane.start()
    hub = HubSimServer(hubsim_config(build_seconds, hardware_seconds))
    operator: subprocess.Popen[bytes] | None = None
    try:
        hub.start()
        install_chart(plane, hub.url, state_dir)
        if with_operator:
            operator, _ = start_operator(plane, hub.url, state_dir, operator_settings)
        yield DevEnvironment(state_dir, write_env_file(state_dir, plane, hub.url), plane, operator)
    finally:
        (state_dir / ENV_FILE).unlink(missing_ok=True)
        if operator is not None:
            stop_process(operator)
        hub.stop()
        plane.stop()


def run_dev(
    state_dir: Path, *, with_operator: bool, build_seconds: float, hardware_seconds: float, announce: bool
) -> None:
    """Foreground: run until SIGINT or SIGTERM, or until a process it started dies (DevError: a dev
    environment without its operator or API server would only look ready)."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with dev_environment(
        state_dir, with_operator=with_operator, build_seconds=build_seconds, hardware_seconds=hardware_seconds
    ) as running:
        if announce:
            print(_instructions(state_dir, running.env_file, with_operator), flush=True)
        while not stop.wait(PROCESS_CHECK_SECONDS):
            death = running.death()
            if death is not None:
                raise DevError(f"{death}\nStopping the dev environment; `make dev` starts a fresh one.")
    if announce:
        print("Stopped. Nothing is kept: the next `make dev` starts a fresh control plane and emulator.")


def _instructions(state_dir: Path, env_file: Path, with_operator: bool) -> str:
    operator_line = (
        f"The operator runs here; its log is {state_dir / 'operator.log'} (the first line shows its ports)."
        if with_operator
        else "No operator runs: start it with `sandbox-operator run` after sourcing the env file."
    )
    return f"""
sandbox-operator dev environment is ready.

  source {env_file}
  kubectl apply -f examples/session.yaml
  kubectl get ags -w

{operator_line}
The Hub emulator's admin API is at $HUBSIM_ADMIN_URL (try: curl -s $HUBSIM_ADMIN_URL/spaces).
You are the cluster admin "{ADMIN_USER}" (group system:masters); --as=<user> acts as another.
Press Ctrl-C to stop everything. Nothing is kept: the next run starts with no sessions and no Spaces,
the emulator on a new port, and a new env file to source.
"""


def up(state_dir: Path, *, with_operator: bool, build_seconds: float, hardware_seconds: float) -> Path:
    """Start the supervisor in the background; return the env file once everything is ready."""
    state_dir.mkdir(parents=True, exist_ok=True)
    if _supervisor_pid(state_dir) is not None:
        raise DevError(
            f"a dev environment already runs in {state_dir}; run `sandbox-testbench dev down` first"
        )
    (state_dir / ENV_FILE).unlink(missing_ok=True)
    argv = [sys.executable, "-m", "sandbox_testbench", "dev", "--state-dir", str(state_dir)]
    argv += ["--build-seconds", str(build_seconds), "--hardware-seconds", str(hardware_seconds), "--quiet"]
    if not with_operator:
        argv.append("--without-operator")
    with (state_dir / "dev.log").open("wb") as out:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    (state_dir / SUPERVISOR_PID).write_text(f"{proc.pid}\n")
    env_file = state_dir / ENV_FILE
    deadline = time.monotonic() + 180
    while not env_file.exists():
        if proc.poll() is not None:
            raise DevError(f"dev environment failed to start:\n{log_tail(state_dir, 'dev')}")
        if time.monotonic() > deadline:
            down(state_dir)
            raise DevError(f"dev environment not ready after 180s:\n{log_tail(state_dir, 'dev')}")
        time.sleep(0.2)
    return env_file


def _supervisor_pid(state_dir: Path) -> int | None:
    try:
        pid = int((state_dir / SUPERVISOR_PID).read_text().strip())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    return pid


def down(state_dir: Path, timeout: float = 30.0) -> None:
    """Stop what `up` started: the supervisor stops its children; leftovers are stopped by pid file."""
    pid = _supervisor_pid(state_dir)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _supervisor_pid(state_dir) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
    (state_dir / SUPERVISOR_PID).unlink(missing_ok=True)
    (state_dir / ENV_FILE).unlink(missing_ok=True)
    stop_from_state_dir(state_dir / "controlplane")
