"""Kubernetes API calls the operator makes besides kopf's own: Secrets, the intent status write,
and what it checks before it trusts an approval (the admission policy, SubjectAccessReviews).

kopf handles the watch, the finalizer and the end-of-handler status patch itself. Every call here
is async JSON (k8s/transport.py), not the official client, which the operator never imports.
"""

from __future__ import annotations

import base64
import secrets
import socket
from datetime import UTC, datetime
from typing import Any

from sandbox_operator import api
from sandbox_operator.api import SpaceSecretSource
from sandbox_operator.k8s import admission as policy
from sandbox_operator.k8s.admission import ApproverQuestion
from sandbox_operator.k8s.transport import COMPONENT, ApiError, KubeApi, Page

# Keys of the connection Secret, a stable interface for agent pods. The operator's own Hub token is
# never among them.
KEY_SPACE_ID = "spaceId"
#: Objects per page when the operator lists sessions or pools (the watch checks, pools, the sweeper):
#: with a tenant's metadata near the API server's 256 KB limit, a page is about 12 MB while it is read.
LIST_PAGE_SIZE = 50
#: Base URL of the sandbox app, behind the Hub's edge.
KEY_SANDBOX_URL = "sandboxUrl"
#: The sandbox API token, sent as `X-Sandbox-Authorization: Bearer <token>`.
KEY_TOKEN = "token"
#: A Hub token that may read the private Space, sent as `Authorization: Bearer <hubToken>` to pass the
#: Hub's edge; empty for a public Space or when none is configured.
KEY_HUB_TOKEN = "hubToken"
#: Since when the session is paused (RFC 3339; empty while it is not): the sandbox does not answer.
KEY_PAUSED_SINCE = "pausedSince"
#: How to resume a paused session (a kubectl command; empty while it is not paused).
KEY_RESUME = "resume"
#: The label every connection Secret carries: with an owner reference to a same-named AgentSession,
#: it marks a Secret the operator may take over from a deleted predecessor.
MANAGED_BY = {"app.kubernetes.io/managed-by": COMPONENT}
#: The namespace whose UID names the cluster when no cluster id is configured.
CLUSTER_ID_NAMESPACE = "kube-system"
#: Longest time a SubjectAccessReview's answer about an approver is reused.
APPROVER_REVIEW_MAX_AGE = 10.0


class ConnectionSecretConflict(Exception):
    """A Secret named like the session's connection Secret exists and is not the operator's to write."""


def connection_claim(secret: Any, session: str, owner_uid: str) -> str:
    """Whose the Secret of the connection Secret's name is: "absent", "ours" (this session's),
    "stale" (a deleted predecessor's: our label and an owner reference to an AgentSession of the
    same name), or "foreign" (anyone else's: never written)."""
    if secret is None:
        return "absent"
    owners = secret["metadata"].get("ownerReferences") or []
    if any(ref.get("uid") == owner_uid for ref in owners):
        return "ours"
    labels = secret["metadata"].get("labels") or {}
    predecessor = any(
        ref.get("kind") == api.KIND
        and str(ref.get("apiVersion", "")).startswith(f"{api.GROUP}/")
        and ref.get("name") == session
        for ref in owners
    )
    if predecessor and all(labels.get(key) == value for key, value in MANAGED_BY.items()):
        return "stale"
    return "foreign"


def _conflict(namespace: str, name: str, session: str) -> ConnectionSecretConflict:
    return ConnectionSecretConflict(
        f"Secret {namespace}/{name} exists and does not belong to this session, so the operator leaves it "
        f"untouched and publishes no connection; delete or rename that Secret, or recreate the session "
        f"under another name than {session}"
    )


async def resolve_cluster_id(configured: str) -> str:
    """The configured cluster id, else the kube-system namespace's UID: fixed for the cluster's life and
    different in every cluster, so clusters sharing a Hub namespace never take each other's Spaces."""
    if configured:
        return configured
    kube = KubeApi(connections=1)
    try:
        found: Any = await kube.read_namespace(CLUSTER_ID_NAMESPACE)
    except ApiError as error:
        raise RuntimeError(
            f"cannot derive the cluster id from namespace {CLUSTER_ID_NAMESPACE} "
            f"({error.status} {error.reason}): "
            f"grant get on namespaces/{CLUSTER_ID_NAMESPACE}, or set --cluster-id"
        ) from error
    finally:
        await kube.close()
    return str(found["metadata"]["uid"])


