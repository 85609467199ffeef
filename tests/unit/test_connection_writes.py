"""The connection Secret's writes: the intent's Secret is updated at the version this process
created, without reading it first; anything else (or a refusal) reads it and checks whose it is."""

from __future__ import annotations

import asyncio
import base64
from typing import Any, cast

import pytest

from sandbox_operator import api
from sandbox_operator.kube import MANAGED_BY, ConnectionSecretConflict, KubeClient
from sandbox_operator.kube_json import ApiError, KubeApi

OWNER = {"name": "demo", "uid": "uid-1"}


class RecordingSecrets:
    """Secrets of one namespace as the API server keeps them: versions, and 409 on a stale replace."""

    def __init__(self) -> None:
        self.stored: dict[str, dict[str, Any]] = {}
        self.calls: list[str] = []
        self._version = 0

    def _store(self, body: dict[str, Any]) -> dict[str, Any]:
        self._version += 1
        data = dict(body.get("stringData") or {})
        secret = {"metadata": {**body["metadata"], "resourceVersion": str(self._version)}, "data": data}
        self.stored[body["metadata"]["name"]] = secret
        return secret

    async def create_namespaced_secret(self, namespace: str, body: dict[str, Any]) -> Any:
        self.calls.append("POST")
        if body["metadata"]["name"] in self.stored:
            raise ApiError(409, "AlreadyExists")
        return self._store(body)

    async def read_namespaced_secret(self, name: str, namespace: str) -> Any:
        self.calls.append("GET")
        if name not in self.stored:
            raise ApiError(404, "NotFound")
        secret = self.stored[name]
        encoded = {k: base64.b64encode(v.encode()).decode() for k, v in secret["data"].items()}
        return {"metadata": secret["metadata"], "data": encoded}

    async def replace_namespaced_secret(self, name: str, namespace: str, body: dict[str, Any]) -> Any:
        self.calls.append("PUT")
        if name not in self.stored:
            raise ApiError(404, "NotFound")
        if body["metadata"].get("resourceVersion") != self.stored[name]["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict")
        return self._store(body)

    def replaced_by_someone_else(self, name: str, owner_uid: str) -> None:
        """Another writer replaces the Secret (a new version; its owner as given)."""
        reference = {"apiVersion": api.API_VERSION, "kind": "Other", "name": "x", "uid": owner_uid}
        self._store({"metadata": {"name": name, "ownerReferences": [reference]}, "stringData": {"k": "v"}})


def _write(kube: KubeClient, values: dict[str, str], **kwargs: Any) -> None:
    asyncio.run(
        kube.write_connection(namespace="team-a", name="demo-sandbox", owner=OWNER, values=values, **kwargs)
    )


@pytest.fixture
def kube_and_secrets() -> Any:
    secrets = RecordingSecrets()
    yield KubeClient(kube_api=cast(KubeApi, secrets)), secrets


def test_the_intents_secret_is_published_without_a_read(kube_and_secrets: Any) -> None:
    kube, secrets = kube_and_secrets
    _write(kube, {"token": "t1", "sandboxUrl": ""}, update_follows=True)
    _write(kube, {"sandboxUrl": "https://x.hf.space"}, exists=True)
    assert secrets.calls == ["POST", "PUT"]
    stored = secrets.stored["demo-sandbox"]
    assert stored["data"] == {"token": "t1", "sandboxUrl": "https://x.hf.space"}
    assert MANAGED_BY.items() <= stored["metadata"]["labels"].items()
    # Only the first update goes without a read: the version is not kept after it.
    _write(kube, {"token": "t2"}, exists=True)
    assert secrets.calls == ["POST", "PUT", "GET", "PUT"]
    assert secrets.stored["demo-sandbox"]["data"]["token"] == "t2"


def test_a_secret_changed_since_it_was_created_is_read_and_checked_before_it_is_written(
    kube_and_secrets: Any,
) -> None:
    kube, secrets = kube_and_secrets
    _write(kube, {"token": "t1"}, update_follows=True)
    secrets.replaced_by_someone_else("demo-sandbox", owner_uid="someone-else")
    with pytest.raises(ConnectionSecretConflict):
        _write(kube, {"sandboxUrl": "https://x.hf.space"}, exists=True)
    assert secrets.calls == ["POST", "PUT", "GET"]  # the stale version was refused; never written after
    assert secrets.stored["demo-sandbox"]["data"] == {"k": "v"}


def test_nothing_is_kept_unless_an_update_follows_or_after_the_loop_forgets(kube_and_secrets: Any) -> None:
    kube, secrets = kube_and_secrets
    _write(kube, {"token": "t1"})
    _write(kube, {"sandboxUrl": "u"}, exists=True)
    assert secrets.calls == ["POST", "GET", "PUT"]
    secrets.stored.clear()
    secrets.calls.clear()
    _write(kube, {"token": "t1"}, update_follows=True)
    kube.forget(OWNER["uid"])
    _write(kube, {"sandboxUrl": "u"}, exists=True)
    assert secrets.calls == ["POST", "GET", "PUT"]
