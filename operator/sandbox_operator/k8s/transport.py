"""The operator's own Kubernetes calls (custom objects, Secrets, Events, the Lease, the approval policy,
SubjectAccessReviews, a namespace) as async JSON over aiohttp, which kopf already brings.

Not the official client: importing it runs its package `__init__` (config, dynamic, watch, stream,
requests, oauthlib, yaml...), 25 MiB for the process's life, and its calls are blocking, so they
ran on a small thread pool. Credentials come from where kopf takes its own (`credentials`), one session
per `KubeApi` with a bounded connection pool and timeouts, and `ApiError` for a status outside 2xx.
The methods carry the typed client's names, so what they do (and the RBAC they need) reads the same.
Every call says who makes it (USER_AGENT), and every write names its field manager (COMPONENT), so
`metadata.managedFields` and the API server's audit log name the operator, not the HTTP library.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any
from urllib.parse import quote

import aiohttp
import kopf

from sandbox_operator import __version__
from sandbox_operator.fairness import FairLimiter

#: The operator's name to the API server, defined once: the field manager of every write (its own
#: calls name it; kopf's get it from USER_AGENT, whose product the API server takes as the manager
#: when a write names none) and the component its Events are reported from.
COMPONENT = "sandbox-operator"
#: The User-Agent of every call the operator makes, kopf's included (registry.bounded_session).
USER_AGENT = f"{COMPONENT}/{__version__}"
#: The methods that write, and so name their field manager.
WRITES = frozenset({"POST", "PUT", "PATCH"})
ADMISSION = ("apis", "admissionregistration.k8s.io", "v1")
LEASES = ("apis", "coordination.k8s.io", "v1")
#: Seconds one call may take, connection included (kopf's own request timeout is the same).
REQUEST_TIMEOUT = 60.0
#: Connections one `KubeApi` keeps open at most unless told otherwise (the session loops' client is
#: sized by `--kube-connections`); more calls at once wait for one, in `FairLimiter` order.
CONNECTIONS = 8
#: Retries of a call whose connection broke (a kept connection the server closed): as the
#: official client's urllib3 did by default, before a failure is the caller's to retry with backoff.
CONNECTION_RETRIES = 3
MERGE_PATCH = "application/merge-patch+json"
#: A list of operations (RFC 6902), for a write with a `test` precondition.
JSON_PATCH = "application/json-patch+json"


class ApiError(Exception):
    """A Kubernetes API call that failed: `status` is the HTTP status (0: no answer, the connection
    failed or timed out), `reason` the HTTP reason, `message` the API server's Status message."""

    def __init__(self, status: int, reason: str, message: str = "") -> None:
        super().__init__(f"({status}) {reason}" + (f": {message}" if message else ""))
        self.status = status
        self.reason = reason
        self.message = message


def credentials() -> kopf.ConnectionInfo:
    """The credentials of every Kubernetes call, kopf's own included (its login handler): the pod's
    service account (the token is read again at every login: projected tokens rotate), else the
    kubeconfig (KUBECONFIG or ~/.kube/config: its token, client certificate or basic auth, CA data),
    read by kopf's public login functions."""
    settings = kopf.OperatorSettings()
    info = kopf.login_with_service_account(settings=settings)
    if info is not None:
        info = dataclasses.replace(info, server=in_cluster_server() or info.server)
    else:
        info = kopf.login_with_kubeconfig(settings=settings)
    if info is None or not (info.token or info.certificate_path or info.certificate_data or info.username):
        raise kopf.LoginError(
            "no Kubernetes credentials the operator can use: run it in a pod with a service account, or "
            "give it a kubeconfig (KUBECONFIG) whose user has a token, a client certificate, or a username "
            "and password (an exec plugin is not run)"
        )
    return info


def in_cluster_server() -> str | None:
    """The API server's address in a pod, where client-go's in-cluster config takes it: the
    KUBERNETES_SERVICE_HOST and _PORT the kubelet gives every container. kopf's service-account login
    names https://kubernetes.default.svc, which only the cluster's DNS resolves (not the resolver of a
    pod on the host's network)."""
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        return None
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


def _path(*parts: str) -> str:
    return "/" + "/".join(quote(part, safe="") for part in parts)


def _secrets(namespace: str, *name: str) -> str:
    return _path("api", "v1", "namespaces", namespace, "secrets", *name)


def _custom(group: str, version: str, namespace: str | None, plural: str, *name: str) -> str:
    scope = ("namespaces", namespace) if namespace is not None else ()
    return _path("apis", group, version, *scope, plural, *name)


def _leases(namespace: str, *name: str) -> str:
    return _path(*LEASES, "namespaces", namespace, "leases", *name)


def _error(status: int, reason: str, text: bytes) -> ApiError:
    try:
        message = str(json.loads(text).get("message") or "")
    except (ValueError, AttributeError):
        message = text.decode(errors="replace")[:200]
    return ApiError(status, reason, message)


@dataclasses.dataclass(frozen=True)
class Page:
    """One page of a listing: at most `limit` objects, from where the previous page's `continue` said."""

    limit: int
    after: str | None = None

    def query(self) -> dict[str, str]:
        return {"limit": str(self.limit), **({"continue": self.after} if self.after else {})}


