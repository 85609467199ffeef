"""Warm pools on the real control plane, the Hub emulator and the operator as a process: a pool
becomes Ready, sessions claim its Spaces with tokens of their own, concurrent claims never share a
Space, `kubectl scale` resizes it, a new key replaces its Spaces, and deleting it deletes its
unclaimed Spaces."""

from __future__ import annotations

import asyncio
import base64
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx2
import pytest

from sandbox_operator import api
from sandbox_operator.core import pool as core
from sandbox_operator.core.model import MARKER_SESSION, MARKER_SESSION_UID
from sandbox_operator.hub.sandbox_health import SANDBOX_AUTH_HEADER
from sandbox_operator.k8s.transport import ApiError
from sandbox_operator.pools.book import POOL_TOKEN_SUFFIX, PoolBook, read_pool, write_pool_status
from sandbox_testbench.controlplane import ControlPlane, Kubectl
from sandbox_testbench.hubsim import HubSimAdmin
from tests.support import wait_for
from tests.support.harness import (
    READ_TOKEN,
    TEMPLATE,
    OperatorProcess,
    condition,
    get_session,
    pool_manifest,
    session_manifest,
    wait_ready,
)
from tests.support.kube import api_client, event_time, events_of, namespaced_path


def get_pool(kubectl: Kubectl, name: str, namespace: str) -> dict[str, Any] | None:
    pool: dict[str, Any] | None = api_client(kubectl).get(
        namespaced_path(api.API_VERSION, api.POOL_PLURAL, namespace, name)
    )
    return pool


def wait_pool_ready(
    kubectl: Kubectl, name: str, namespace: str, ready: int, timeout: float = 90
) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        pool = get_pool(kubectl, name, namespace)
        status = (pool or {}).get("status") or {}
        return (
            pool
            if status.get("ready") == ready and (condition(pool, "Ready") or {}).get("status") == "True"
            else None
        )

    return wait_for(done, timeout, f"pool {namespace}/{name} with {ready} ready Spaces")


def claims_recorded(kubectl: Kubectl, name: str, namespace: str, since: str) -> list[tuple[str, str]]:
    """(Space, claimant UID) of each claim in every status of the pool written after resourceVersion
    `since`: a claimed entry leaves the status once its Space is handed over, so the last status alone
    may list none."""
    collection = namespaced_path(api.API_VERSION, api.POOL_PLURAL, namespace)
    return [
        (entry["spaceId"], entry["claimedBy"]["uid"])
        for pool in api_client(kubectl).versions(collection, name, since=since)
        for entry in (pool.get("status") or {}).get("spaces") or []
        if entry.get("claimedBy")
    ]


def pool_spaces(admin: HubSimAdmin, uid: str) -> list[dict[str, Any]]:
    return [s for s in admin.spaces() if s["variables"].get(MARKER_SESSION_UID) == uid]


def secret_data(kubectl: Kubectl, name: str, namespace: str) -> dict[str, str]:
    secret = kubectl.json("get", "secret", name, "-n", namespace)
    return {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}


def health(sandbox_url: str, token: str) -> int:
    headers = {"Authorization": f"Bearer {READ_TOKEN}", SANDBOX_AUTH_HEADER: f"Bearer {token}"}
    return httpx2.get(f"{sandbox_url}/health", headers=headers, timeout=10).status_code


