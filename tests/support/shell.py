"""Fake Hub and Kubernetes adapters for in-process tests of the session and pool shells: small
in-memory stand-ins with the methods the shells call on HubClient, KubeClient and the pool's
KubeApi, recording each call; the shells run unchanged on the real Runtime, kopf's Events
collected from kopf's own posting queue. No process, no socket."""

from __future__ import annotations

import asyncio
import base64
import copy
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import kopf
from kopf._core.engines import posting

from sandbox_operator import api
from sandbox_operator.config.settings import OperatorConfig
from sandbox_operator.core.model import HealthResult, SpaceView
from sandbox_operator.hub.errors import HubError, SpaceExistsError
from sandbox_operator.hub.spaces import Listing, Ownership
from sandbox_operator.k8s.transport import ApiError
from sandbox_operator.pools.book import PoolBook
from sandbox_operator.runtime import Runtime, build_runtime

OPS = "ops"
READ_TOKEN_SECRET = "hub-read"
#: The operator as these tests run it: listings and edge probes off, so each pass reads the Hub itself.
CONFIG = OperatorConfig(
    default_owner="agents",
    default_template="templates/agent-sandbox",
    cluster_id="c1",
    operator_namespace=OPS,
    hub_read_token_secret=READ_TOKEN_SECRET,
    observe_interval=0,
    edge_probe_rate=0,
)
PRICES = {"a10g-small": 1.0, "t4-small": 0.4}


class FakeGate:
    """The Hub client's rate gate, never short of requests."""

    def spare(self) -> int | None:
        return None


class FakeHub:
    """The Hub's Spaces in memory. `calls` records each call (name, first argument); `failing` maps a
    method's name to the HubError it raises while set."""

    def __init__(self) -> None:
        self.gate = FakeGate()
        self.spaces: dict[str, SpaceView] = {}
        self.markers: dict[str, Ownership] = {}
        self.tokens: dict[str, str] = {}
        self.space_secrets: dict[str, dict[str, str]] = {}
        self.calls: list[tuple[str, str]] = []
        self.failing: dict[str, HubError] = {}

    def _call(self, method: str, subject: str) -> None:
        self.calls.append((method, subject))
        if method in self.failing:
            raise self.failing[method]

    def called(self, method: str) -> list[str]:
        return [subject for name, subject in self.calls if name == method]

    def finish_builds(self) -> None:
        """Every Space building for a flavor runs on it now."""
        for space_id, space in self.spaces.items():
            if space.stage != "RUNNING" or space.current_hardware != space.requested_hardware:
                self.spaces[space_id] = replace(
                    space, stage="RUNNING", current_hardware=space.requested_hardware
                )

    async def space(self, space_id: str, *, with_marker: bool = False) -> SpaceView | None:
        self._call("space", space_id)
        space = self.spaces.get(space_id)
        marker = self.markers.get(space_id)
        if space is not None and with_marker and marker is not None:
            return replace(space, marker_uid=marker.session_uid, marker_cluster=marker.cluster_id)
        return space

    async def ownership(self, space_id: str, *, deleting: bool = False) -> Ownership | None:
        self._call("ownership", space_id)
        return self.markers.get(space_id) if space_id in self.spaces else None

    async def check_owner_access(self, space_id: str) -> None:
        self._call("check_owner_access", space_id)

    async def hardware_prices(self) -> dict[str, float]:
        self._call("hardware_prices", "")
        return dict(PRICES)

    async def list_owner_spaces(self, owner: str, prefix: str) -> Listing:
        self._call("list_owner_spaces", owner)
        return Listing(time.monotonic(), {i: s for i, s in self.spaces.items() if i.startswith(f"{owner}/")})

    async def duplicate(
        self,
        *,
        space_id: str,
        private: bool,
        token: str,
        session_uid: str,
        session_ref: str,
        secrets: dict[str, str] | None = None,
        **_: Any,
    ) -> None:
        self._call("duplicate", space_id)
        self.space_secrets[space_id] = dict(secrets or {})
        if space_id in self.spaces:
            raise SpaceExistsError(space_id)
        url = f"https://{space_id.replace('/', '-')}.hf.space"
        self.spaces[space_id] = SpaceView(
            space_id, "BUILDING", None, "cpu-basic", private, f"https://hub/spaces/{space_id}", url
        )
        self.markers[space_id] = Ownership(session_uid, CONFIG.cluster_id, session_ref)
        self.tokens[space_id] = token

    async def set_token(self, space_id: str, token: str) -> None:
        self._call("set_token", space_id)
        self.tokens[space_id] = token

    async def claim_marker(self, space_id: str, session_uid: str, session_ref: str) -> None:
        self._call("claim_marker", space_id)
        self.markers[space_id] = Ownership(session_uid, CONFIG.cluster_id, session_ref)

    async def mark_cluster(self, space_id: str, cluster_id: str) -> None:
        self._call("mark_cluster", space_id)
        self.markers[space_id] = replace(self.markers[space_id], cluster_id=cluster_id)

    async def request_hardware(self, space_id: str, flavor: str, sleep_time: int | None) -> None:
        self._call("request_hardware", f"{space_id} {flavor}")
        space = self.spaces[space_id]
        self.spaces[space_id] = replace(
            space, stage="BUILDING", requested_hardware=flavor, sleep_time=sleep_time
        )

    async def set_sleep_time(self, space_id: str, seconds: int) -> None:
        self._call("set_sleep_time", space_id)
        self.spaces[space_id] = replace(self.spaces[space_id], sleep_time=seconds)

    async def restart(self, space_id: str) -> None:
        self._call("restart", space_id)

    async def pause(self, space_id: str) -> None:
        self._call("pause", space_id)
        self.spaces[space_id] = replace(self.spaces[space_id], stage="PAUSED")

    async def release(self, space_id: str) -> None:
        self._call("release", space_id)

    async def delete(self, space_id: str) -> bool:
        self._call("delete", space_id)
        self.markers.pop(space_id, None)
        return self.spaces.pop(space_id, None) is not None

    async def health(self, sandbox_url: str, token: str, hub_token: str) -> HealthResult:
        self._call("health", sandbox_url)
        return HealthResult(True, "200 OK", 200)

    async def close(self) -> None:
        return None


