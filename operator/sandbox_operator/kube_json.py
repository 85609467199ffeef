"""The few Kubernetes calls the operator makes outside custom objects and its Lease, as plain JSON.

The official client (37.x) is generated with pydantic: the first use of `CoreV1Api` imports and
builds the models of some 250 kinds, about 21 MiB for the process's life (the admission and
authorization APIs another 3 MiB). These calls go through the same client's `ApiClient` instead:
its configuration and credentials, one connection pool, `ApiException` for a status outside 2xx.
The methods carry the typed client's names, so what they do (and the RBAC they need) reads the same.
"""

from __future__ import annotations

from functools import cache
from typing import Any
from urllib.parse import quote

from kubernetes import client

ADMISSION = ("apis", "admissionregistration.k8s.io", "v1")


@cache
def _api_client() -> client.ApiClient:
    """The one client (its connection pool) of every call here, made at the first, after the
    configuration is loaded; `ApiClient.get_default()` would make a new one, a new pool, every time."""
    return client.ApiClient()


def _call(api_client: client.ApiClient, method: str, path: str, body: Any = None) -> Any:
    """One API call as JSON in and out (a plain object)."""
    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    request = api_client.param_serialize(
        method=method,
        resource_path=path,
        query_params=[],
        header_params=headers,
        body=body,
        auth_settings=["BearerToken"],
    )
    response = api_client.call_api(*request)
    response.read()
    return api_client.response_deserialize(response, {"2XX": "object"}).data


def _path(*parts: str) -> str:
    return "/" + "/".join(quote(part, safe="") for part in parts)


def _secrets(namespace: str, *name: str) -> str:
    return _path("api", "v1", "namespaces", namespace, "secrets", *name)


class JsonApi:
    """Blocking calls (run them on a thread pool) that answer plain objects, as the API server sends them.
    A client running many calls at once gives its own `ApiClient`, with a connection for each of them."""

    def __init__(self, api_client: client.ApiClient | None = None) -> None:
        self._client = api_client or _api_client()

    def read_namespaced_secret(self, name: str, namespace: str) -> Any:
        return _call(self._client, "GET", _secrets(namespace, name))

    def create_namespaced_secret(self, namespace: str, body: Any) -> Any:
        return _call(self._client, "POST", _secrets(namespace), body)

    def replace_namespaced_secret(self, name: str, namespace: str, body: Any) -> Any:
        return _call(self._client, "PUT", _secrets(namespace, name), body)

    def create_namespaced_event(self, namespace: str, body: Any) -> Any:
        return _call(self._client, "POST", _path("api", "v1", "namespaces", namespace, "events"), body)

    def read_namespace(self, name: str) -> Any:
        return _call(self._client, "GET", _path("api", "v1", "namespaces", name))

    def read_validating_admission_policy(self, name: str) -> Any:
        return _call(self._client, "GET", _path(*ADMISSION, "validatingadmissionpolicies", name))

    def list_validating_admission_policy_binding(self) -> Any:
        return _call(self._client, "GET", _path(*ADMISSION, "validatingadmissionpolicybindings"))

    def create_subject_access_review(self, body: Any) -> Any:
        return _call(
            self._client, "POST", _path("apis", "authorization.k8s.io", "v1", "subjectaccessreviews"), body
        )
