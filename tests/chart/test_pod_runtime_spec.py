"""What the image test (tests/image) runs: the chart's rendered pod, turned into runc's spec as a kubelet
would run it. Checked here, without root, so that the image test cannot drift from the chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sandbox_testbench.container import (
    SERVICE_ACCOUNT_MOUNT,
    ContainerError,
    Image,
    pod_env,
    quantity,
    runtime_spec,
)
from tests.support.helm_chart import REQUIRED_VALUES, Helm, merged, one

#: The Dockerfile's runtime configuration, as buildah reports it.
IMAGE = Image(
    rootfs=Path("/image/rootfs"),
    config={
        "User": "65532:65532",
        "Env": ["PATH=/usr/local/bin:/usr/bin", "HOME=/tmp", "HF_HOME=/tmp/hf-home"],
        "Entrypoint": ["sandbox-operator", "run"],
        "WorkingDir": "/tmp",
    },
)
#: The parts of `runc spec` that runtime_spec reads.
BASE: dict[str, Any] = {
    "ociVersion": "1.0.2-dev",
    "process": {"capabilities": {"bounding": ["CAP_KILL", "CAP_NET_BIND_SERVICE"]}, "rlimits": []},
    "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
    "linux": {"namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "mount"}], "resources": {}},
}


def pod_spec(helm: Helm, values: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = one(helm.render(values), "Deployment")["spec"]["template"]["spec"]
    return spec


def spec_for(pod: dict[str, Any], env: dict[str, str] | None = None) -> dict[str, Any]:
    return runtime_spec(
        BASE,
        IMAGE,
        pod,
        hostname="sandbox-operator-abc-x",
        env=env or {},
        service_account=Path("/state/sa"),
        hosts_file=Path("/state/hosts"),
    )


def test_the_pod_runs_as_the_chart_confines_it(helm: Helm) -> None:
    spec = spec_for(pod_spec(helm, REQUIRED_VALUES))
    process = spec["process"]
    assert process["user"] == {"uid": 65532, "gid": 65532, "additionalGids": [65532]}
    assert process["capabilities"] == {"bounding": [], "effective": [], "permitted": []}
    assert process["noNewPrivileges"] is True
    assert spec["root"] == {"path": "/image/rootfs", "readonly": True}
    assert spec["hostname"] == "sandbox-operator-abc-x"
    assert {"type": "network"} not in spec["linux"]["namespaces"]
    assert spec["linux"]["resources"]["memory"] == {"limit": 512 * 2**20}
    mounts = {mount["destination"]: mount for mount in spec["mounts"]}
    assert mounts["/tmp"]["type"] == "tmpfs" and f"size={64 * 2**20}" in mounts["/tmp"]["options"]
    assert mounts[SERVICE_ACCOUNT_MOUNT]["source"] == "/state/sa"
    assert "ro" in mounts[SERVICE_ACCOUNT_MOUNT]["options"]


@pytest.mark.parametrize(
    ("values", "args"),
    [
        (REQUIRED_VALUES, ["sandbox-operator", "run"]),
        (
            merged(REQUIRED_VALUES, {"leaderElection": {"enabled": False}}),
            ["sandbox-operator", "run", "--lease-name="],
        ),
    ],
)
def test_the_pod_runs_the_images_entrypoint_with_the_charts_args(
    helm: Helm, values: dict[str, Any], args: list[str]
) -> None:
    assert spec_for(pod_spec(helm, values))["process"]["args"] == args


def test_the_environment_is_the_images_under_the_charts(helm: Helm) -> None:
    pod = pod_spec(helm, REQUIRED_VALUES)
    secrets = {("so-sandbox-operator-hub", "token"): "hf_x"}
    env = pod_env(pod["containers"][0], "sandbox-operator-abc-x", "ops", lambda *key: secrets[key])
    assert env["SANDBOX_OPERATOR_IDENTITY"] == "sandbox-operator-abc-x"  # the downward API
    assert env["HF_TOKEN"] == "hf_x"
    process_env = dict(item.split("=", 1) for item in spec_for(pod, env)["process"]["env"])
    assert process_env["HOME"] == "/tmp"  # the image's
    assert process_env["SANDBOX_OPERATOR_OPERATOR_NAMESPACE"] == "sandbox-operator"  # the chart's


def test_what_is_not_emulated_is_an_error(helm: Helm) -> None:
    pod = pod_spec(helm, REQUIRED_VALUES)
    pod["volumes"] = [{"name": "tmp", "hostPath": {"path": "/tmp"}}]
    with pytest.raises(ContainerError, match="only emptyDir"):
        spec_for(pod)


@pytest.mark.parametrize(("text", "value"), [("512Mi", 512 * 2**20), ("1", 1.0), ("500m", 0.5), ("1G", 1e9)])
def test_quantities(text: str, value: float) -> None:
    assert quantity(text) == value
