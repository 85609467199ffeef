"""Drift behind the operator's back is noticed from the owner's listing, within its interval.

The shared operator lists the owner's Spaces every second (SANDBOX_OPERATOR_OBSERVE_INTERVAL=1 in the
harness) and resyncs converged sessions only every 30 minutes (the default): whatever a test sees
repaired here was noticed by the listing, not by a per-session poll.
"""

from __future__ import annotations

import time
from typing import Any

from huggingface_hub import HfApi

from sandbox_testbench.controlplane import Kubectl
from sandbox_testbench.hubsim import HubSimAdmin, HubSimServer
from tests.support import wait_for
from tests.support.harness import (
    OPERATOR_TOKEN,
    OperatorProcess,
    get_session,
    session_manifest,
    spaces_of,
    wait_ready,
)

#: Well beyond the listing's interval (1 s) and a pass, far below the resync (1,800 s).
NOTICED_WITHIN = 20.0


def _routes(admin: HubSimAdmin, space_id: str | None = None) -> list[str]:
    return [c["route"] for c in admin.calls() if space_id is None or space_id in c["path"]]


def test_a_converged_session_reads_its_space_from_the_listing_not_the_hub(
    kubectl: Kubectl, hub_admin: HubSimAdmin, operator: OperatorProcess, namespace: str
) -> None:
    session = wait_ready_after_apply(kubectl, "quiet", namespace)
    space_id = session["status"]["spaceId"]
    time.sleep(1.5)  # the pass that made it Ready is over
    hub_admin.clear_calls()
    time.sleep(4)
    assert "list_spaces" in _routes(hub_admin)
    assert _routes(hub_admin, space_id) == [], "a converged session asked the Hub about its own Space"


def test_a_space_paused_behind_the_operators_back_is_restarted(
    kubectl: Kubectl, hub_admin: HubSimAdmin, operator: OperatorProcess, namespace: str
) -> None:
    session = wait_ready_after_apply(kubectl, "paused", namespace)
    space_id = session["status"]["spaceId"]
    hub_admin.set_stage(space_id, "PAUSED")
    paused_at = time.monotonic()
    wait_for(
        lambda: "restart" in _routes(hub_admin, space_id) or None,
        NOTICED_WITHIN,
        "the paused Space restarted",
    )
    assert time.monotonic() - paused_at < NOTICED_WITHIN
    wait_ready(kubectl, "paused", namespace, timeout=30)


def test_a_space_moved_to_paid_hardware_behind_the_operators_back_is_moved_back(
    kubectl: Kubectl, hub_admin: HubSimAdmin, operator: OperatorProcess, hub: HubSimServer, namespace: str
) -> None:
    session = wait_ready_after_apply(kubectl, "moved", namespace)
    space_id = session["status"]["spaceId"]
    HfApi(endpoint=hub.url, token=OPERATOR_TOKEN).request_space_hardware(space_id, "t4-small")  # type: ignore[arg-type]
    wait_for(
        lambda: hub_admin.space(space_id)["hardware"]["requested"] == "cpu-basic" or None,
        NOTICED_WITHIN,
        "the unapproved t4-small given up for cpu-basic",
    )
    wait_ready(kubectl, "moved", namespace, timeout=30)


def test_a_space_deleted_behind_the_operators_back_is_created_again(
    kubectl: Kubectl, hub_admin: HubSimAdmin, operator: OperatorProcess, hub: HubSimServer, namespace: str
) -> None:
    session = wait_ready_after_apply(kubectl, "deleted", namespace)
    uid = session["metadata"]["uid"]
    space_id = session["status"]["spaceId"]
    HfApi(endpoint=hub.url, token=OPERATOR_TOKEN).delete_repo(space_id, repo_type="space")
    wait_for(lambda: spaces_of(hub_admin, uid) or None, NOTICED_WITHIN, "the deleted Space created again")
    wait_ready(kubectl, "deleted", namespace, timeout=30)
    assert len(spaces_of(hub_admin, uid)) == 1
    current = get_session(kubectl, "deleted", namespace)
    assert current is not None and current["status"]["spaceId"] == space_id


def wait_ready_after_apply(kubectl: Kubectl, name: str, namespace: str) -> dict[str, Any]:
    kubectl("apply", "-f", "-", stdin=session_manifest(name, namespace))
    return wait_ready(kubectl, name, namespace)
