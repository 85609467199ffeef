"""A spec change costs the Hub only what it needs, and a deletion one call where the marker is known.

Counted on the emulator's call log: a tenant flapping a field that never reaches the Hub (a flavor
nobody approved, and back) makes its session observe each generation, from the owner's listing and
the sandbox's last health answer, without one call about its Space; deleting a session whose Space
was seen carrying its marker is one Hub call, the delete itself.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

from sandbox_testbench.controlplane import Kubectl
from sandbox_testbench.hubsim import HubSimAdmin
from tests.support import wait_for
from tests.support.harness import OperatorProcess, get_session, session_manifest, spaces_of, wait_ready


def _about(admin: HubSimAdmin, space_id: str, app: str) -> list[dict[str, Any]]:
    """Calls about one Space: the Hub API's routes that name it, and its app's (health) route."""
    return [c for c in admin.calls() if space_id in c["path"] or c["path"].startswith(app)]


def _observed(kubectl: Kubectl, name: str, namespace: str) -> bool:
    session = get_session(kubectl, name, namespace) or {}
    return bool((session.get("status") or {}).get("observedGeneration") == session["metadata"]["generation"])


def _sessions(kubectl: Kubectl) -> list[tuple[str, str]]:
    items = json.loads(kubectl("get", "ags", "-A", "-o", "json").stdout)["items"]
    return [(item["metadata"]["namespace"], item["metadata"]["name"]) for item in items]


def test_a_spec_flap_that_never_reaches_the_hub_asks_it_nothing(
    kubectl: Kubectl, hub_admin: HubSimAdmin, operator: OperatorProcess, namespace: str
) -> None:
    kubectl("apply", "-f", "-", stdin=session_manifest("flapper", namespace))
    session = wait_ready(kubectl, "flapper", namespace)
    space_id = session["status"]["spaceId"]
    app = urllib.parse.urlsplit(session["status"]["sandboxUrl"]).path
    wait_for(lambda: _observed(kubectl, "flapper", namespace), 30, "the pass that made it Ready to end")
    hub_admin.clear_calls()
    for flavor in ("t4-small", "cpu-basic") * 3:
        patch = json.dumps({"spec": {"hardware": flavor}})
        kubectl("patch", "ags", "flapper", "-n", namespace, "--type=merge", "-p", patch)
        wait_for(lambda: _observed(kubectl, "flapper", namespace), 30, f"the session to observe {flavor}")
    wait_ready(kubectl, "flapper", namespace)
    assert "list_spaces" in [c["route"] for c in hub_admin.calls()], "no listing ran meanwhile"
    assert _about(hub_admin, space_id, app) == [], "a spec flap asked the Hub or the sandbox again"


def test_deleting_a_session_whose_marker_was_seen_is_one_hub_call(
    kubectl: Kubectl, hub_admin: HubSimAdmin, operator: OperatorProcess, namespace: str
) -> None:
    kubectl("apply", "-f", "-", stdin=session_manifest("brief", namespace))
    session = wait_ready(kubectl, "brief", namespace)
    uid, space_id = session["metadata"]["uid"], session["status"]["spaceId"]
    assert session["status"]["spaceConfirmedTime"] and session["status"]["markerClusterId"]
    # Other tests' namespaces may still be going: their deletions would be counted with this one.
    wait_for(
        lambda: _sessions(kubectl) == [(namespace, "brief")] or None,
        120,
        "this test's session to be the only one",
    )
    hub_admin.clear_calls()
    kubectl("delete", "ags", "brief", "-n", namespace, "--timeout=60s")  # returns once the Space is gone
    assert spaces_of(hub_admin, uid) == []
    calls = [c for c in hub_admin.calls() if c["route"] not in ("list_spaces", "whoami")]
    assert [(c["route"], c["status"]) for c in calls] == [("delete", 200)], calls
    assert not any(space_id in c["path"] for c in calls)  # no marker read, no space_info
