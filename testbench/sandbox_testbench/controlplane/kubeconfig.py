"""Self-contained kubeconfig files (all certificates inlined), so they stay valid wherever copied."""

from __future__ import annotations

import base64
from pathlib import Path

import yaml

from .certs import write_private

CLUSTER = "sandbox-operator-local"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def write_kubeconfig(
    path: Path, *, server: str, ca_pem: bytes, user: str, credentials: dict[str, str]
) -> Path:
    """Write a one-cluster, one-user kubeconfig; `credentials` is the kubeconfig `user` stanza."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": CLUSTER, "cluster": {"server": server, "certificate-authority-data": _b64(ca_pem)}}
        ],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": CLUSTER, "context": {"cluster": CLUSTER, "user": user}}],
        "current-context": CLUSTER,
        "preferences": {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, yaml.safe_dump(config, sort_keys=False).encode())
    return path


def cert_credentials(cert_pem: bytes, key_pem: bytes) -> dict[str, str]:
    return {"client-certificate-data": _b64(cert_pem), "client-key-data": _b64(key_pem)}
