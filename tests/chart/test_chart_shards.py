"""Two releases sharding one cluster, as docs/sharding.md installs them (both
in the namespace sandbox-operator): no object of one is an object of the other, each has its own
Lease, and each may act only in its own namespaces."""

from __future__ import annotations

from typing import Any

from tests.support.helm_chart import REQUIRED_VALUES, Helm, container_env, merged, one, rbac_objects

NAMESPACE = "sandbox-operator"
SHARDS: dict[str, dict[str, Any]] = {
    "sandbox-operator-team-a": merged(
        REQUIRED_VALUES,
        {
            "watchNamespaces": ["team-a", "team-a-ci"],
            "hub": {"token": "", "existingSecret": "hf-token-team-a"},
        },
    ),
    "sandbox-operator-team-b": merged(
        REQUIRED_VALUES,
        {
            "watchNamespaces": ["team-b"],
            "hub": {"token": "", "existingSecret": "hf-token-team-b"},
            "approval": {"enabled": False},
        },
    ),
}


def keys(objects: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]) for o in objects}


def test_two_releases_in_one_namespace_share_no_object(helm: Helm) -> None:
    a, b = (keys(helm.render(values, release=name, namespace=NAMESPACE)) for name, values in SHARDS.items())
    assert a & b == set()


def test_each_release_has_its_lease_and_acts_only_in_its_namespaces(helm: Helm) -> None:
    for release, values in SHARDS.items():
        env = container_env(one(helm.render(values, release=release, namespace=NAMESPACE), "Deployment"))
        assert env["SANDBOX_OPERATOR_LEASE_NAME"]["value"] == release
        assert env["SANDBOX_OPERATOR_NAMESPACES"]["value"] == ",".join(values["watchNamespaces"])
        rbac = rbac_objects(helm, values, release=release, namespace=NAMESPACE)
        roles = [o for o in rbac if o["kind"] == "Role"]
        assert {o["metadata"]["namespace"] for o in roles} == {*values["watchNamespaces"], NAMESPACE}
        leases = {
            name for o in roles for rule in o["rules"] if "leases" in rule["resources"]
            for name in rule.get("resourceNames", [])
        }  # fmt: skip
        assert leases == {release}
        # Cluster-wide, only the reads no Role can grant (each release its own ClusterRole).
        assert [o["metadata"]["name"] for o in rbac if o["kind"] == "ClusterRole"] == [
            f"{release}-cluster-reads"
        ]
