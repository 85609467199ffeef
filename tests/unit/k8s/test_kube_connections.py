"""Kopf's connections to the API server are bounded (its own pool has no limit, and a burst
of a thousand sessions opened hundreds of TLS connections: most of the operator's peak memory)."""

from __future__ import annotations

import asyncio

import kopf

from sandbox_operator.k8s.transport import USER_AGENT
from sandbox_operator.registry import KUBE_CONNECTIONS, bounded_session


def test_kopfs_api_pool_is_bounded_with_room_for_every_watch_stream() -> None:
    async def limit(watch_streams: int) -> tuple[int, str, str]:
        info = kopf.ConnectionInfo(server="https://127.0.0.1:6443", scheme="Bearer", token="t", insecure=True)
        context = bounded_session(info, watch_streams)
        assert isinstance(context, kopf.AiohttpSession)
        connector = context.aiohttp_session.connector
        assert connector is not None
        headers = context.aiohttp_session.headers
        await context.aiohttp_session.close()
        return connector.limit, headers.get("Authorization", ""), headers.get("User-Agent", "")

    # kopf keeps a session's own User-Agent: its writes (finalizers, annotations) name the operator.
    assert asyncio.run(limit(3)) == (KUBE_CONNECTIONS + 3, "Bearer t", USER_AGENT)
    assert asyncio.run(limit(0))[0] == KUBE_CONNECTIONS + 1  # clusterwide: one stream
    assert bounded_session(None, 0) is None