class FakeKube:
    """The API server's objects in memory, as KubeClient (sessions, Secrets, approvals) and as the pool
    shell's KubeApi (pools, their key Secret) serve them. `writes` records each write (method, name)."""

    instance = "test"

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.writes: list[tuple[str, str]] = []
        self._version = 0
        self._deferred: dict[str, tuple[str, str, dict[str, str]]] = {}
        self.secrets[(OPS, READ_TOKEN_SECRET)] = {
            "metadata": {},
            "data": {CONFIG.hub_read_token_key: "hf_read"},
        }

    def _bump(self, body: dict[str, Any]) -> dict[str, Any]:
        self._version += 1
        body["metadata"]["resourceVersion"] = str(self._version)
        return copy.deepcopy(body)

    def add(self, plural: str, namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        meta = {"name": name, "namespace": namespace, "uid": f"uid-{name}", "generation": 1}
        meta["finalizers"] = [api.FINALIZER]  # kopf's, added before the operator's passes act
        meta["creationTimestamp"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.objects[(plural, namespace, name)] = {"metadata": meta, "spec": spec, "status": {}}
        return self._bump(self.objects[(plural, namespace, name)])

    def body(self, plural: str, namespace: str, name: str) -> kopf.Body:
        """The object as kopf's live view holds it."""
        return kopf.Body(copy.deepcopy(self.objects[(plural, namespace, name)]))

    def respec(self, plural: str, namespace: str, name: str, **spec: Any) -> None:
        """A user's change of the spec: a new generation."""
        body = self.objects[(plural, namespace, name)]
        body["spec"].update(spec)
        body["metadata"]["generation"] += 1
        self._bump(body)

    def data(self, namespace: str, name: str) -> dict[str, str] | None:
        secret = self.secrets.get((namespace, name))
        return None if secret is None else dict(secret["data"])

    # KubeClient's methods -----------------------------------------------------------------------

    async def read_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        return self.data(namespace, name)

    async def read_connection(
        self, namespace: str, name: str, owner_uid: str, *, session: str
    ) -> dict[str, str] | None:
        deferred = self._deferred.get(owner_uid)
        if deferred is not None and deferred[:2] == (namespace, name):
            return dict(deferred[2])
        return self.data(namespace, name)

    async def write_connection(
        self, *, namespace: str, name: str, owner: dict[str, str], values: dict[str, str], **how: bool
    ) -> None:
        """As KubeClient's: `defer` keeps the first values until the next write creates the Secret."""
        if how.get("defer"):
            self._deferred[owner["uid"]] = (namespace, name, dict(values))
            return
        pending = self._deferred.pop(owner["uid"], None)
        merged = {**(pending[2] if pending else {}), **(self.data(namespace, name) or {}), **values}
        self.writes.append(("write_connection", name))
        self.secrets[(namespace, name)] = {"metadata": {"ownerReferences": [owner]}, "data": merged}

    def forget(self, owner_uid: str) -> None:
        self._deferred.pop(owner_uid, None)

    async def resolve_secrets(self, namespace: str, sources: list[Any]) -> tuple[dict[str, str], str | None]:
        return {source.name: f"value of {source.name}" for source in sources}, None

    async def patch_status(
        self, namespace: str, name: str, status: dict[str, Any], resource_version: str | None = None
    ) -> dict[str, Any]:
        body = self.objects[(api.PLURAL, namespace, name)]
        if resource_version is not None and resource_version != body["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict")
        self.writes.append(("patch_status", name))
        body["status"] = {**body["status"], **copy.deepcopy(status)}
        return self._bump(body)

    async def pause_session(self, namespace: str, name: str) -> None:
        self.respec(api.PLURAL, namespace, name, paused=True)

    async def delete_session(self, namespace: str, name: str, uid: str) -> None:
        self.mark_deleted(api.PLURAL, namespace, name)

    def mark_deleted(self, plural: str, namespace: str, name: str) -> None:
        body = self.objects[(plural, namespace, name)]
        body["metadata"]["deletionTimestamp"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self._bump(body)

    async def list_sessions(self, namespaces: list[str], plural: str = api.PLURAL) -> list[dict[str, Any]]:
        return [
            copy.deepcopy(b) for (p, ns, _), b in self.objects.items() if p == plural and ns in namespaces
        ]

    async def read_session(self, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.objects.get((api.PLURAL, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    async def approval_policy_problem(self, now: float, *, fresh: bool = False) -> str | None:
        return None  # the approval policy is enforced

    def approval_policy_since(self) -> str | None:
        return "2025-12-01T00:00:00Z"

    async def approver_may_approve(self, question: Any, now: float) -> bool:
        return True

    async def close(self) -> None:
        return None

    # The pool shell's KubeApi methods -------------------------------------------------------------

    async def get_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str
    ) -> Any:
        found = self.objects.get((plural, namespace, name))
        if found is None:
            raise ApiError(404, "Not Found")
        return copy.deepcopy(found)

    async def patch_namespaced_custom_object_status(
        self, group: str, version: str, namespace: str, plural: str, name: str, body: dict[str, Any]
    ) -> Any:
        found = self.objects[(plural, namespace, name)]
        if body["metadata"]["resourceVersion"] != found["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict")
        self.writes.append(("patch_pool_status", name))
        found["status"] = copy.deepcopy(body["status"])
        return self._bump(found)

    async def create_namespaced_secret(self, namespace: str, body: dict[str, Any]) -> Any:
        name = body["metadata"]["name"]
        self.writes.append(("create_secret", name))
        data = {key: base64.b64decode(value).decode() for key, value in (body.get("data") or {}).items()}
        data |= body.get("stringData") or {}
        self.secrets[(namespace, name)] = {"metadata": body["metadata"], "data": data}
        return body

    async def read_namespaced_secret(self, name: str, namespace: str) -> Any:
        return copy.deepcopy(self.secrets[(namespace, name)])


def runtime(hub: FakeHub, kube: FakeKube) -> Runtime:
    """The operator's Runtime, built as `run` builds it, on the fakes; the pool shell's own API too."""
    rt = build_runtime(CONFIG, hub, kube, [])  # type: ignore[arg-type]
    rt.pools = PoolBook(custom=kube, _kube=kube)  # type: ignore[arg-type]
    return rt


class EventLog:
    """The Events the shell posted with kopf.event, taken from kopf's own posting queue."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[posting.K8sEvent] = asyncio.Queue()
        self.posted: list[posting.K8sEvent] = []

    def reasons(self) -> list[str]:
        while not self.queue.empty():
            self.posted.append(self.queue.get_nowait())
        return [event.reason for event in self.posted]


@contextmanager
def kopf_events() -> Iterator[EventLog]:
    """kopf.event posts into an EventLog meanwhile, as an operator's poster task would receive them."""
    log = EventLog()
    tokens = (
        posting.settings_var.set(kopf.OperatorSettings()),
        posting.event_queue_var.set(log.queue),
        posting.event_queue_loop_var.set(asyncio.get_running_loop()),
    )
    try:
        yield log
    finally:
        posting.event_queue_loop_var.reset(tokens[2])
        posting.event_queue_var.reset(tokens[1])
        posting.settings_var.reset(tokens[0])