def test_a_claims_ready_means_the_sandbox_answers_the_sessions_token(
    kubectl: Kubectl, hub_admin: HubSimAdmin, operator: OperatorProcess, namespace: str
) -> None:
    """A running app sees a new secret only once the Hub has restarted it (fidelity: F42): each pooled
    Space is built with a token of its own, which the claim hands over whole, so the sandbox answers
    the session's token the moment the session is Ready, and the Space is never rebuilt for it."""
    kubectl("apply", "-f", "-", stdin=pool_manifest("warm", namespace, replicas=2))
    pool = wait_pool_ready(kubectl, "warm", namespace, 2)
    pool_uid = pool["metadata"]["uid"]
    spaces = pool_spaces(hub_admin, pool_uid)
    assert len(spaces) == 2
    assert all(s["private"] and s["hardware"]["current"] == "cpu-basic" for s in spaces)
    assert all(s["variables"][MARKER_SESSION] == f"{namespace}/warm" for s in spaces)
    tokens = {s["id"]: s["secrets"]["SANDBOX_API_TOKEN"] for s in spaces}
    assert len(set(tokens.values())) == 2  # a token per Space, not one for the pool
    assert set(tokens.values()).isdisjoint(secret_data(kubectl, "warm-pool-token", namespace).values())
    printed = kubectl("get", "agsp", "warm", "-n", namespace).stdout.split()
    assert printed[:7] == ["NAME", "DESIRED", "READY", "CLAIMED", "AVAILABLE", "REASON", "AGE"]
    assert printed[12] == "PoolReady"
    wide = kubectl("get", "agsp", "warm", "-n", namespace, "-o", "wide").stdout.split()
    assert (wide[7], wide[15]) == ("UNCLAIMED", "2")

    kubectl("apply", "-f", "-", stdin=session_manifest("agent", namespace, poolRef={"name": "warm"}))
    session = wait_ready(kubectl, "agent", namespace, timeout=30)
    status = session["status"]
    connection = secret_data(kubectl, status["connectionSecret"], namespace)
    # Ready means the sandbox answers the connection Secret's token through the edge, already.
    assert health(connection["sandboxUrl"], connection["token"]) == 200
    assert connection["hubToken"] == READ_TOKEN
    assert status["launchType"] == "warm"
    assert status["template"] == TEMPLATE  # the pool's, the operator's default
    assert status["spaceId"] in tokens
    assert (condition(session, "WarmClaim") or {}).get("reason") == "WarmSpaceClaimed"
    other = next(token for space_id, token in tokens.items() if space_id != status["spaceId"])
    assert health(status["sandboxUrl"], other) == 401  # another pooled Space's token opens only that one

    # The handover moves the marker only: the Space keeps the token it was built with, unrestarted.
    def handed_over() -> dict[str, Any] | None:
        found = get_session(kubectl, "agent", namespace)
        return found if (found or {}).get("status", {}).get("spaceConfirmedTime") else None

    wait_for(handed_over, 30, "the handover of the claimed Space")
    space = hub_admin.space(status["spaceId"])
    assert space["variables"][MARKER_SESSION_UID] == session["metadata"]["uid"]
    assert space["variables"][MARKER_SESSION] == f"{namespace}/agent"
    assert space["secrets"]["SANDBOX_API_TOKEN"] == connection["token"] == tokens[status["spaceId"]]
    assert [sample["stage"] for sample in space["timeline"]].count("BUILDING") == 1
    assert health(status["sandboxUrl"], connection["token"]) == 200

    # The pool replenishes: two unclaimed Spaces again, one claimed.
    pool = wait_pool_ready(kubectl, "warm", namespace, 2)
    assert pool["status"]["claimed"] == 1

    # Deleting the session deletes its Space, and the pool forgets the claim.
    kubectl("delete", "ags", "agent", "-n", namespace, "--timeout=60s")
    wait_for(
        lambda: status["spaceId"] not in {s["id"] for s in hub_admin.spaces()}, 30, "the claimed Space gone"
    )

    def forgotten() -> bool:
        return ((get_pool(kubectl, "warm", namespace) or {}).get("status") or {}).get("claimed") == 0

    wait_for(forgotten, 60, "the pool to forget the deleted claimant")


def test_concurrent_claims_never_share_a_space_and_the_rest_fall_back_to_cold(
    kubectl: Kubectl, hub_admin: HubSimAdmin, operator: OperatorProcess, namespace: str
) -> None:
    kubectl("apply", "-f", "-", stdin=pool_manifest("burst", namespace, replicas=6))
    before_claims = wait_pool_ready(kubectl, "burst", namespace, 6)["metadata"]["resourceVersion"]
    names = [f"claim-{n}" for n in range(10)]

    def create(name: str) -> None:
        kubectl("apply", "-f", "-", stdin=session_manifest(name, namespace, poolRef={"name": "burst"}))

    with ThreadPoolExecutor(max_workers=10) as workers:
        list(workers.map(create, names))
    sessions = [wait_ready(kubectl, name, namespace, timeout=60) for name in names]
    warm = [s for s in sessions if s["status"]["launchType"] == "warm"]
    cold = [s for s in sessions if s["status"]["launchType"] == "cold"]
    assert len(warm) == 6 and len(cold) == 4
    assert len({s["status"]["spaceId"] for s in sessions}) == 10
    for session in cold:
        claim = condition(session, "WarmClaim") or {}
        assert claim.get("status") == "False" and "no ready Space" in claim.get("message", "")
    # While the claims landed, no Space ever had two claimants, and each warm session's was recorded.
    claimants: dict[str, set[str]] = {}
    for space_id, uid in claims_recorded(kubectl, "burst", namespace, before_claims):
        claimants.setdefault(space_id, set()).add(uid)
    assert all(len(uids) == 1 for uids in claimants.values()), claimants
    assert set().union(*claimants.values()) == {s["metadata"]["uid"] for s in warm}
    assert {s["status"]["spaceId"] for s in warm} == set(claimants)
    # Each warm session's Space ends up marked as its own, and only its own.
    for session in warm:
        uid = session["metadata"]["uid"]
        wait_for(lambda uid=uid: len(pool_spaces(hub_admin, uid)) == 1, 30, f"the marker of {uid}")


