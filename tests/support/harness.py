"""Helpers for driving the real operator process against the control plane and the Hub emulator."""

from __future__ import annotations

import functools
import http.client
import itertools
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import pytest

from sandbox_operator import api
from sandbox_operator.core.model import MARKER_SESSION_UID
from sandbox_testbench.controlplane import ControlPlane, ControlPlaneError, Kubectl
from sandbox_testbench.controlplane.processes import free_ports
from sandbox_testbench.hubsim import HubSimAdmin
from sandbox_testbench.hubsim.views import sandbox_url_template
from tests.support import wait_for
from tests.support.docs import fenced
from tests.support.kube import ApiError, api_client, namespaced_path

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "sandbox-operator"
OPERATOR_TOKEN = "hf_test_operator"
OWNER = "agents"
#: The user and token of an operator started by mistake next to the first one.
SECOND_OPERATOR = "operator-b"
SECOND_OPERATOR_TOKEN = "hf_test_operator_b"
#: A second token of the owner, the platform's read token: agent pods and the health check pass the
#: edge of private Spaces with it (the operator never sends its own token to a sandbox).
READ_TOKEN = "hf_test_reader"
#: The Secret holding READ_TOKEN, in the operator's namespace.
READ_TOKEN_SECRET = "hub-read-token"
TEMPLATE = "templates/agent-sandbox"
#: The admin kubeconfig's group, through which it may approve any flavor (named in approverGroups,
#: so the operator's SubjectAccessReview sees it).
ADMIN_GROUP = "system:masters"
#: Seconds between the Hub polls of a starting session, in every operator the tests start.
POLL_INTERVAL = 0.2
T = TypeVar("T")


@contextmanager
def running_control_plane(state_dir: Path) -> Iterator[ControlPlane]:
    """A started control plane, stopped afterwards; a failed start fails the tests, never skips them."""
    plane = ControlPlane(state_dir, die_with_parent=True)
    failure: ControlPlaneError | None = None
    try:
        plane.start()
    except ControlPlaneError as error:
        failure = error  # failed outside the handler, so the report shows the message only once
    if failure is not None:
        pytest.fail(f"local control plane did not start: {failure}", pytrace=False)
    try:
        yield plane
    finally:
        plane.stop()


def install_read_token(plane: ControlPlane, namespace: str = "default") -> None:
    """The platform's read token Secret, as a platform team creates it for the operator."""
    plane.kubectl()(
        "create",
        "secret",
        "generic",
        READ_TOKEN_SECRET,
        "-n",
        namespace,
        f"--from-literal=token={READ_TOKEN}",
    )