class KubeApi:
    """Async calls that answer plain objects, as the API server sends them. The session is made at the
    first call, in the running event loop; `close` it in the same loop."""

    def __init__(self, connections: int = CONNECTIONS, timeout: float = REQUEST_TIMEOUT) -> None:
        self._connections = connections
        self._timeout = timeout
        self._info: kopf.ConnectionInfo | None = None
        self._session: aiohttp.ClientSession | None = None
        #: Who gets the next connection: calls for no session, then sessions in turn (fairness.py).
        self._order = FairLimiter(connections)

    def _connect(self) -> tuple[aiohttp.ClientSession, kopf.ConnectionInfo]:
        if self._session is None or self._info is None:
            info = self._info = credentials()
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._connections, ssl=info.as_ssl_context()),
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                proxy=info.proxy_url,
                trust_env=info.trust_env,
            )
        return self._session, self._info

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        """One call as JSON in and out. A 401 logs in again once (a rotated token) and retries."""
        data = None if body is None else json.dumps(body, separators=(",", ":"))
        if method in WRITES:
            query = {**(query or {}), "fieldManager": COMPONENT}
        relogged = False
        broken = 0
        while True:
            session, info = self._connect()
            headers = {**info.as_http_headers(), "Accept": "application/json", "User-Agent": USER_AGENT}
            if data is not None:
                headers["Content-Type"] = content_type
            try:
                async with (
                    self._order.hold(),
                    session.request(
                        method, info.server.rstrip("/") + path, data=data, params=query, headers=headers
                    ) as response,
                ):
                    text = await response.read()
                    status, reason = response.status, response.reason or ""
            except TimeoutError as error:
                raise ApiError(0, "Timeout", f"no answer within {self._timeout:g}s") from error
            except aiohttp.ClientConnectionError as error:
                broken += 1
                if broken <= CONNECTION_RETRIES:
                    continue
                raise ApiError(0, type(error).__name__, str(error)) from error
            if status == 401 and not relogged:
                relogged = True
                self._info = credentials()
                continue
            if not 200 <= status < 300:
                raise _error(status, reason, text)
            return json.loads(text) if text else {}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # Core ---------------------------------------------------------------------------------------

    async def read_namespaced_secret(self, name: str, namespace: str) -> Any:
        return await self.call("GET", _secrets(namespace, name))

    async def create_namespaced_secret(self, namespace: str, body: Any) -> Any:
        return await self.call("POST", _secrets(namespace), body)

    async def replace_namespaced_secret(self, name: str, namespace: str, body: Any) -> Any:
        return await self.call("PUT", _secrets(namespace, name), body)

    async def create_namespaced_event(self, namespace: str, body: Any) -> Any:
        return await self.call("POST", _path("api", "v1", "namespaces", namespace, "events"), body)

    async def read_namespace(self, name: str) -> Any:
        return await self.call("GET", _path("api", "v1", "namespaces", name))

    # Admission and authorization ------------------------------------------------------------------

    async def read_validating_admission_policy(self, name: str) -> Any:
        return await self.call("GET", _path(*ADMISSION, "validatingadmissionpolicies", name))

    async def list_validating_admission_policy_binding(self) -> Any:
        return await self.call("GET", _path(*ADMISSION, "validatingadmissionpolicybindings"))

    async def create_subject_access_review(self, body: Any) -> Any:
        return await self.call(
            "POST", _path("apis", "authorization.k8s.io", "v1", "subjectaccessreviews"), body
        )

    # Custom objects (merge patches, as the official client sends a dict) -----------------------------

    async def get_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str
    ) -> Any:
        return await self.call("GET", _custom(group, version, namespace, plural, name))

    async def list_namespaced_custom_object(
        self,
        group: str,
        version: str,
        namespace: str,
        plural: str,
        field_selector: str | None = None,
        page: Page | None = None,
    ) -> Any:
        query = {"fieldSelector": field_selector} if field_selector else {}
        query |= page.query() if page is not None else {}
        return await self.call("GET", _custom(group, version, namespace, plural), query=query or None)

    async def list_cluster_custom_object(
        self, group: str, version: str, plural: str, page: Page | None = None
    ) -> Any:
        query = page.query() if page is not None else None
        return await self.call("GET", _custom(group, version, None, plural), query=query)

    async def patch_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, body: Any
    ) -> Any:
        """A merge patch; a list of operations is a JSON patch."""
        path = _custom(group, version, namespace, plural, name)
        return await self.call(
            "PATCH", path, body, content_type=JSON_PATCH if isinstance(body, list) else MERGE_PATCH
        )

    async def patch_namespaced_custom_object_status(
        self, group: str, version: str, namespace: str, plural: str, name: str, body: Any
    ) -> Any:
        path = _custom(group, version, namespace, plural, name, "status")
        return await self.call("PATCH", path, body, content_type=MERGE_PATCH)

    async def delete_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, body: Any = None
    ) -> Any:
        return await self.call("DELETE", _custom(group, version, namespace, plural, name), body)

    # The leader Lease -------------------------------------------------------------------------------

    async def read_namespaced_lease(self, name: str, namespace: str) -> Any:
        return await self.call("GET", _leases(namespace, name))

    async def create_namespaced_lease(self, namespace: str, body: Any) -> Any:
        return await self.call("POST", _leases(namespace), body)

    async def replace_namespaced_lease(self, name: str, namespace: str, body: Any) -> Any:
        return await self.call("PUT", _leases(namespace, name), body)

    async def list_namespaced_lease(self, namespace: str, label_selector: str) -> Any:
        return await self.call("GET", _leases(namespace), query={"labelSelector": label_selector})

    async def patch_namespaced_lease(self, name: str, namespace: str, body: Any) -> Any:
        return await self.call("PATCH", _leases(namespace, name), body, content_type=MERGE_PATCH)