def test_kubectl_scale_resizes_the_pool_and_deleting_it_deletes_unclaimed_spaces(
    kubectl: Kubectl, hub_admin: HubSimAdmin, operator: OperatorProcess, namespace: str
) -> None:
    kubectl("apply", "-f", "-", stdin=pool_manifest("elastic", namespace, replicas=1))
    pool = wait_pool_ready(kubectl, "elastic", namespace, 1)
    uid = pool["metadata"]["uid"]
    kubectl("scale", "agsp/elastic", "-n", namespace, "--replicas=3")
    wait_pool_ready(kubectl, "elastic", namespace, 3)
    assert len(pool_spaces(hub_admin, uid)) == 3
    kubectl("scale", "agsp/elastic", "-n", namespace, "--replicas=2")
    wait_for(lambda: len(pool_spaces(hub_admin, uid)) == 2, 30, "the pool to shrink to 2 Spaces")
    path = (
        f"/apis/agents.sandbox-operator.dev/v1alpha1/namespaces/{namespace}/agentsessionpools/elastic/scale"
    )
    scale = json.loads(kubectl("get", "--raw", path).stdout)
    assert scale["spec"]["replicas"] == 2

    kubectl("apply", "-f", "-", stdin=session_manifest("keeper", namespace, poolRef={"name": "elastic"}))
    kept = wait_ready(kubectl, "keeper", namespace, timeout=30)
    assert kept["status"]["launchType"] == "warm"
    kubectl("delete", "agsp", "elastic", "-n", namespace, "--timeout=60s")
    assert get_pool(kubectl, "elastic", namespace) is None
    wait_for(lambda: pool_spaces(hub_admin, uid) == [], 30, "the pool's unclaimed Spaces to go")
    # The claimed Space is the session's: it stays, and goes with the session.
    assert kept["status"]["spaceId"] in {s["id"] for s in hub_admin.spaces()}
    kubectl("delete", "ags", "keeper", "-n", namespace, "--timeout=60s")
    assert kept["status"]["spaceId"] not in {s["id"] for s in hub_admin.spaces()}


def test_deleting_a_pools_namespace_finishes_without_its_key_and_deletes_its_spaces(
    kubectl: Kubectl, hub_admin: HubSimAdmin, operator: OperatorProcess, namespace: str
) -> None:
    """`kubectl delete namespace` deletes the pool's key Secret beside the pool, and nothing can be
    created there any more; an operator that has not read the key (here it was down meanwhile) still
    lets the namespace go, and deletes the pool's Spaces."""
    kubectl("apply", "-f", "-", stdin=pool_manifest("doomed", namespace, replicas=1))
    uid = wait_pool_ready(kubectl, "doomed", namespace, 1)["metadata"]["uid"]
    operator.stop()
    kubectl("delete", "namespace", namespace, "--wait=false")
    key = namespaced_path("v1", "secrets", namespace, f"doomed{POOL_TOKEN_SUFFIX}")
    wait_for(lambda: api_client(kubectl).get(key) is None, 60, "the namespace's Secrets deleted")
    operator.start()
    wait_for(lambda: get_pool(kubectl, "doomed", namespace) is None, 60, "the pool's finalizer to finish")
    assert pool_spaces(hub_admin, uid) == []


def test_a_session_naming_a_missing_pool_is_created_cold(
    kubectl: Kubectl, operator: OperatorProcess, namespace: str
) -> None:
    kubectl("apply", "-f", "-", stdin=session_manifest("lonely", namespace, poolRef={"name": "nowhere"}))
    session = wait_ready(kubectl, "lonely", namespace)
    assert session["status"]["launchType"] == "cold"
    assert (condition(session, "WarmClaim") or {}).get("reason") == "PoolNotFound"


EDITOR_ROLE = "sandbox-operator-session-editor"