class SecretValueError(ValueError):
    """A Secret value the operator must read is not UTF-8 text."""


def _decoded(secret: Any) -> dict[str, str] | None:
    if secret is None:
        return None
    values = {}
    for key, value in (secret.get("data") or {}).items():
        try:
            values[key] = base64.b64decode(value).decode()
        except UnicodeDecodeError:
            meta = secret["metadata"]
            raise SecretValueError(
                f"Secret {meta.get('namespace')}/{meta.get('name')} key {key!r} is not UTF-8 text; "
                "fix or replace it"
            ) from None
    return values


def new_token() -> str:
    """A fresh sandbox API token, for a connection Secret and the Space it opens."""
    return "sbx_" + secrets.token_urlsafe(32)


def status_patch(status: api.AgentSessionStatus) -> dict[str, Any]:
    """A merge patch for status: fields that are None are sent as null, so they are removed."""
    return status.model_dump(by_alias=True, mode="json")


def owned_secret(
    name: str, namespace: str, owner: tuple[str, str, str], label: tuple[str, str], values: dict[str, str]
) -> dict[str, Any]:
    """A Secret the operator writes for one of its objects (`owner`: kind, name, uid): owned by it, so
    it goes with it, and labelled as the operator's and the owner's."""
    kind, owner_name, uid = owner
    reference = {
        "apiVersion": api.API_VERSION,
        "kind": kind,
        "name": owner_name,
        "uid": uid,
        "controller": True,
    }
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {**MANAGED_BY, label[0]: label[1]},
            "ownerReferences": [reference],
        },
        "stringData": values,
    }


