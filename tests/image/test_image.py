"""The operator's image, built from the Dockerfile (hack/image.sh) and run by runc as the chart's
Deployment runs it: its user with no passwd entry, read-only root, a tmpfs /tmp, no capabilities, no
new privileges, its environment and its ServiceAccount token. Against the local control plane (the
chart installed as dev mode installs it) and the Hub emulator, sessions go Ready and are deleted, and
a standby takes the Lease over from a killed leader and finishes the work.

Needs root; it fails, never skips, when buildah or runc cannot be installed or the image cannot build.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack
from typing import Any
from urllib.error import HTTPError
from urllib.parse import urlsplit, urlunsplit
from urllib.request import urlopen

import pytest

from sandbox_testbench import dev
from sandbox_testbench.container import (
    Image,
    RuncContainer,
    build_image,
    default_spec,
    hosts_file,
    mounted_image,
    pod_env,
    runtime_spec,
    service_account_volume,
)
from sandbox_testbench.controlplane import ControlPlane, Kubectl
from sandbox_testbench.controlplane.processes import free_ports
from sandbox_testbench.hubsim import HubSimAdmin, HubSimServer
from tests.support import wait_for
from tests.support.harness import get_session, running_control_plane, session_manifest, spaces_of, wait_ready
from tests.support.helm_chart import container_env

Timed = Callable[[str], AbstractContextManager[None]]

#: Over dev mode's values: sessions read the owner's Spaces from a listing made every 2 s, not 30, so a
#: session is Ready about as soon as its Space runs.
CHART_VALUES = {"observeInterval": 2}
#: Seconds the emulator takes to build a Space, or to switch its hardware.
BUILD_SECONDS = 1.0
#: A pod's start: the image's Python imports the operator on a busy 2-core machine.
START_TIMEOUT = 120.0
#: The chart's Lease lasts 30 s unrenewed; the standby takes it some seconds after that.
TAKEOVER_TIMEOUT = 90.0
#: Asked inside the container: who the API server says the operator's own transport authenticates as.
WHOAMI = """
import asyncio, json
from sandbox_operator.k8s.transport import KubeApi, credentials
async def main():
    api = KubeApi()
    review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    try:
        answer = await api.call("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", review)
    finally:
        await api.close()
    print(json.dumps({"server": credentials().server, "user": answer["status"]["userInfo"]["username"]}))
asyncio.run(main())
"""


@pytest.fixture(scope="module")
def image(timed: Timed) -> Iterator[Image]:
    with timed("build the image (hack/image.sh)"):
        name = build_image()
    with mounted_image(name) as mounted:
        yield mounted


@pytest.fixture(scope="module")
def plane(timed: Timed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with ExitStack() as stack:
        with timed("start the control plane"):
            started = stack.enter_context(running_control_plane(tmp_path_factory.mktemp("plane")))
        yield started


@pytest.fixture(scope="module")
def hub() -> Iterator[HubSimServer]:
    with HubSimServer(dev.hubsim_config(BUILD_SECONDS, BUILD_SECONDS)) as server:
        yield server


@pytest.fixture(scope="module")
def kubectl(plane: ControlPlane) -> Kubectl:
    return plane.kubectl()


@pytest.fixture(scope="module")
def deployment(
    plane: ControlPlane,
    hub: HubSimServer,
    kubectl: Kubectl,
    timed: Timed,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    """The chart installed as dev mode installs it; its Deployment as the API server has it."""
    with timed("install the chart"):
        dev.install_chart(plane, hub.url, tmp_path_factory.mktemp("chart"), CHART_VALUES)
    installed: dict[str, Any] = kubectl.json("get", "deployment", dev.RELEASE, "-n", dev.RELEASE_NAMESPACE)
    return installed


def secret_reader(kubectl: Kubectl, namespace: str) -> Callable[[str, str], str]:
    def read(name: str, key: str) -> str:
        data = kubectl.json("get", "secret", name, "-n", namespace)["data"]
        return base64.b64decode(data[key]).decode()

    return read


#: The probe endpoints the chart passes, by their environment variables (the kubelet's probes' targets).
PROBES = ("SANDBOX_OPERATOR_LIVENESS", "SANDBOX_OPERATOR_READINESS")


def on_free_ports(env: dict[str, str]) -> dict[str, str]:
    """The chart's probe and metrics ports, moved to free ones: the containers share the host's
    network, where two pods' ports would collide."""
    *probes, metrics = free_ports(len(PROBES) + 1)
    moved = {**env, "SANDBOX_OPERATOR_METRICS_PORT": str(metrics)}
    for variable, port in zip(PROBES, probes, strict=True):
        url = urlsplit(env[variable])
        moved[variable] = urlunsplit(url._replace(netloc=f"{url.hostname}:{port}"))
    return moved


