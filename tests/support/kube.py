"""Reads and waits on the control plane that more than one test module needs.

Tests poll what they wait for every tenth of a second; `ApiClient` does those reads in this process
over one kept-alive connection, where a `kubectl get` would start a process and redo discovery
each time (on two shared cores, hundreds of them slowed the whole suite).
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import tempfile
import threading
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import yaml

from sandbox_testbench.controlplane import Kubectl

from .polling import wait_for


class ApiError(RuntimeError):
    """The API server answered a GET with neither 200 nor 404."""


class ApiClient:
    """Requests as the identity of one kubeconfig (client certificate or bearer token)."""

    def __init__(self, kubeconfig: bytes) -> None:
        config = yaml.safe_load(kubeconfig)
        cluster = config["clusters"][0]["cluster"]
        user = config["users"][0]["user"]
        context = ssl.create_default_context(
            cadata=base64.b64decode(cluster["certificate-authority-data"]).decode()
        )
        self._headers = {"Accept": "application/json"}
        if "token" in user:
            self._headers["Authorization"] = f"Bearer {user['token']}"
        else:
            _load_client_certificate(
                context,
                base64.b64decode(user["client-certificate-data"]),
                base64.b64decode(user["client-key-data"]),
            )
        self._netloc, self._context = urlsplit(cluster["server"]).netloc, context
        self._connection = http.client.HTTPSConnection(self._netloc, context=context, timeout=30)
        self._lock = threading.Lock()

    def get(self, path: str, **query: str) -> Any:
        """The decoded object (or list) at `path`, or None when it does not exist (404)."""
        url = f"{path}?{urlencode(query)}" if query else path
        status, body = self._request("GET", url)
        if status == 404:
            return None
        if status != 200:
            raise ApiError(f"GET {url}: {status} {body[:300]!r}")
        return json.loads(body)

    def create(self, path: str, manifest: dict[str, Any]) -> None:
        """POST `manifest` to the collection at `path`."""
        status, body = self._request("POST", path, json.dumps(manifest).encode())
        if status != 201:
            raise ApiError(f"POST {path}: {status} {body[:300]!r}")

    def delete(self, path: str) -> None:
        """DELETE the object at `path` if it is there, without waiting for it to go (--wait=false)."""
        status, body = self._request("DELETE", path)
        if status not in (200, 202, 404):
            raise ApiError(f"DELETE {path}: {status} {body[:300]!r}")

    def versions(self, collection: str, name: str, since: str, seconds: int = 1) -> list[dict[str, Any]]:
        """Every version of the object `name` in `collection` written after resourceVersion `since`,
        in order, as a watch from `since` replays them. Polling sees only the versions that last
        until its next read; a test asserting what was ever written reads them here. On a
        connection of its own, since the watch holds it for `seconds`."""
        query = urlencode({"watch": "1", "resourceVersion": since, "timeoutSeconds": str(seconds),
                           "fieldSelector": f"metadata.name={name}"})  # fmt: skip
        connection = http.client.HTTPSConnection(self._netloc, context=self._context, timeout=seconds + 30)
        try:
            connection.request("GET", f"{collection}?{query}", headers=self._headers)
            response = connection.getresponse()
            body = response.read()
        finally:
            connection.close()
        if response.status != 200:
            raise ApiError(f"watch {collection}/{name}: {response.status} {body[:300]!r}")
        events = [json.loads(line) for line in body.splitlines() if line.strip()]
        if any(event["type"] == "ERROR" for event in events):
            raise ApiError(f"watch {collection}/{name} from {since}: {events[-1]['object']}")
        return [event["object"] for event in events]

    def _request(self, method: str, url: str, body: bytes | None = None) -> tuple[int, bytes]:
        with self._lock:
            try:
                return self._send(method, url, body)
            except (http.client.HTTPException, OSError):
                self._connection.close()  # the server closed an idle connection: once more, on a new one
                return self._send(method, url, body)

    def _send(self, method: str, url: str, body: bytes | None) -> tuple[int, bytes]:
        headers = {**self._headers, "Content-Type": "application/json"} if body else self._headers
        self._connection.request(method, url, body=body, headers=headers)
        response = self._connection.getresponse()
        return response.status, response.read()


def _load_client_certificate(context: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    """`ssl` loads a certificate only from files: written to a private directory, gone once loaded."""
    with tempfile.TemporaryDirectory() as directory:
        cert, key = Path(directory, "client.crt"), Path(directory, "client.key")
        cert.write_bytes(cert_pem)
        key.touch(mode=0o600)
        key.write_bytes(key_pem)
        context.load_cert_chain(cert, key)


_clients: dict[bytes, ApiClient] = {}
_clients_lock = threading.Lock()


def api_client(kubectl: Kubectl) -> ApiClient:
    """The client for the identity and cluster `kubectl` uses: one per kubeconfig content, so a
    control plane started again at the same path (new certificates, new port) gets a new one."""
    content = kubectl.kubeconfig.read_bytes()
    with _clients_lock:
        if content not in _clients:
            _clients[content] = ApiClient(content)
        return _clients[content]


def namespaced_path(api_version: str, plural: str, namespace: str, name: str = "") -> str:
    """The REST path of a namespaced resource (`v1` is the core group), or of one object of it."""
    prefix = "/api" if api_version == "v1" else "/apis"
    path = f"{prefix}/{api_version}/namespaces/{namespace}/{plural}"
    return f"{path}/{name}" if name else path


def events_of(kubectl: Kubectl, name: str, namespace: str) -> list[dict[str, Any]]:
    """The Events about the object called `name` in `namespace`."""
    found = api_client(kubectl).get(
        namespaced_path("v1", "events", namespace), fieldSelector=f"involvedObject.name={name}"
    )
    return list(found["items"])


def event_time(event: dict[str, Any]) -> datetime:
    """When an Event last happened: `lastTimestamp`, else `eventTime` (an events.k8s.io one), else
    `firstTimestamp`, else when it was created. Whole seconds but for `eventTime`."""
    value = (
        event.get("lastTimestamp")
        or event.get("eventTime")
        or event.get("firstTimestamp")
        or event["metadata"]["creationTimestamp"]
    )
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def wait_for_events(
    kubectl: Kubectl, name: str, namespace: str, *reasons: str, timeout: float = 30.0
) -> dict[str, dict[str, Any]]:
    """Wait until Events with every one of `reasons` are about `name`; return one Event of each reason.

    The operator posts Events after the status write they go with (kopf's event queue), so a test that
    has seen a condition waits for its Event rather than reading once.
    """

    def found() -> dict[str, dict[str, Any]] | None:
        latest = {event["reason"]: event for event in events_of(kubectl, name, namespace)}
        return latest if set(reasons) <= latest.keys() else None

    return wait_for(found, timeout, f"Events {', '.join(reasons)} about {namespace}/{name}")


def wait_for_service_account(kubectl: Kubectl, namespace: str, name: str, timeout: float = 30.0) -> None:
    """The ServiceAccount exists (a fresh namespace's `default` comes from a controller, later)."""
    path = namespaced_path("v1", "serviceaccounts", namespace, name)
    wait_for(lambda: api_client(kubectl).get(path) is not None, timeout, f"ServiceAccount {namespace}/{name}")