class KubeClient:
    def __init__(
        self, kube_api: KubeApi | None = None, recheck_interval: float = 60.0, instance: str = ""
    ) -> None:
        self._api = kube_api or KubeApi()
        #: This operator process among others, in its Events (reportingInstance): its identity (the pod's
        #: name in the chart), else the hostname.
        self.instance = instance or socket.gethostname()
        self._recheck_interval = recheck_interval
        #: The last check of the approval policy: when, why it is not enforced, since when it exists.
        self._policy_checked: tuple[float, str | None, str | None] | None = None
        self._reviews: dict[ApproverQuestion, tuple[float, bool]] = {}
        #: Connection Secrets not written yet, by owner UID: (namespace, name, values). An intent's token
        #: waits here for its Space's URL, so the Secret is created once, whole (`write_connection`).
        self._deferred: dict[str, tuple[str, str, dict[str, str]]] = {}

    async def _read(self, namespace: str, name: str) -> Any:
        try:
            return await self._api.read_namespaced_secret(name, namespace)
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    async def read_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        """A Secret's decoded data, or None if it does not exist."""
        return _decoded(await self._read(namespace, name))

    async def read_connection(
        self, namespace: str, name: str, owner_uid: str, *, session: str
    ) -> dict[str, str] | None:
        """The connection Secret's data if it belongs to this session; a stale one of a deleted
        session with the same name (not yet garbage-collected) counts as absent; anyone else's
        Secret of that name raises ConnectionSecretConflict. One whose first values are deferred is not
        read: those values are what it will hold."""
        deferred = self._deferred.get(owner_uid)
        if deferred is not None and deferred[:2] == (namespace, name):
            return dict(deferred[2])
        secret = await self._read(namespace, name)
        claim = connection_claim(secret, session, owner_uid)
        if claim == "foreign":
            raise _conflict(namespace, name, session)
        return _decoded(secret) if claim == "ours" else None

    async def write_connection(
        self,
        *,
        namespace: str,
        name: str,
        owner: dict[str, str],
        values: dict[str, str],
        exists: bool = False,
        defer: bool = False,
    ) -> None:
        """Create or update the connection Secret, owned by the session so it goes with it.

        `values` are merged into what the session's Secret holds. A stale Secret of a deleted
        session with the same name is taken over whole: replaced, not merged, so neither its
        token nor its owner reference survives. Any other Secret of that name is never written
        (ConnectionSecretConflict): a session editor must not overwrite Secrets through the operator.
        `exists`: this pass read the Secret as the session's, so the create is not tried first (one
        write, not a refused create and an update).
        `defer`: the Secret does not exist yet and these are its first values (an intent's, before its
        Space's URL is known): they are kept in this process, not written, and the next write creates
        the Secret with them, in one request instead of a create and an update. Kept until then or
        `forget`: a process that stops first loses them, and the core issues a new token (RotateToken),
        as for a Secret lost any other way.
        """
        deferred = self._deferred.pop(owner["uid"], None)
        if deferred is not None and deferred[:2] == (namespace, name):
            values, exists = {**deferred[2], **values}, False
        if defer and not exists:
            self._deferred[owner["uid"]] = (namespace, name, values)
            return
        label = (f"{api.GROUP}/session", owner["name"])
        body = owned_secret(name, namespace, (api.KIND, owner["name"], owner["uid"]), label, values)
        if not exists:
            try:
                await self._api.create_namespaced_secret(namespace, body)
                return
            except ApiError as error:
                if error.status != 409:
                    raise
        existing = await self._read(namespace, name)
        claim = connection_claim(existing, owner["name"], owner["uid"])
        if claim == "foreign":
            raise _conflict(namespace, name, owner["name"])
        if claim == "absent":  # deleted since the create: a 409 again next time, or a create
            raise ApiError(409, f"Secret {namespace}/{name} changed while written")
        kept = (_decoded(existing) or {}) if claim == "ours" else {}
        body["stringData"] = {**kept, **values}
        body["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
        await self._api.replace_namespaced_secret(name, namespace, body)

    def forget(self, owner_uid: str) -> None:
        """The session's loop ended: drop what was kept about its connection Secret."""
        self._deferred.pop(owner_uid, None)

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

    async def patch_status(
        self, namespace: str, name: str, status: dict[str, Any], resource_version: str | None = None
    ) -> dict[str, Any]:
        """Write status now (not at the end of the handler): used to record intent before a Hub call.
        With `resource_version`, only onto that version of the object (else 409 Conflict).

        Returns the object as written, e.g. to see whether it was marked for deletion meanwhile.
        """
        patch: dict[str, Any] = {"status": status}
        if resource_version is not None:
            patch["metadata"] = {"resourceVersion": resource_version}
        written: Any = await self._api.patch_namespaced_custom_object_status(
            api.GROUP, api.VERSION, namespace, api.PLURAL, name, patch
        )
        return dict(written)

    async def pause_session(self, namespace: str, name: str, generation: int) -> bool:
        """Set spec.paused on a session the operator pauses for idleness: the user resumes it by
        setting it back to false, as after a pause of their own. Only onto the spec the pause was
        decided on (`generation`): False, nothing written, when the spec changed meanwhile."""
        patch = [
            {"op": "test", "path": "/metadata/generation", "value": generation},
            {"op": "add", "path": "/spec/paused", "value": True},
        ]
        try:
            await self._api.patch_namespaced_custom_object(
                api.GROUP, api.VERSION, namespace, api.PLURAL, name, patch
            )
        except ApiError as error:
            # A failed `test` is a bare 422 "Invalid", as an invalid object would be: the spec tells.
            if error.status != 422 or await self._generation(namespace, name) == generation:
                raise
            return False
        return True

    async def _generation(self, namespace: str, name: str) -> int | None:
        """The session's metadata.generation now; None when it is gone."""
        found = await self.read_session(namespace, name)
        return int(found["metadata"]["generation"]) if found is not None else None

    async def delete_session(self, namespace: str, name: str, uid: str) -> None:
        """Delete the session (its lifetime or retention ended); only the object with this UID, never a
        same-named successor. Its finalizer then releases the Space with its deletionPolicy."""
        options = {"preconditions": {"uid": uid}}  # DeleteOptions
        try:
            await self._api.delete_namespaced_custom_object(
                api.GROUP, api.VERSION, namespace, api.PLURAL, name, body=options
            )
        except ApiError as error:
            if error.status not in (404, 409):  # gone already, or a successor of that name
                raise

    async def list_sessions(self, namespaces: list[str], plural: str = api.PLURAL) -> list[dict[str, Any]]:
        """AgentSessions (or `plural`: pools) in `namespaces` (all namespaces if empty), as plain objects
        with only the metadata the operator reads: listed a page at a time, so a listing of objects
        whose tenants filled their metadata holds one page of it at once, never the whole fleet's."""
        sessions: list[dict[str, Any]] = []
        where: list[str | None] = [*namespaces] or [None]
        for namespace in where:
            page: Page | None = Page(LIST_PAGE_SIZE)
            while page is not None:
                if namespace is None:
                    found: Any = await self._api.list_cluster_custom_object(
                        api.GROUP, api.VERSION, plural, page
                    )
                else:
                    found = await self._api.list_namespaced_custom_object(
                        api.GROUP, api.VERSION, namespace, plural, page=page
                    )
                for item in found["items"]:
                    api.keep_only_what_is_read(item)
                sessions += found["items"]
                after = (found.get("metadata") or {}).get("continue")
                page = Page(LIST_PAGE_SIZE, after) if after else None
        return sessions

    async def read_session(self, namespace: str, name: str) -> dict[str, Any] | None:
        """One AgentSession as the API server holds it now (a listing by name: the operator lists,
        it has no get), e.g. to see a status this process wrote before its watch delivered it."""
        found: Any = await self._api.list_namespaced_custom_object(
            api.GROUP, api.VERSION, namespace, api.PLURAL, field_selector=f"metadata.name={name}"
        )
        items = list(found["items"])
        return dict(items[0]) if items else None

    async def post_event(self, *, involved: dict[str, str], type_: str, reason: str, message: str) -> None:
        """A core/v1 Event about `involved` (apiVersion, kind, namespace, name, uid), which may be gone:
        used where no kopf handler runs, e.g. for a Space whose session no longer exists. Reported as
        kopf reports the handlers' Events (registry._configure): from COMPONENT and this instance."""
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
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": self.instance,
        }
        await self._api.create_namespaced_event(namespace, body)

    async def approval_policy_problem(self, now: float, *, fresh: bool = False) -> str | None:
        """Why the approval policy is not enforced (None: it is), re-read every `recheck_interval`,
        or now when `fresh` (before money is spent on an approval's word)."""
        cached = self._policy_checked
        if not fresh and cached is not None and now - cached[0] < self._recheck_interval:
            return cached[1]
        since = None
        try:
            found, bindings = await self._read_policy()
            problem = policy.enforcement_problem(found, bindings)
            since = policy.enforced_since(found, bindings)
        except ApiError as error:
            problem = f"the operator cannot read the approval policy ({error.status} {error.reason})"
        self._policy_checked = (now, problem, since)
        return problem

    def approval_policy_since(self) -> str | None:
        """`policy.enforced_since` as the last `approval_policy_problem` read it (None before any)."""
        return self._policy_checked[2] if self._policy_checked is not None else None

    async def _read_policy(self) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        try:
            found: Any = await self._api.read_validating_admission_policy(policy.POLICY_NAME)
        except ApiError as error:
            if error.status != 404:
                raise
            return None, []
        bindings: Any = await self._api.list_validating_admission_policy_binding()
        return dict(found), list(bindings.get("items") or [])

    async def approver_may_approve(self, question: ApproverQuestion, now: float) -> bool:
        """A SubjectAccessReview: does the approver (with the groups the approval names) hold `approve`?
        Answers are reused briefly, so a session loop does not ask on every pass."""
        cached = self._reviews.get(question)
        if cached is not None and now - cached[0] < min(APPROVER_REVIEW_MAX_AGE, self._recheck_interval):
            return cached[1]
        body: Any = question.review()
        review: Any = await self._api.create_subject_access_review(body)
        allowed = bool((review.get("status") or {}).get("allowed"))
        self._reviews = {q: a for q, a in self._reviews.items() if now - a[0] < APPROVER_REVIEW_MAX_AGE}
        self._reviews[question] = (now, allowed)
        return allowed

    async def close(self) -> None:
        await self._api.close()
