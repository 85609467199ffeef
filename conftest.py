"""Set-up for every test directory (tests/ and the test bench's own tests): the Hub client reset, and
the local control plane (real kube-apiserver, etcd, controller manager) the integration tests and the
control plane's own tests share. A missing binary or a failed start fails those tests instead of
skipping them: a skipped integration suite would look green while testing nothing."""

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"  # before huggingface_hub is imported

from huggingface_hub import set_client_factory
from huggingface_hub.utils._http import default_client_factory

from sandbox_testbench.controlplane import ControlPlane, Kubectl
from tests.support.harness import running_control_plane
from tests.support.kube import api_client, wait_for_service_account


@pytest.fixture(autouse=True)
def _default_hub_client() -> Iterator[None]:
    """The operator's Hub client installs its gate in huggingface_hub's process-wide client; the next
    test starts from the default whatever this one built (parallel workers run files in any order)."""
    yield
    set_client_factory(default_client_factory)


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """One control plane per session: starting one takes seconds, tests isolate by namespace."""
    with running_control_plane(tmp_path_factory.mktemp("control-plane")) as plane:
        yield plane


@pytest.fixture(scope="session")
def kubeconfig(control_plane: ControlPlane) -> Path:
    """The admin (system:masters) kubeconfig."""
    return control_plane.kubeconfig


@pytest.fixture(scope="session")
def kubectl(control_plane: ControlPlane) -> Kubectl:
    """kubectl as the admin; `kubectl("get", "ns")` returns the CompletedProcess."""
    return control_plane.kubectl()


@pytest.fixture
def namespace(kubectl: Kubectl) -> Iterator[str]:
    """A fresh namespace, yielded once its `default` ServiceAccount exists (pods need it)."""
    name = f"test-{uuid.uuid4().hex[:10]}"
    api = api_client(kubectl)
    api.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    wait_for_service_account(kubectl, name, "default")
    yield name
    api.delete(f"/api/v1/namespaces/{name}")
