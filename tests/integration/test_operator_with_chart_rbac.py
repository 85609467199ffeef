"""The operator with the chart's RBAC and nothing more takes a session from apply to Ready to deleted.

It authenticates with a TokenRequest token of the chart's ServiceAccount, as its pod would. A
second run removes one verb from the rendered rules and shows the scenario then fails, so the
first run cannot pass because the permissions are never checked. A control plane of its own:
the session's shared operator (cluster-admin, cluster-wide) must not act here.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox_testbench.controlplane import ControlPlane, Kubectl
from sandbox_testbench.dev import install_crd
from sandbox_testbench.hubsim import HubSimServer
from tests.support import wait_for
from tests.support.harness import (
    OWNER,
    READ_TOKEN_SECRET,
    TEMPLATE,
    OperatorProcess,
    get_session,
    install_read_token,
    running_control_plane,
    session_manifest,
    wait_ready,
)
from tests.support.helm_chart import REQUIRED_VALUES, Helm, merged, rbac_objects

RELEASE = "so"
RELEASE_NAMESPACE = "sandbox-operator"


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with running_control_plane(tmp_path_factory.mktemp("rbac-plane")) as started:
        install_crd(started)
        started.kubectl()("create", "namespace", RELEASE_NAMESPACE)
        install_read_token(started, RELEASE_NAMESPACE)
        yield started


def chart_rbac(plane: ControlPlane, tmp_path: Path) -> list[dict[str, Any]]:
    values = merged(
        REQUIRED_VALUES,
        {
            "defaultOwner": OWNER,
            "defaultTemplate": TEMPLATE,
            "hub": {"readToken": {"existingSecret": READ_TOKEN_SECRET}},
        },
    )
    helm = Helm(plane.bin_dir / "helm", tmp_path / "helm")
    return rbac_objects(helm, values, release=RELEASE, namespace=RELEASE_NAMESPACE)


def without_verb(objects: list[dict[str, Any]], resource: str, verb: str) -> list[dict[str, Any]]:
    """The same objects with one verb taken out of the rule that grants it (the rule goes if emptied)."""
    trimmed = copy.deepcopy(objects)
    for obj in trimmed:
        for rule in obj.get("rules", []):
            if resource in rule.get("resources", []) and verb in rule["verbs"]:
                rule["verbs"].remove(verb)
                obj["rules"] = [kept for kept in obj["rules"] if kept["verbs"]]
                return trimmed
    raise AssertionError(f"no rule grants {verb} on {resource}")


def lease_of(rbac: list[dict[str, Any]]) -> str:
    """The one Lease the chart's leader-election Role lets the operator renew."""
    (name,) = [
        lease
        for obj in rbac
        for rule in obj.get("rules", [])
        if "leases" in rule["resources"]
        for lease in rule.get("resourceNames", [])
    ]
    return str(name)


def run_scenario(
    plane: ControlPlane, hub: HubSimServer, rbac: list[dict[str, Any]], tmp_path: Path, namespace: str
) -> tuple[Kubectl, OperatorProcess]:
    admin = plane.kubectl()
    admin("apply", "-f", "-", stdin="\n---\n".join(json.dumps(obj) for obj in rbac))
    account = next(obj for obj in rbac if obj["kind"] == "ServiceAccount")["metadata"]["name"]
    kubeconfig = plane.service_account_kubeconfig(tmp_path / "sa.kubeconfig", RELEASE_NAMESPACE, account)
    operator = OperatorProcess(
        kubeconfig,
        hub.url,
        tmp_path,
        # As the chart's pod: its namespace holds the Lease, named as the chart names it for the release.
        SANDBOX_OPERATOR_OPERATOR_NAMESPACE=RELEASE_NAMESPACE,
        SANDBOX_OPERATOR_LEASE_NAME=lease_of(rbac),
    )
    admin("create", "namespace", namespace)
    operator.start()
    admin("apply", "-f", "-", stdin=session_manifest("agent", namespace))
    return admin, operator


def denied(log: str) -> bool:
    """Whether the log shows the API server refusing the operator something (HTTP reason Forbidden,
    as our calls and kopf's log it), not merely the digits 403: a timestamp's milliseconds or the
    cluster id (a UUID) may hold them."""
    return re.search(r"Forbidden|\(403\)|status=403\b", log) is not None


def test_chart_rbac_is_enough_for_the_whole_lifecycle(
    plane: ControlPlane, hub: HubSimServer, tmp_path: Path
) -> None:
    admin, operator = run_scenario(plane, hub, chart_rbac(plane, tmp_path), tmp_path, "team-ok")
    try:
        session = wait_ready(admin, "agent", "team-ok")
        space_id = session["status"]["spaceId"]
        assert hub.admin.space(space_id)["private"] is True
        admin("delete", "ags", "agent", "-n", "team-ok", "--timeout=60s")
        assert get_session(admin, "agent", "team-ok") is None
        assert space_id not in [space["id"] for space in hub.admin.spaces()]
        assert not denied(operator.logs())
    finally:
        operator.stop()


@pytest.mark.parametrize(("resource", "verb"), [("agentsessions/status", "patch"), ("secrets", "create")])
def test_one_verb_less_and_the_session_never_gets_ready(
    plane: ControlPlane, hub: HubSimServer, tmp_path: Path, resource: str, verb: str
) -> None:
    namespace = f"team-no-{verb}-{resource.replace('/', '-')}"
    rbac = without_verb(chart_rbac(plane, tmp_path), resource, verb)
    admin, operator = run_scenario(plane, hub, rbac, tmp_path, namespace)
    try:
        wait_for(
            lambda: denied(operator.logs()),
            60,
            f"a 403 on {verb} {resource}",
        )
        session = get_session(admin, "agent", namespace)
        ready = [c for c in (session or {}).get("status", {}).get("conditions", []) if c["type"] == "Ready"]
        assert not ready or ready[0]["status"] != "True"
    finally:
        operator.stop()
        admin("delete", "namespace", namespace, "--wait=false")
