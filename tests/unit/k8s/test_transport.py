"""The operator's own Kubernetes transport (k8s/transport.py): kopf's credentials, a fresh login on a 401
(a rotated token), `ApiError` with the API server's status, reason and message, a bounded pool, and the
operator's name on every call and write. That only the approver imports the official client is an import
contract (pyproject.toml, `make lint`)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from sandbox_operator import __version__
from sandbox_operator.k8s.client import KubeClient
from sandbox_operator.k8s.transport import COMPONENT, ApiError, KubeApi


def _kubeconfig(path: Path, server: str, token: str) -> None:
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "test",
                "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
                "clusters": [{"name": "test", "cluster": {"server": server}}],
                "users": [{"name": "test", "user": {"token": token}}],
            }
        )
    )


@asynccontextmanager
async def _server(handler: Callable[[web.Request], Any]) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def _status(code: int, reason: str, message: str) -> web.Response:
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "message": message}
    return web.json_response(body, status=code)


def test_a_rotated_token_is_read_again_once_on_a_401(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "kubeconfig"
    monkeypatch.setenv("KUBECONFIG", str(config))
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        if request.headers.get("Authorization") != "Bearer new":
            return _status(401, "Unauthorized", "Unauthorized")
        return web.json_response({"metadata": {"uid": "u-1"}})

    async def scenario() -> None:
        async with _server(handler) as server:
            _kubeconfig(config, server, "old")
            kube = KubeApi()
            try:
                with pytest.raises(ApiError) as refused:  # still the old token after the new login
                    await kube.read_namespace("kube-system")
                assert refused.value.status == 401
                assert seen == ["Bearer old", "Bearer old"]
                _kubeconfig(config, server, "new")  # the token was rotated
                assert (await kube.read_namespace("kube-system"))["metadata"]["uid"] == "u-1"
                assert seen[2:] == ["Bearer old", "Bearer new"]
            finally:
                await kube.close()

    asyncio.run(scenario())


def test_an_api_error_carries_status_reason_and_the_servers_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "kubeconfig"
    monkeypatch.setenv("KUBECONFIG", str(config))
    received: list[tuple[str, str, str, str]] = []

    async def handler(request: web.Request) -> web.Response:
        received.append(
            (request.method, request.path_qs, request.headers.get("Content-Type", ""), await request.text())
        )
        return _status(409, "Conflict", "Operation cannot be fulfilled: the object has been modified")

    async def scenario() -> None:
        async with _server(handler) as server:
            _kubeconfig(config, server, "t")
            kube = KubeApi()
            try:
                with pytest.raises(ApiError) as refused:
                    await kube.patch_namespaced_custom_object_status(
                        "g.dev", "v1", "team a", "things", "x", {"status": {"a": None}}
                    )
            finally:
                await kube.close()
        error = refused.value
        assert (error.status, error.reason) == (409, "Conflict")
        assert error.message == "Operation cannot be fulfilled: the object has been modified"
        assert str(error) == f"(409) Conflict: {error.message}"

    asyncio.run(scenario())
    # A merge patch (null removes a field), to the status subresource, every path part quoted.
    assert received == [
        ("PATCH", "/apis/g.dev/v1/namespaces/team%20a/things/x/status?fieldManager=sandbox-operator",
         "application/merge-patch+json", '{"status":{"a":null}}'),
    ]  # fmt: skip


def test_every_call_names_the_operator_and_every_write_its_field_manager(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """managedFields name the operator (not `Python`, aiohttp's User-Agent), and so do its Events."""
    config = tmp_path / "kubeconfig"
    monkeypatch.setenv("KUBECONFIG", str(config))
    seen: list[tuple[str, str | None, str]] = []
    posted: list[Any] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(
            (request.method, request.query.get("fieldManager"), request.headers.get("User-Agent", ""))
        )
        if request.path.endswith("/events"):
            posted.append(await request.json())
        return web.json_response({"metadata": {"name": "x", "resourceVersion": "1"}, "items": []})

    async def scenario() -> None:
        async with _server(handler) as server:
            _kubeconfig(config, server, "t")
            kube = KubeApi()
            client = KubeClient(kube, instance="sandbox-operator-7d9f-abcde")
            try:
                await kube.read_namespaced_secret("s", "ns")
                await kube.create_namespaced_secret("ns", {"metadata": {"name": "s"}})
                await kube.replace_namespaced_secret("s", "ns", {"metadata": {"name": "s"}})
                await kube.patch_namespaced_custom_object_status(
                    "g", "v1", "ns", "things", "x", {"status": {}}
                )
                await kube.patch_namespaced_lease("l", "ns", {"spec": {}})
                await kube.delete_namespaced_custom_object("g", "v1", "ns", "things", "x")
                await client.post_event(
                    involved={
                        "apiVersion": "g/v1",
                        "kind": "Thing",
                        "namespace": "ns",
                        "name": "x",
                        "uid": "u",
                    },
                    type_="Normal",
                    reason="Seen",
                    message="seen",
                )
            finally:
                await kube.close()

    asyncio.run(scenario())
    assert {agent for _, _, agent in seen} == {f"sandbox-operator/{__version__}"}
    assert [(method, manager) for method, manager, _ in seen] == [
        ("GET", None),
        ("POST", COMPONENT),
        ("PUT", COMPONENT),
        ("PATCH", COMPONENT),
        ("PATCH", COMPONENT),
        ("DELETE", None),
        ("POST", COMPONENT),
    ]
    (event,) = posted
    assert event["source"] == {"component": COMPONENT}
    assert (event["reportingComponent"], event["reportingInstance"]) == (
        COMPONENT,
        "sandbox-operator-7d9f-abcde",
    )


def test_no_answer_is_an_api_error_without_status(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "kubeconfig"
    monkeypatch.setenv("KUBECONFIG", str(config))
    _kubeconfig(config, "http://127.0.0.1:9", "t")  # the discard port: nothing listens

    async def scenario() -> ApiError:
        kube = KubeApi()
        try:
            with pytest.raises(ApiError) as failed:
                await kube.read_namespace("kube-system")
            return failed.value
        finally:
            await kube.close()

    assert asyncio.run(scenario()).status == 0


def test_calls_at_once_share_a_bounded_pool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "kubeconfig"
    monkeypatch.setenv("KUBECONFIG", str(config))
    peers: set[int] = set()
    busy = 0
    most = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal busy, most
        assert request.transport is not None
        peers.add(request.transport.get_extra_info("peername")[1])
        busy += 1
        most = max(most, busy)
        await asyncio.sleep(0.02)
        busy -= 1
        return web.json_response({"items": []})

    async def scenario() -> None:
        async with _server(handler) as server:
            _kubeconfig(config, server, "t")
            kube = KubeApi(connections=3)
            try:
                await asyncio.gather(*(kube.list_cluster_custom_object("g", "v1", "p") for _ in range(30)))
            finally:
                await kube.close()

    asyncio.run(scenario())
    assert most <= 3 and len(peers) <= 3  # kept connections, never more than the pool's limit
