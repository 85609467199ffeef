"""The connection Secret's writes: the intent's values wait in the process and the Secret is written
once, whole, with its URL; anything else (or a refusal) reads it and checks whose it is."""

from __future__ import annotations

import asyncio
import base64
from typing import Any, cast

import pytest

from sandbox_operator import api
from sandbox_operator.k8s.client import MANAGED_BY, ConnectionSecretConflict, KubeClient
from sandbox_operator.k8s.transport import ApiError, KubeApi

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


def _read(kube: KubeClient) -> dict[str, str] | None:
    return asyncio.run(kube.read_connection("team-a", "demo-sandbox", OWNER["uid"], session=OWNER["name"]))


def test_the_intents_secret_is_written_once_whole_when_its_url_is_known(kube_and_secrets: Any) -> None:
    kube, secrets = kube_and_secrets
    _write(kube, {"token": "t1", "sandboxUrl": ""}, defer=True)
    assert secrets.calls == []  # kept, not written
    assert _read(kube) == {"token": "t1", "sandboxUrl": ""} and secrets.calls == []
    _write(kube, {"sandboxUrl": "https://x.hf.space"}, exists=True)
    assert secrets.calls == ["POST"]
    stored = secrets.stored["demo-sandbox"]
    assert stored["data"] == {"token": "t1", "sandboxUrl": "https://x.hf.space"}
    assert MANAGED_BY.items() <= stored["metadata"]["labels"].items()
    # Written now: later writes and reads go to the API server.
    _write(kube, {"token": "t2"}, exists=True)
    assert secrets.calls == ["POST", "GET", "PUT"]
    assert secrets.stored["demo-sandbox"]["data"]["token"] == "t2"


def test_someone_elses_secret_of_that_name_made_meanwhile_is_never_written(kube_and_secrets: Any) -> None:
    kube, secrets = kube_and_secrets
    _write(kube, {"token": "t1"}, defer=True)
    secrets.replaced_by_someone_else("demo-sandbox", owner_uid="someone-else")
    with pytest.raises(ConnectionSecretConflict):
        _write(kube, {"sandboxUrl": "https://x.hf.space"}, exists=True)
    assert secrets.calls == ["POST", "GET"]  # the create was refused; never written after
    assert secrets.stored["demo-sandbox"]["data"] == {"k": "v"}


def test_nothing_is_kept_unless_deferred_nor_after_the_loop_forgets(kube_and_secrets: Any) -> None:
    kube, secrets = kube_and_secrets
    _write(kube, {"token": "t1"})
    _write(kube, {"sandboxUrl": "u"}, exists=True)
    assert secrets.calls == ["POST", "GET", "PUT"]
    secrets.stored.clear()
    secrets.calls.clear()
    _write(kube, {"token": "t1"}, defer=True)
    kube.forget(OWNER["uid"])
    assert _read(kube) is None  # lost with the loop: the core issues a new token
    assert secrets.calls == ["GET"]
