"""A private Space's app behind the Hub's edge, reached with exactly what the connection Secret holds.

Dev mode as shipped (chart, read token, emulator, the operator with the chart's ServiceAccount):
the edge wants a Hub token that may read the Space in `Authorization`; the sandbox server reads
its own token from `X-Sandbox-Authorization`. The operator's own Hub token is never published.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from sandbox_operator.k8s.client import KEY_HUB_TOKEN, KEY_SANDBOX_URL, KEY_SPACE_ID, KEY_TOKEN
from sandbox_testbench.controlplane import Kubectl, find_binaries
from sandbox_testbench.dev import DEV_OUTSIDER_TOKEN, DEV_READ_TOKEN, DEV_TOKEN, dev_environment
from tests.support.harness import condition, get_session, session_manifest, wait_condition_reason, wait_ready


def _env(env_file: Path) -> dict[str, str]:
    """The variables env.sh exports (`export KEY='value'` lines)."""
    found: dict[str, str] = {}
    for line in env_file.read_text().splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        if key != "PATH":
            found[key] = value.strip("'")
    return found


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Kubectl, dict[str, str]]]:
    saved = dict(os.environ)  # dev mode sets the operator's environment in this process
    state = tmp_path_factory.mktemp("dev")
    try:
        with dev_environment(state, with_operator=True, build_seconds=0.2, hardware_seconds=0.2) as running:
            env = _env(running.env_file)
            yield Kubectl(find_binaries() / "kubectl", Path(env["KUBECONFIG"])), env
    finally:
        os.environ.clear()
        os.environ.update(saved)


def health(url: str, headers: dict[str, str]) -> httpx2.Response:
    return httpx2.get(f"{url}/health", headers=headers, timeout=10)


def test_agent_pods_reach_a_private_sandbox_with_exactly_the_connection_secret(
    dev: tuple[Kubectl, dict[str, str]],
) -> None:
    kubectl, env = dev
    namespace = f"edge-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", namespace)
    kubectl("apply", "-f", "-", stdin=session_manifest("demo", namespace))
    session = wait_ready(kubectl, "demo", namespace, timeout=90)
    access = condition(session, "AgentAccess")
    assert access is not None and (access["status"], access["reason"]) == ("True", "ReadTokenPublished")

    secret = kubectl.json("get", "secret", session["status"]["connectionSecret"], "-n", namespace)
    data = {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}
    assert set(data) == {KEY_SPACE_ID, KEY_SANDBOX_URL, KEY_TOKEN, KEY_HUB_TOKEN}
    # The read token, never the operator's own (which may create and delete Spaces).
    assert data[KEY_HUB_TOKEN] == DEV_READ_TOKEN
    assert DEV_TOKEN not in data.values() and env["HF_TOKEN"] not in data.values()

    url = data[KEY_SANDBOX_URL]
    both = {
        "Authorization": f"Bearer {data[KEY_HUB_TOKEN]}",
        "X-Sandbox-Authorization": f"Bearer {data[KEY_TOKEN]}",
    }
    ok = health(url, both)
    assert (ok.status_code, ok.json()["status"]) == (200, "ok")

    # The sandbox token in Authorization alone (what the operator sent before) is refused by the edge.
    assert health(url, {"Authorization": f"Bearer {data[KEY_TOKEN]}"}).status_code == 401
    assert health(url, {"X-Sandbox-Authorization": f"Bearer {data[KEY_TOKEN]}"}).status_code == 401
    # A Hub token that may not see the private Space: the edge says it does not exist.
    outsider = {**both, "Authorization": f"Bearer {DEV_OUTSIDER_TOKEN}"}
    assert health(url, outsider).status_code == 404
    # Past the edge, the sandbox checks its own token.
    wrong = {**both, "X-Sandbox-Authorization": "Bearer sbx_wrong"}
    assert health(url, wrong).status_code == 401


def test_a_private_session_without_a_read_token_says_agents_will_not_pass(
    dev: tuple[Kubectl, dict[str, str]],
) -> None:
    """A session that names a read token Secret that is missing: AgentAccess says why agents will not
    pass the edge, and the health check is not made with the operator's own token instead."""
    kubectl, _ = dev
    namespace = f"edge-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", namespace)
    manifest = json.loads(session_manifest("lost", namespace))
    manifest["spec"]["hubTokenSecretRef"] = {"name": "no-such-secret", "key": "token"}
    kubectl("apply", "-f", "-", stdin=json.dumps(manifest))
    access = wait_condition_reason(kubectl, "lost", namespace, "AgentAccess", "ReadTokenSecretNotFound", 90)
    assert access["status"] == "False"
    ready = wait_condition_reason(kubectl, "lost", namespace, "Ready", "HealthCheckFailing", 90)
    assert "the operator never sends its own token to a sandbox" in ready["message"]
    session = get_session(kubectl, "lost", namespace)
    assert session is not None
    secret = kubectl.json("get", "secret", session["status"]["connectionSecret"], "-n", namespace)
    assert base64.b64decode(secret["data"].get(KEY_HUB_TOKEN, "")).decode() == ""
