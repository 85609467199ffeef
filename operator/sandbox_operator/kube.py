"""Kubernetes API calls the operator makes besides kopf's own: Secrets and the intent status write.

The official client is synchronous, so calls run on a small thread pool. kopf handles the
watch, the finalizer and the end-of-handler status patch itself.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from . import api
from .api import SpaceSecretSource

T = TypeVar("T")

# Keys of the connection Secret, a stable interface for agent pods.
KEY_SPACE_ID = "spaceId"
KEY_SANDBOX_URL = "sandboxUrl"
KEY_TOKEN = "token"


def load_client_config() -> None:
    """In-cluster credentials when running in a pod, else the kubeconfig (KUBECONFIG or ~/.kube/config)."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()


class SecretValueError(ValueError):
    """A Secret value the operator must read is not UTF-8 text."""


def _decoded(secret: Any) -> dict[str, str] | None:
    if secret is None:
        return None
    values = {}
    for key, value in (secret.data or {}).items():
        try:
            values[key] = base64.b64decode(value).decode()
        except UnicodeDecodeError:
            meta = secret.metadata
            raise SecretValueError(
                f"Secret {meta.namespace}/{meta.name} key {key!r} is not UTF-8 text; fix or replace it"
            ) from None
    return values


class KubeClient:
    def __init__(self, workers: int = 4) -> None:
        self._core = client.CoreV1Api()
        self._custom = client.CustomObjectsApi()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kube")

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    async def _read(self, namespace: str, name: str) -> Any:
        try:
            return await self._run(lambda: self._core.read_namespaced_secret(name, namespace))
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    async def read_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        """A Secret's decoded data, or None if it does not exist."""
        return _decoded(await self._read(namespace, name))

    async def read_connection(self, namespace: str, name: str, owner_uid: str) -> dict[str, str] | None:
        """The connection Secret's data if it belongs to this session; a stale one of a deleted
        session with the same name (not yet garbage-collected) counts as absent."""
        secret = await self._read(namespace, name)
        owners = (secret.metadata.owner_references or []) if secret is not None else []
        if not any(ref.uid == owner_uid for ref in owners):
            return None
        return _decoded(secret)

    async def write_connection(
        self, *, namespace: str, name: str, owner: dict[str, str], values: dict[str, str]
    ) -> None:
        """Create or update the connection Secret, owned by the session so it goes with it.

        `values` are merged into what the session's Secret holds. A stale Secret of a deleted
        session with the same name is taken over whole: replaced, not merged, so neither its
        token nor its owner reference survives.
        """
        body: Any = {  # a plain dict: the client accepts it where it declares V1Secret
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {
                    "app.kubernetes.io/managed-by": "sandbox-operator",
                    f"{api.GROUP}/session": owner["name"],
                },
                "ownerReferences": [
                    {
                        "apiVersion": api.API_VERSION,
                        "kind": api.KIND,
                        "name": owner["name"],
                        "uid": owner["uid"],
                        "controller": True,
                    }
                ],
            },
            "stringData": values,
        }
        try:
            await self._run(lambda: self._core.create_namespaced_secret(namespace, body))
            return
        except ApiException as error:
            if error.status != 409:
                raise
        existing = await self._read(namespace, name)
        owned = any(ref.uid == owner["uid"] for ref in existing.metadata.owner_references or [])
        kept = (_decoded(existing) or {}) if owned else {}
        body["stringData"] = {**kept, **values}
        body["metadata"]["resourceVersion"] = existing.metadata.resource_version
        await self._run(lambda: self._core.replace_namespaced_secret(name, namespace, body))

    async def resolve_secrets(
        self, namespace: str, sources: list[SpaceSecretSource]
    ) -> tuple[dict[str, str], str | None]:
        """Values for `spec.secrets`, or a message naming the first reference that does not resolve."""
        values: dict[str, str] = {}
        for source in sources:
            ref = source.secret_key_ref
            data = await self.read_secret(namespace, ref.name)
            if data is None:
                return {}, f"spec.secrets[{source.name}]: Secret {namespace}/{ref.name} does not exist"
            if ref.key not in data:
                return (
                    {},
                    f"spec.secrets[{source.name}]: Secret {namespace}/{ref.name} has no key {ref.key!r}",
                )
            values[source.name] = data[ref.key]
        return values, None

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        """Write status now (not at the end of the handler): used to record intent before a Hub call.

        Returns the object as written, e.g. to see whether it was marked for deletion meanwhile.
        """
        written: Any = await self._run(
            lambda: self._custom.patch_namespaced_custom_object_status(
                api.GROUP, api.VERSION, namespace, api.PLURAL, name, {"status": status}
            )
        )
        return dict(written)

    async def list_sessions(self, namespaces: list[str]) -> list[dict[str, Any]]:
        """AgentSessions in `namespaces` (all namespaces if empty), as plain objects."""
        if not namespaces:
            found: Any = await self._run(
                lambda: self._custom.list_cluster_custom_object(api.GROUP, api.VERSION, api.PLURAL)
            )
            return list(found["items"])
        sessions: list[dict[str, Any]] = []
        for namespace in namespaces:
            found = await self._run(
                partial(
                    self._custom.list_namespaced_custom_object, api.GROUP, api.VERSION, namespace, api.PLURAL
                )
            )
            sessions += found["items"]
        return sessions

    async def post_event(self, *, involved: dict[str, str], type_: str, reason: str, message: str) -> None:
        """A core/v1 Event about `involved` (apiVersion, kind, namespace, name, uid), which may be gone:
        used where no kopf handler runs, e.g. for a Space whose session no longer exists."""
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        namespace = involved["namespace"]
        body: Any = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{involved['name']}.", "namespace": namespace},
            "involvedObject": involved,
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "source": {"component": "sandbox-operator"},
            "reportingComponent": "sandbox-operator",
        }
        await self._run(lambda: self._core.create_namespaced_event(namespace, body))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
