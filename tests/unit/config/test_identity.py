"""The operator's identity (leader Lease and kopf) and its API server address in a pod, where the image
runs as a numeric user with no passwd entry and no cluster DNS need resolve kubernetes.default.svc."""

from __future__ import annotations

import getpass
import os
import pwd
import socket
from pathlib import Path
from typing import Any, NoReturn

import kopf
import pytest
from kopf._core.engines.peering import detect_own_id

from sandbox_operator import runtime
from sandbox_operator.config.settings import OperatorConfig, RunSettings
from sandbox_operator.k8s.transport import credentials, in_cluster_server
from sandbox_operator.registry import build_registry
from sandbox_operator.startup import lease_settings, own_identity

CONFIG = OperatorConfig(default_owner="agents", default_template="templates/agent-sandbox", cluster_id="c1")


@pytest.fixture
def no_passwd_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in the image: UID 65532 is in no passwd database, and no LOGNAME/USER says who it is."""

    def unknown(*_: Any) -> NoReturn:
        raise KeyError("getpwuid(): uid not found: 65532")

    monkeypatch.setattr(pwd, "getpwuid", unknown)
    for name in ("LOGNAME", "USER", "LNAME", "USERNAME", "POD_ID"):
        monkeypatch.delenv(name, raising=False)


def test_kopf_left_to_itself_needs_a_passwd_entry(no_passwd_entry: None) -> None:
    """The fault the image met on taking the Lease, reproduced here, so the tests below mean something."""
    with pytest.raises(KeyError, match="uid not found"):
        getpass.getuser()
    with pytest.raises(KeyError, match="uid not found"):
        detect_own_id(manual=False)


def test_identity_is_the_pod_name_else_hostname_and_pid(no_passwd_entry: None) -> None:
    pod = "sandbox-operator-7d9f-x2k4q"
    assert own_identity(RunSettings(identity=pod)) == pod
    assert own_identity(RunSettings()) == f"{socket.gethostname()}-{os.getpid()}"
    lease = lease_settings(RunSettings(identity="pod-a", lease_namespace="ops"), CONFIG)
    assert lease is not None and lease.identity == "pod-a"


@pytest.mark.parametrize("lease_name", ["sandbox-operator-leader", ""])
def test_kopf_is_given_the_identity(
    no_passwd_entry: None, monkeypatch: pytest.MonkeyPatch, lease_name: str
) -> None:
    """With leader election on or off, kopf never has to find an identity of its own."""
    given: dict[str, Any] = {}

    async def operator(**kwargs: Any) -> None:
        given.update(kwargs)

    monkeypatch.setattr(kopf, "configure", lambda **_: None)
    monkeypatch.setattr(kopf, "operator", operator)
    monkeypatch.setattr(runtime, "resolve_config", lambda config: config)
    monkeypatch.setattr(runtime, "run_as_leader", lambda elector, gate, main, *_: main)
    settings = RunSettings(lease_name=lease_name, identity="pod-a", metrics_port=0, liveness="")
    runtime.run_operator(CONFIG, settings, build_registry)
    assert given["identity"] == "pod-a"


@pytest.mark.parametrize(
    ("host", "port", "server"),
    [
        ("10.96.0.1", "443", "https://10.96.0.1:443"),
        ("fd00:10:96::1", "443", "https://[fd00:10:96::1]:443"),
        ("", "443", None),
        ("10.96.0.1", "", None),
    ],
)
def test_in_cluster_server_is_where_the_kubelet_says(
    monkeypatch: pytest.MonkeyPatch, host: str, port: str, server: str | None
) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", host)
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", port)
    assert in_cluster_server() == server


def test_the_service_account_login_goes_to_the_kubelets_address(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """kopf's own login names kubernetes.default.svc; the operator's transport (and kopf's, through its
    login handler) uses the address the kubelet gives, and keeps the token, CA and namespace."""
    account = kopf.ConnectionInfo(
        server="https://kubernetes.default.svc",
        ca_path=str(tmp_path / "ca.crt"),
        token="sa-token",
        default_namespace="sandbox-operator",
    )
    monkeypatch.setattr(kopf, "login_with_service_account", lambda **_: account)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")
    info = credentials()
    assert info.server == "https://127.0.0.1:6443"
    assert (info.token, info.ca_path, info.default_namespace) == (
        "sa-token",
        account.ca_path,
        "sandbox-operator",
    )
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    assert credentials().server == "https://kubernetes.default.svc"