@pytest.fixture(scope="module")
def start_pod(
    image: Image,
    plane: ControlPlane,
    kubectl: Kubectl,
    deployment: dict[str, Any],
    started_containers: list[RuncContainer],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[str], RuncContainer]]:
    """Start a container of the Deployment's pod template under a new pod name; all are removed after."""
    root = tmp_path_factory.mktemp("pods")
    base = default_spec(root / "default")
    namespace = deployment["metadata"]["namespace"]
    pod_spec = deployment["spec"]["template"]["spec"]
    (container,) = pod_spec["containers"]
    api = urlsplit(plane.server_url)
    kubelet_env = {"KUBERNETES_SERVICE_HOST": str(api.hostname), "KUBERNETES_SERVICE_PORT": str(api.port)}
    started: list[RuncContainer] = []

    def start(suffix: str) -> RuncContainer:
        pod_name = f"{deployment['metadata']['name']}-{uuid.uuid4().hex[:6]}-{suffix}"
        bundle = root / pod_name
        account = service_account_volume(
            bundle / "serviceaccount",
            token=plane.service_account_token(namespace, pod_spec["serviceAccountName"]),
            ca=plane.serving_ca.read_bytes(),
            namespace=namespace,
            uid=pod_spec["securityContext"]["runAsUser"],
        )
        env = on_free_ports(pod_env(container, pod_name, namespace, secret_reader(kubectl, namespace)))
        spec = runtime_spec(
            base,
            image,
            pod_spec,
            hostname=pod_name,
            env={**kubelet_env, **env},
            service_account=account,
            hosts_file=hosts_file(bundle / "hosts", pod_name),
        )
        pod = RuncContainer(pod_name, bundle)
        pod.start(spec)
        started.append(pod)
        started_containers.append(pod)
        return pod

    yield start
    for pod in started:
        pod.stop()


def lease_holder(kubectl: Kubectl, deployment: dict[str, Any]) -> str:
    """Who holds the Lease the chart's Deployment names ("" before anyone does)."""
    env = container_env(deployment)
    name, namespace = (env[f"SANDBOX_OPERATOR_LEASE_{key}"]["value"] for key in ("NAME", "NAMESPACE"))
    jsonpath = "jsonpath={.spec.holderIdentity}"
    return kubectl("get", "lease", name, "-n", namespace, "-o", jsonpath, check=False).stdout.strip()


def probe(pod: RuncContainer, variable: str) -> tuple[int, str]:
    """What one of the pod's probe endpoints answers, as the kubelet's probe asks it."""
    url = urlsplit(pod.env[variable])
    try:
        with urlopen(f"http://127.0.0.1:{url.port}{url.path}", timeout=5) as response:
            return response.status, response.read().decode()
    except HTTPError as error:
        return error.code, error.read().decode()


def session_round_trip(kubectl: Kubectl, admin: HubSimAdmin, timed: Timed, name: str, namespace: str) -> None:
    """Create -> Ready with its Space on the Hub -> delete -> the session and its Space gone."""
    with timed(f"session {name}: create -> Ready"):
        kubectl("apply", "-f", "-", stdin=session_manifest(name, namespace))
        uid = wait_ready(kubectl, name, namespace, timeout=START_TIMEOUT)["metadata"]["uid"]
    assert len(spaces_of(admin, uid)) == 1
    with timed(f"session {name}: delete -> gone"):
        kubectl("delete", "ags", name, "-n", namespace, "--wait=false")
        wait_for(lambda: get_session(kubectl, name, namespace) is None, 60, f"{name} to be gone")
    assert spaces_of(admin, uid) == []


def test_sessions_go_through_the_image_and_a_standby_takes_over(
    start_pod: Callable[[str], RuncContainer],
    kubectl: Kubectl,
    hub: HubSimServer,
    deployment: dict[str, Any],
    timed: Timed,
) -> None:
    namespace = f"image-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", namespace)
    with timed("two pods started, one holds the Lease"):
        pods = {pod.id: pod for pod in (start_pod("a"), start_pod("b"))}

        def holder() -> str | None:
            name = lease_holder(kubectl, deployment)
            return name if name in pods else None

        leader = pods.pop(wait_for(holder, START_TIMEOUT, "a pod to take the Lease"))
    (standby,) = pods.values()
    wait_for(lambda: "waiting for the leader Lease" in standby.log(), START_TIMEOUT, "the standby to wait")
    status, body = probe(standby, "SANDBOX_OPERATOR_LIVENESS")
    assert status == 200 and "standby" in body
    # Both Ready: the standby so that a rollout proceeds, the leader once its watches caught up.
    wait_for(lambda: probe(leader, "SANDBOX_OPERATOR_READINESS")[0] == 200, START_TIMEOUT, "the leader ready")
    status, body = probe(standby, "SANDBOX_OPERATOR_READINESS")
    assert status == 200 and "standby" in body, body

    # The operator's own transport, from inside: the chart's ServiceAccount token, at the kubelet's address.
    assert leader.running(), leader.log()
    whoami = leader.exec("python3", "-c", WHOAMI)
    assert whoami.returncode == 0, whoami.stderr
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    assert json.loads(whoami.stdout) == {
        "server": f"https://{leader.env['KUBERNETES_SERVICE_HOST']}:{leader.env['KUBERNETES_SERVICE_PORT']}",
        "user": f"system:serviceaccount:{deployment['metadata']['namespace']}:{account}",
    }

    session_round_trip(kubectl, hub.admin, timed, "before-hand-over", namespace)
    assert leader.running() and standby.running()

    with timed("leader killed -> the standby holds the Lease"):
        leader.kill()
        wait_for(
            lambda: lease_holder(kubectl, deployment) == standby.id, TAKEOVER_TIMEOUT, "the standby's Lease"
        )
    session_round_trip(kubectl, hub.admin, timed, "after-hand-over", namespace)
    assert standby.running()