def test_a_pool_lends_neither_its_secrets_nor_a_way_around_the_policy(
    kubectl: Kubectl, hub_admin: HubSimAdmin, operator: OperatorProcess, namespace: str, approval_policy: None
) -> None:
    """Hostile: mallory edits sessions in the namespace and may not read the Secret the platform's pool
    injects into its Spaces. A claimed Space runs her code beside that secret, so she must get none."""
    kubectl("create", "secret", "generic", "db-password", "-n", namespace, "--from-literal=password=hunter2")
    kubectl("create", "rolebinding", "mallory-edits", "-n", namespace, f"--clusterrole={EDITOR_ROLE}",
            "--user=mallory")  # fmt: skip
    secret = {"name": "DB", "secretKeyRef": {"name": "db-password", "key": "password"}}
    # She may not make a pool of her own (the chart grants session editors sessions only).
    own = kubectl("apply", "-f", "-", "--as=mallory", stdin=pool_manifest("mine", namespace), check=False)
    assert own.returncode != 0 and "forbidden" in own.stderr
    kubectl("apply", "-f", "-", stdin=pool_manifest("secretive", namespace, replicas=2, secrets=[secret]))
    pool = wait_pool_ready(kubectl, "secretive", namespace, 2)
    assert all(s["secrets"]["DB"] == "hunter2" for s in pool_spaces(hub_admin, pool["metadata"]["uid"]))
    before_mallory = pool["metadata"]["resourceVersion"]

    # Naming the pool without its secrets: no pooled Space, a Space of her own without them.
    plain = session_manifest("sneaky", namespace, poolRef={"name": "secretive"})
    kubectl("apply", "-f", "-", "--as=mallory", stdin=plain)
    session = wait_ready(kubectl, "sneaky", namespace)
    assert session["status"]["launchType"] == "cold"
    assert (condition(session, "WarmClaim") or {}).get("reason") == "PoolMismatch"
    assert "DB" not in hub_admin.space(session["status"]["spaceId"])["secrets"]
    # Naming them too: the API server refuses her, as for any session.
    named = session_manifest("sneakier", namespace, poolRef={"name": "secretive"}, secrets=[secret])
    refused = kubectl("apply", "-f", "-", "--as=mallory", stdin=named, check=False)
    assert refused.returncode != 0 and "db-password" in refused.stderr
    # Not one of the pool's statuses written since she came (if any) recorded a claim.
    assert claims_recorded(kubectl, "secretive", namespace, before_mallory) == []
    assert ((get_pool(kubectl, "secretive", namespace) or {}).get("status") or {}).get("claimed") == 0

    # Someone who may read the Secret names it and claims a pooled Space.
    trusted = session_manifest("trusted", namespace, poolRef={"name": "secretive"}, secrets=[secret])
    kubectl("apply", "-f", "-", stdin=trusted)
    assert wait_ready(kubectl, "trusted", namespace, timeout=30)["status"]["launchType"] == "warm"