class OperatorProcess:
    """`sandbox-operator run` as a real child process, so tests can SIGKILL and restart it."""

    #: Every one started in this test run, so that a failed test's report shows what each logged.
    started: ClassVar[list[OperatorProcess]] = []
    #: How much of its log a failed test's report shows, from its end.
    REPORT_LINES: ClassVar[int] = 150

    def __init__(
        self, kubeconfig: Path, hub_url: str, log_dir: Path, *, python: str = sys.executable, **env: str
    ) -> None:
        self.kubeconfig = kubeconfig
        self.hub_url = hub_url
        self.log_dir = log_dir
        self.extra_env = env
        #: The interpreter whose `sandbox_operator` runs: this checkout's, or a release's venv.
        self.python = python
        self.proc: subprocess.Popen[bytes] | None = None
        #: Flags of `run` beyond the environment (options that have no environment variable).
        self.args: list[str] = []
        self.starts = 0
        #: Kept across restarts, as a pod keeps its name when its container restarts: a restart
        #: after SIGKILL takes the leader Lease back at once instead of waiting for it to expire.
        self.identity = f"test-{log_dir.name}-{uuid.uuid4().hex[:6]}"
        #: The environment of the current (last) start, e.g. to find its liveness URL.
        self.started_env: dict[str, str] = {}

    def env(self) -> dict[str, str]:
        liveness_port, readiness_port = free_ports(2)
        return {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "HF_ENDPOINT": self.hub_url,
            "SANDBOX_OPERATOR_SANDBOX_URL_TEMPLATE": sandbox_url_template(self.hub_url),
            "HF_TOKEN": OPERATOR_TOKEN,
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "SANDBOX_OPERATOR_DEFAULT_OWNER": OWNER,
            "SANDBOX_OPERATOR_DEFAULT_TEMPLATE": TEMPLATE,
            "SANDBOX_OPERATOR_POLL_INTERVAL": str(POLL_INTERVAL),
            # Sessions read their Spaces from a listing of the owner's Spaces made this often.
            "SANDBOX_OPERATOR_OBSERVE_INTERVAL": "1",
            # A free port each start: kopf takes port 0 for "default" (80), and tests run side by side.
            "SANDBOX_OPERATOR_LIVENESS": f"http://127.0.0.1:{liveness_port}/healthz",
            "SANDBOX_OPERATOR_READINESS": f"http://127.0.0.1:{readiness_port}/readyz",
            "SANDBOX_OPERATOR_IDENTITY": self.identity,
            # Where the Lease (and a read token Secret) are: a namespace every control plane has.
            "SANDBOX_OPERATOR_OPERATOR_NAMESPACE": "default",
            "SANDBOX_OPERATOR_HUB_READ_TOKEN_SECRET": READ_TOKEN_SECRET,
            "SANDBOX_OPERATOR_METRICS_PORT": "0",
            "SANDBOX_OPERATOR_HUB_RATE": "20",
            "SANDBOX_OPERATOR_SWEEP_INTERVAL": "0",
            # Hub failure tests name a template that does not exist and an owner the token may not write.
            "SANDBOX_OPERATOR_ALLOWED_TEMPLATES": "templates/*",
            "SANDBOX_OPERATOR_ALLOWED_OWNERS": "someone-*",
            # Tests install and remove the approval policy; the operator notices within a second.
            "SANDBOX_OPERATOR_APPROVAL_RECHECK_INTERVAL": "1",
            **self.extra_env,
        }

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "operator already running"
        self.starts += 1
        if self not in OperatorProcess.started:
            OperatorProcess.started.append(self)
        log = (self.log_dir / f"operator-{self.starts}.log").open("wb")
        self.started_env = self.env()
        self.proc = subprocess.Popen(
            # Isolated (-I): the current directory and PYTHON* variables never shadow its package.
            [self.python, "-I", "-m", "sandbox_operator", "run", *self.args],
            env=self.started_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()

    def kill(self) -> None:
        """SIGKILL: no cleanup runs, as in a node failure or an OOM kill."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def current_log(self) -> str:
        """The log of the latest start only."""
        return (self.log_dir / f"operator-{self.starts}.log").read_text(errors="replace")

    def log_paths(self) -> list[Path]:
        """The log of every start, oldest first."""
        return sorted(self.log_dir.glob("operator-*.log"))

    def logs(self) -> str:
        return "\n".join(path.read_text(errors="replace") for path in self.log_paths())

    @classmethod
    def log_sizes(cls) -> dict[Path, int]:
        """How long each log of every process started so far is now."""
        return {path: path.stat().st_size for p in cls.started for path in p.log_paths()}

    @classmethod
    def logs_since(cls, sizes: dict[Path, int]) -> Iterator[tuple[str, str]]:
        """(log path, its last REPORT_LINES lines) for what every process logged after `sizes`."""
        for process in cls.started:
            for path in process.log_paths():
                with path.open("rb") as log:
                    log.seek(sizes.get(path, 0))
                    lines = log.read().decode(errors="replace").splitlines()
                if lines:
                    yield str(path), "\n".join(lines[-cls.REPORT_LINES :])


def readiness(process: OperatorProcess) -> tuple[int, dict[str, str]]:
    """What the process's readiness endpoint answers: HTTP status and body."""
    try:
        with urllib.request.urlopen(process.started_env["SANDBOX_OPERATOR_READINESS"], timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
    except OSError as error:  # not listening yet
        return 0, {"error": str(error)}


def scrape_metrics(process: OperatorProcess) -> str:
    """What Prometheus would read from the process's metrics port (SANDBOX_OPERATOR_METRICS_PORT)."""
    port = process.started_env["SANDBOX_OPERATOR_METRICS_PORT"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text: str = response.read().decode()
        return text


_probes = itertools.count()


@contextmanager
def replacing(shared: OperatorProcess, log_dir: Path, **env: str) -> Iterator[OperatorProcess]:
    """An operator with settings of its own (`env`) running in place of the suite's shared one, which
    is back afterwards. A clean stop hands the Lease over at once."""
    shared.stop()
    own = OperatorProcess(shared.kubeconfig, shared.hub_url, log_dir, **env)
    own.start()
    try:
        yield own
    finally:
        own.stop()
        shared.start()


#: The chart's admission policy and its binding, as `helm install` names them.
APPROVAL_POLICY = "sandbox-operator-approval"
#: The chart whose policy each control plane (by API server URL) enforces, as installed here.
_policies_installed: dict[str, Path] = {}


def install_approval_policy(plane: ControlPlane, chart: Path = CHART) -> None:
    """The chart's admission policy and approver roles, exactly as `helm install` renders them, once
    the API server enforces them. Sessions whose approvals the operator should act on need this.
    `chart`: another release's chart (the upgrade test installs the previous release's).

    A fast no-op when this chart's policy is in place already (many tests ask for it)."""
    kubectl = plane.kubectl()
    binding = f"/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings/{APPROVAL_POLICY}"
    if _policies_installed.get(plane.server_url) == chart and api_client(kubectl).get(binding) is not None:
        return
    kubectl("apply", "-f", "-", stdin=_approval_policy_manifests(plane.bin_dir / "helm", chart))
    # A policy takes effect once the API server has loaded it; probe until a spoofed approval is refused.
    probe = f"policy-probe-{uuid.uuid4().hex[:6]}"
    kubectl("apply", "-f", "-", stdin=session_manifest(probe, "default", hardware="t4-small"))

    def enforced() -> bool:
        # A new reason each time: an unchanged approval is not checked, and an early probe may have landed.
        reason = str(next(_probes))
        spoof = {"spec": {"approval": {"hardware": "t4-small", "approvedBy": "x", "reason": reason}}}
        result = kubectl("patch", "ags", probe, "--type=merge", "-p", json.dumps(spoof), check=False)
        return result.returncode != 0 and "approvedBy" in result.stderr

    wait_for(enforced, 30, "the approval policy to be enforced")
    kubectl("delete", "ags", probe, "--wait=false")
    _policies_installed[plane.server_url] = chart


@functools.cache
def _approval_policy_manifests(helm: Path, chart: Path) -> str:
    """The chart's approval policy and approver roles as `helm template` renders them."""
    return subprocess.run(
        [
            str(helm), "template", "sandbox-operator", str(chart),
            "--set", "hub.token=unused", "--set", f"defaultTemplate={TEMPLATE}",
            "--show-only", "templates/approval-policy.yaml", "--show-only", "templates/approver-roles.yaml",
        ],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip


def remove_approval_policy(plane: ControlPlane) -> None:
    """Delete the policy (roles stay), as on a cluster where only the CRD was installed."""
    _policies_installed.pop(plane.server_url, None)
    plane.kubectl()(
        "delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", APPROVAL_POLICY,
        "--ignore-not-found",
    )  # fmt: skip


def readme_block(containing: str, readme: Path = REPO / "README.md") -> list[str]:
    """The commands of the README's fenced shell block that contains `containing`, as written
    (comment-only lines dropped), so tests run what users read."""
    body = fenced(readme, "sh", containing)
    return [line for line in body.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def run_shell(plane: ControlPlane, command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """A shell command line against the control plane as its admin, kubectl on PATH, in the repo root."""
    env = {**os.environ, "KUBECONFIG": str(plane.kubeconfig), "PATH": f"{plane.bin_dir}:{os.environ['PATH']}"}
    result = subprocess.run(
        ["bash", "-c", command], env=env, cwd=REPO, capture_output=True, text=True, check=False, timeout=60
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{command!r} failed ({result.returncode}): {result.stderr}")
    return result


def spaces_of(admin: HubSimAdmin, uid: str) -> list[dict[str, Any]]:
    """The Spaces whose ownership marker names the session with this UID."""
    return [s for s in admin.spaces() if s["variables"].get(MARKER_SESSION_UID) == uid]


def _manifest(kind: str, name: str, namespace: str, spec: dict[str, Any]) -> str:
    return json.dumps(
        {
            "apiVersion": api.API_VERSION,
            "kind": kind,
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }
    )


def session_manifest(name: str, namespace: str, **spec: Any) -> str:
    return _manifest(api.KIND, name, namespace, spec)


def pool_manifest(name: str, namespace: str, **spec: Any) -> str:
    return _manifest(api.POOL_KIND, name, namespace, spec)


def get_session(kubectl: Kubectl, name: str, namespace: str) -> dict[str, Any] | None:
    """The session as `kubectl` may read it, or None: not there, not readable, or no API server."""
    try:
        session: dict[str, Any] | None = api_client(kubectl).get(
            namespaced_path(api.API_VERSION, api.PLURAL, namespace, name)
        )
    except (ApiError, OSError, http.client.HTTPException):
        return None
    return session


def condition(session: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for item in (session or {}).get("status", {}).get("conditions", []):
        if item["type"] == type_:
            return dict(item)
    return None


def wait_ready(kubectl: Kubectl, name: str, namespace: str, timeout: float = 60) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        session = get_session(kubectl, name, namespace)
        ready_condition = condition(session, "Ready")
        return session if ready_condition and ready_condition["status"] == "True" else None

    return wait_for(ready, timeout, f"{namespace}/{name} Ready=True")


def wait_condition_reason(
    kubectl: Kubectl, name: str, namespace: str, type_: str, reason: str, timeout: float = 60
) -> dict[str, Any]:
    def matches() -> dict[str, Any] | None:
        found = condition(get_session(kubectl, name, namespace), type_)
        return found if found and found["reason"] == reason else None

    return wait_for(matches, timeout, f"{namespace}/{name} {type_} reason {reason}")


@contextmanager
def fresh_duplicates_hidden(admin: HubSimAdmin, seconds: float) -> Iterator[None]:
    """The Hub shows a fresh private duplicate only after `seconds` (F32). Its marker too: whether
    the Hub hides a fresh duplicate's variables has no public source (docs/hub-fidelity.md F32), so
    a test that relies on it makes sure it does here."""
    admin.set_delays(transient_errors=seconds)
    admin.add_fault("variables", 404, seconds=seconds)
    try:
        yield
    finally:
        admin.set_delays(transient_errors=0.0)


def listings_failing(admin: HubSimAdmin, seconds: float) -> None:
    """The owner's listings answer 503 for `seconds`. A fresh duplicate is listed at once (F32 hides
    only its own routes): without this, a listing answered in the milliseconds before the kill of
    `wait_duplicate_sent`'s caller would tell the operator, and its status, that the Space exists."""
    admin.add_fault("list_spaces", 503, seconds=seconds)


def wait_duplicate_sent(admin: HubSimAdmin) -> None:
    """Until the Hub has answered a duplicate with 200 (the caller kills the operator right after)."""
    wait_for(
        lambda: any(c["route"] == "duplicate" and c["status"] == 200 for c in admin.calls()),
        30,
        "the duplicate",
        interval=0.02,
    )
