"""Runners: the background-thread server and the blocking `serve()` used by the CLI."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable

import httpx2
import pytest

from sandbox_testbench.hubsim import HubSimConfig, HubSimServer


def test_server_start_stop() -> None:
    server = HubSimServer(HubSimConfig())
    with pytest.raises(RuntimeError):
        _ = server.url
    server.start()
    url = server.url
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
    assert httpx2.get(f"{url}/api/spaces").json() == []
    with pytest.raises(RuntimeError, match="already started"):
        server.start()
    server.stop()
    server.stop()
    with pytest.raises(httpx2.ConnectError):
        httpx2.get(f"{url}/api/spaces")


def test_busy_port_fails_start(hub: HubSimServer) -> None:
    port = int(hub.url.rsplit(":", 1)[1])
    with pytest.raises(RuntimeError, match="could not listen"):
        HubSimServer(HubSimConfig(), port=port).start()


def test_public_url_is_advertised(hub_factory: Callable[..., HubSimServer]) -> None:
    hub = hub_factory(public_url="http://hubsim.example:8080/")
    response = httpx2.get(f"{hub.url}/api/spaces/sandbox-templates/agent-sandbox")
    assert response.json()["host"] == "http://hubsim.example:8080/_sandbox/sandbox-templates-agent-sandbox"


def test_unknown_api_route_is_json_404_with_request_id(hub: HubSimServer) -> None:
    response = httpx2.get(f"{hub.url}/api/nope")
    assert response.status_code == 404
    assert "error" in response.json()
    assert response.headers["X-Request-Id"]
    assert hub.admin.calls()[-1]["route"] == "unknown"


def test_serve_logs_url_and_stops_on_sigterm() -> None:
    script = textwrap.dedent(
        """
        import logging
        from sandbox_testbench.hubsim import HubSimConfig, serve
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        serve(HubSimConfig(), "127.0.0.1", 0)
        """
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        match = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert match, line
        assert httpx2.get(f"{match.group(0)}/api/spaces/hardware").status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