def test_a_pool_status_written_from_a_stale_read_is_refused(
    control_plane: ControlPlane,
    kubectl: Kubectl,
    operator: OperatorProcess,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The claim's guarantee: a status write carries the resourceVersion it was decided on, and the
    API server refuses it once anyone else wrote in between (a second claimer, a stale leader)."""
    kubectl("apply", "-f", "-", stdin=pool_manifest("cas", namespace, replicas=0))
    wait_pool_ready(kubectl, "cas", namespace, 0)
    monkeypatch.setenv("KUBECONFIG", str(control_plane.kubeconfig))  # the operator's own login
    book = PoolBook()

    async def race() -> None:
        body = await read_pool(book, namespace, "cas")
        assert body is not None
        version = body["metadata"]["resourceVersion"]
        status = api.AgentSessionPoolStatus.model_validate(body.get("status", {}))
        await write_pool_status(book, namespace, "cas", version, status.model_copy(update={"claimed": 1}))
        with pytest.raises(ApiError) as refused:  # decided on the same read: someone wrote since
            await write_pool_status(book, namespace, "cas", version, status.model_copy(update={"claimed": 2}))
        assert refused.value.status == 409
        await book.close()

    asyncio.run(race())
    assert (get_pool(kubectl, "cas", namespace) or {})["status"]["claimed"] == 1


def test_a_pool_whose_secrets_change_retires_its_spaces_and_claims_get_only_new_ones(
    kubectl: Kubectl, hub_admin: HubSimAdmin, operator: OperatorProcess, namespace: str, approval_policy: None
) -> None:
    """Hostile: a pool that drops a Secret must not hand out the Spaces built while it named it, to a
    session whose author may not read that Secret; they are replaced, then deleted."""
    kubectl("create", "secret", "generic", "db-password", "-n", namespace, "--from-literal=password=hunter2")
    secret = {"name": "DB", "secretKeyRef": {"name": "db-password", "key": "password"}}
    kubectl("apply", "-f", "-", stdin=pool_manifest("moving", namespace, replicas=2, secrets=[secret]))
    pool = wait_pool_ready(kubectl, "moving", namespace, 2)
    uid = pool["metadata"]["uid"]
    old = {s["id"] for s in pool_spaces(hub_admin, uid)}
    assert len(old) == 2

    patch = json.dumps({"spec": {"secrets": None}})
    kubectl("patch", "agsp", "moving", "-n", namespace, "--type=merge", "-p", patch)
    # A claim right after the change (before the pool's loop may have run) gets no Space built for the
    # old spec: a new one, or one of its own.
    kubectl("apply", "-f", "-", stdin=session_manifest("early", namespace, poolRef={"name": "moving"}))
    early = wait_ready(kubectl, "early", namespace, timeout=60)
    assert early["status"]["spaceId"] not in old
    assert "DB" not in hub_admin.space(early["status"]["spaceId"])["secrets"]

    # Replacements are built for the new spec, then the old Spaces are deleted.
    pool = wait_pool_ready(kubectl, "moving", namespace, 2)
    wait_for(lambda: old.isdisjoint(s["id"] for s in hub_admin.spaces()), 30, "the old Spaces deleted")
    fresh = pool_spaces(hub_admin, uid)
    assert len(fresh) == 2 and all("DB" not in s["secrets"] for s in fresh)
    kubectl("apply", "-f", "-", stdin=session_manifest("later", namespace, poolRef={"name": "moving"}))
    later = wait_ready(kubectl, "later", namespace, timeout=30)
    assert later["status"]["launchType"] == "warm" and later["status"]["spaceId"] in {s["id"] for s in fresh}


def test_a_pool_key_made_anew_rolls_the_pools_spaces_and_a_claim_answers_the_new_token(
    kubectl: Kubectl, hub_admin: HubSimAdmin, operator: OperatorProcess, namespace: str
) -> None:
    """The key's Secret is deleted (here while no operator runs, the way a restart meets it; a running
    operator reads it again on its next full pass) and the operator makes a new key: the Spaces built
    with tokens of the old key are replaced like those of an earlier spec, never handed out with a
    token they reject, and a claim afterwards is Ready with a token its sandbox answers."""
    kubectl("apply", "-f", "-", stdin=pool_manifest("rekeyed", namespace, replicas=2))
    pool = wait_pool_ready(kubectl, "rekeyed", namespace, 2)
    old = {s["id"] for s in pool_spaces(hub_admin, pool["metadata"]["uid"])}
    old_key = secret_data(kubectl, "rekeyed-pool-token", namespace)["token"]

    operator.stop()
    kubectl("delete", "secret", "rekeyed-pool-token", "-n", namespace)
    operator.start()

    def rolled() -> dict[str, Any] | None:
        found = get_pool(kubectl, "rekeyed", namespace) or {}
        ready = {e["spaceId"] for e in (found.get("status") or {}).get("spaces", []) if e["state"] == "Ready"}
        done = (found.get("status") or {}).get("ready") == 2 and len(ready) == 2 and ready.isdisjoint(old)
        return found if done and (condition(found, "Ready") or {}).get("status") == "True" else None

    pool = wait_for(rolled, 90, "the pool's Spaces rebuilt with the new key")
    key = secret_data(kubectl, "rekeyed-pool-token", namespace)["token"]
    assert key != old_key
    wait_for(lambda: old.isdisjoint(s["id"] for s in hub_admin.spaces()), 30, "the old Spaces deleted")

    # The roll is seen as the pool's Ready condition going False (PoolFilling), then True again. Event
    # times have whole seconds, so the last two may share one; Events follow their status write.
    def rolled_events() -> bool:
        events = events_of(kubectl, "rekeyed", namespace)
        filling = [event_time(e) for e in events if e["reason"] == "PoolFilling"]
        ready = [event_time(e) for e in events if e["reason"] == "PoolReady"]
        return len(filling) == 2 and bool(ready) and max(ready) >= max(filling)

    wait_for(rolled_events, 30, "a second PoolFilling Event, then PoolReady")

    kubectl("apply", "-f", "-", stdin=session_manifest("after", namespace, poolRef={"name": "rekeyed"}))
    session = wait_ready(kubectl, "after", namespace, timeout=30)
    status = session["status"]
    assert status["launchType"] == "warm" and status["spaceId"] not in old
    connection = secret_data(kubectl, status["connectionSecret"], namespace)
    assert connection["token"] == core.pooled_token(key, status["spaceId"])
    assert health(connection["sandboxUrl"], connection["token"]) == 200
