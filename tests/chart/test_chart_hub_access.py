"""The chart's leader Lease is the CLI's; the Hub read token for agent pods; sleep time and Hub timeout."""

from __future__ import annotations

import base64
from typing import Any

import yaml

from sandbox_operator.config.settings import DEFAULT_LEASE_NAME, DEFAULT_OPERATOR_NAMESPACE, OperatorConfig
from sandbox_operator.k8s.lease import LeaseSettings
from tests.support.helm_chart import (
    CHART,
    REQUIRED_VALUES,
    Helm,
    by_kind,
    container_env,
    merged,
    one,
    permissions,
)


def env(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return {name: entry.get("value") for name, entry in container_env(one(objects, "Deployment")).items()}


def test_the_charts_lease_is_the_one_the_cli_finds_by_default(helm: Helm) -> None:
    """`helm install sandbox-operator ... -n sandbox-operator` (docs/operations.md) and a hand-run `run`."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["leaderElection"]["leaseName"] == ""  # the release's full name
    rendered = env(
        helm.render(REQUIRED_VALUES, release="sandbox-operator", namespace=DEFAULT_OPERATOR_NAMESPACE)
    )
    assert rendered["SANDBOX_OPERATOR_LEASE_NAME"] == DEFAULT_LEASE_NAME
    assert rendered["SANDBOX_OPERATOR_LEASE_NAMESPACE"] == DEFAULT_OPERATOR_NAMESPACE
    assert rendered["SANDBOX_OPERATOR_OPERATOR_NAMESPACE"] == DEFAULT_OPERATOR_NAMESPACE


def test_each_release_has_a_lease_of_its_own(helm: Helm) -> None:
    """Releases sharding a cluster, even in one namespace, never contend for one Lease."""
    leases = {
        release: env(helm.render(REQUIRED_VALUES, release=release, namespace=DEFAULT_OPERATOR_NAMESPACE))[
            "SANDBOX_OPERATOR_LEASE_NAME"
        ]
        for release in ("sandbox-operator-team-a", "sandbox-operator-team-b", "so")
    }
    assert leases == {
        "sandbox-operator-team-a": "sandbox-operator-team-a",
        "sandbox-operator-team-b": "sandbox-operator-team-b",
        "so": "so-sandbox-operator",
    }
    named = merged(REQUIRED_VALUES, {"leaderElection": {"leaseName": "shard-x"}})
    assert env(helm.render(named, release="so"))["SANDBOX_OPERATOR_LEASE_NAME"] == "shard-x"


def test_the_default_hub_timeout_fits_in_the_lease(helm: Helm) -> None:
    timeout = float(env(helm.render(REQUIRED_VALUES))["SANDBOX_OPERATOR_HUB_TIMEOUT"])
    assert timeout == OperatorConfig().hub_timeout
    LeaseSettings(DEFAULT_LEASE_NAME, DEFAULT_OPERATOR_NAMESPACE, "pod").check_hub_timeout(timeout)


def test_sleep_time_defaults_are_the_operators(helm: Helm) -> None:
    rendered = env(helm.render(REQUIRED_VALUES))
    assert int(rendered["SANDBOX_OPERATOR_SLEEP_TIME_DEFAULT"]) == OperatorConfig().sleep_time_default
    assert int(rendered["SANDBOX_OPERATOR_SLEEP_TIME_MAX"]) == OperatorConfig().sleep_time_max


def test_no_read_token_by_default(helm: Helm) -> None:
    objects = helm.render(REQUIRED_VALUES, release="so", namespace="ops")
    assert env(objects)["SANDBOX_OPERATOR_HUB_READ_TOKEN_SECRET"] == ""
    assert not [
        role for role in by_kind(objects, "Role") if role["metadata"]["name"].endswith("hub-read-token")
    ]


def test_a_read_token_is_kept_in_its_own_secret_readable_by_name_only(helm: Helm) -> None:
    objects = helm.render(
        merged(REQUIRED_VALUES, {"hub": {"readToken": {"token": "hf_read"}}}), release="so", namespace="ops"
    )
    rendered = env(objects)
    name = rendered["SANDBOX_OPERATOR_HUB_READ_TOKEN_SECRET"]
    assert (name, rendered["SANDBOX_OPERATOR_HUB_READ_TOKEN_KEY"]) == (
        "so-sandbox-operator-hub-read",
        "token",
    )
    (secret,) = [s for s in by_kind(objects, "Secret") if s["metadata"]["name"] == name]
    assert base64.b64decode(secret["data"]["token"]).decode() == "hf_read"
    (role,) = [r for r in by_kind(objects, "Role") if r["metadata"]["name"].endswith("hub-read-token")]
    assert role["metadata"]["namespace"] == "ops"
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [name], "verbs": ["get"]}
    ]
    assert permissions(role["rules"]) == {("", "secrets", "get")}


def test_an_existing_read_token_secret_is_referenced_not_rendered(helm: Helm) -> None:
    values = merged(
        REQUIRED_VALUES, {"hub": {"readToken": {"existingSecret": "org-reader", "existingSecretKey": "hf"}}}
    )
    objects = helm.render(values, release="so", namespace="ops")
    rendered = env(objects)
    assert (
        rendered["SANDBOX_OPERATOR_HUB_READ_TOKEN_SECRET"],
        rendered["SANDBOX_OPERATOR_HUB_READ_TOKEN_KEY"],
    ) == (
        "org-reader",
        "hf",
    )
    assert all(s["metadata"]["name"] != "org-reader" for s in by_kind(objects, "Secret"))


def test_two_read_token_sources_are_refused(helm: Helm) -> None:
    values = merged(REQUIRED_VALUES, {"hub": {"readToken": {"token": "hf_read", "existingSecret": "x"}}})
    result = helm.template(values, check=False)
    assert result.returncode != 0
    assert "hub.readToken.token and hub.readToken.existingSecret are both set" in result.stderr
