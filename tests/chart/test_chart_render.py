"""The chart as `helm lint` and `helm template` see it: objects, RBAC, security context, schema."""

from __future__ import annotations

import base64
import json
import re
import tomllib
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from sandbox_operator.api import GROUP, PLURAL, Hardware
from tests.support.helm_chart import (
    CHART,
    CI_VALUES,
    CLUSTER_READ_PERMISSIONS,
    LEADER_ELECTION_PERMISSIONS,
    OPERATOR_PERMISSIONS,
    REPO,
    REQUIRED_VALUES,
    Helm,
    by_kind,
    container_env,
    merged,
    one,
    permissions,
    rbac_objects,
)

EXISTING_SECRET = merged(
    REQUIRED_VALUES,
    {"hub": {"token": "", "existingSecret": "hub-credentials", "existingSecretKey": "hf-token"}},
)
NAMESPACED = merged(REQUIRED_VALUES, {"watchNamespaces": ["team-a", "team-b"]})
METRICS = merged(REQUIRED_VALUES, {"metrics": {"enabled": True, "serviceMonitor": {"enabled": True}}})
# Every optional setting set, so every env var the chart can render appears.
EVERYTHING = merged(
    REQUIRED_VALUES,
    {
        "hub": {"endpoint": "https://hub.example.test/", "rate": 0.5, "burst": 5},
        "sweeper": {
            "interval": 0,
            "grace": 60,
            "maxDeletes": 3,
            "owners": ["acme", "acme-ci"],
            "dryRun": True,
        },
        "defaultOwner": "acme",
        "clusterId": "prod-eu",
        "freeHardware": ["cpu-basic", "cpu-upgrade"],
        "pollInterval": 0.5,
        "resyncInterval": 600,
        "logFormat": "json",
        "budget": {"maxUsdPerHour": 2.5, "maxBudgetUsd": 100, "spendInterval": 30},
        "metrics": {"enabled": True},
    },
)
NETWORK_POLICY = merged(
    REQUIRED_VALUES,
    {"networkPolicy": {"enabled": True, "apiServer": {"cidrs": ["10.96.0.1/32", "192.0.2.10/32"]}}},
)
VALUE_SETS = {
    "defaults": REQUIRED_VALUES,
    "existing-secret": EXISTING_SECRET,
    "namespaced": NAMESPACED,
    "metrics": METRICS,
    "everything": EVERYTHING,
    "network-policy": NETWORK_POLICY,
    **CI_VALUES,
}
# Kubernetes objects passed through whole; the chart README documents each as one value.
OPAQUE_VALUES = {"podSecurityContext", "securityContext", "resources"}
#: The chart's values.yaml, its defaults.
CHART_VALUES: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())


def deployment(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return one(objects, "Deployment")


def pod_spec(objects: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = deployment(objects)["spec"]["template"]["spec"]
    return spec


def env_values(objects: list[dict[str, Any]]) -> dict[str, str | None]:
    return {name: entry.get("value") for name, entry in container_env(deployment(objects)).items()}


@pytest.mark.parametrize("name", ["agentsessions.yaml", "agentsessionpools.yaml"])
def test_chart_crd_is_the_generated_crd(name: str) -> None:
    chart_crd = (CHART / "crds" / name).read_bytes()
    generated = (REPO / "crds" / name).read_bytes()
    assert chart_crd == generated, f"run: cp crds/{name} charts/sandbox-operator/crds/"


def test_versions_agree() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == chart["version"] == project["version"]


@pytest.mark.parametrize("name", VALUE_SETS)
def test_lint_strict(helm: Helm, name: str) -> None:
    result = helm(
        "lint", "--strict", str(CHART), "--values", str(helm.values_file(VALUE_SETS[name])), check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_plain_lint_passes_on_the_charts_own_defaults(helm: Helm) -> None:
    """`helm lint charts/sandbox-operator`, no flags: the values an install requires are checked by the
    templates (which lint lets pass with a note), not by the schema, which would fail it."""
    result = helm("lint", str(CHART), check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_ci_values_cover_the_minimal_install_and_the_hardened_one() -> None:
    assert set(CI_VALUES) >= {"minimal-values.yaml", "hardened-values.yaml"}
    assert CI_VALUES["minimal-values.yaml"].keys() == REQUIRED_VALUES.keys()


def test_defaults_render_the_operator(helm: Helm) -> None:
    objects = helm.render(REQUIRED_VALUES, release="so", namespace="ops")
    deploy = deployment(objects)
    spec = deploy["spec"]
    assert spec["replicas"] == 1
    # The new pod of an update stands by for the Lease beside the old one, never acting beside it.
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    template_labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= template_labels.items()
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    for obj in objects:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "sandbox-operator"
        assert labels["app.kubernetes.io/instance"] == "so"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/version"] == chart["appVersion"]
        assert labels["helm.sh/chart"] == f"sandbox-operator-{chart['version']}"
    (container,) = spec["template"]["spec"]["containers"]
    assert container["image"] == f"sandbox-operator:{chart['appVersion']}"
    assert (
        spec["template"]["spec"]["serviceAccountName"] == one(objects, "ServiceAccount")["metadata"]["name"]
    )
    assert not by_kind(objects, "Service")
    assert not by_kind(objects, "ServiceMonitor")
    env = env_values(objects)
    assert env["HF_ENDPOINT"] == "https://huggingface.co"
    assert env["SANDBOX_OPERATOR_DEFAULT_TEMPLATE"] == "sandbox-templates/agent-sandbox"
    assert env["SANDBOX_OPERATOR_DEFAULT_OWNER"] == ""
    assert env["SANDBOX_OPERATOR_NAMESPACES"] == ""
    assert env["SANDBOX_OPERATOR_CLUSTER_ID"] == ""  # derived from the kube-system namespace's UID
    assert env["SANDBOX_OPERATOR_ALLOWED_TEMPLATES"] == env["SANDBOX_OPERATOR_ALLOWED_OWNERS"] == ""
    assert env["SANDBOX_OPERATOR_ALLOW_PUBLIC_SPACES"] == "false"
    assert env["SANDBOX_OPERATOR_FREE_HARDWARE"] == "cpu-basic"
    assert not {"SANDBOX_OPERATOR_MAX_USD_PER_HOUR", "SANDBOX_OPERATOR_MAX_BUDGET_USD"} & env.keys()
    assert env["SANDBOX_OPERATOR_METRICS_PORT"] == "0"  # off
    assert env["SANDBOX_OPERATOR_LEASE_NAMESPACE"] == "ops"


def test_hub_token_comes_from_the_charts_secret(helm: Helm) -> None:
    objects = helm.render(REQUIRED_VALUES)
    secret = one(objects, "Secret")
    ref = container_env(deployment(objects))["HF_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == secret["metadata"]["name"]
    assert base64.b64decode(secret["data"][ref["key"]]).decode() == "hf_x"
    # The pod reads the token only at start; a new token must roll it.
    assert "checksum/hub-token" in deployment(objects)["spec"]["template"]["metadata"]["annotations"]


def test_existing_secret_is_referenced_not_rendered(helm: Helm) -> None:
    objects = helm.render(EXISTING_SECRET)
    assert not by_kind(objects, "Secret")
    ref = container_env(deployment(objects))["HF_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "hub-credentials", "key": "hf-token"}


def test_security_context_is_restricted(helm: Helm) -> None:
    spec = pod_spec(helm.render(REQUIRED_VALUES))
    pod_context = spec["securityContext"]
    assert pod_context["runAsNonRoot"] is True
    assert isinstance(pod_context["runAsUser"], int) and pod_context["runAsUser"] > 0
    assert isinstance(pod_context["runAsGroup"], int) and pod_context["runAsGroup"] > 0
    assert pod_context["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = spec["containers"]
    context = container["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["runAsNonRoot"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "privileged" not in context
    # The only writable place is an emptyDir at /tmp, where HF_HOME points.
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    (mount,) = container["volumeMounts"]
    assert mount["mountPath"] == "/tmp"
    assert "emptyDir" in volumes[mount["name"]]
    hf_home = next(entry["value"] for entry in container["env"] if entry["name"] == "HF_HOME")
    assert hf_home == "/tmp/hf-home"
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= container["resources"][kind].keys()


@pytest.mark.parametrize(
    ("probe", "option", "path", "port"),
    [
        ("livenessProbe", "SANDBOX_OPERATOR_LIVENESS", "/healthz", 8080),
        ("readinessProbe", "SANDBOX_OPERATOR_READINESS", "/readyz", 8081),
    ],
)
def test_each_probe_hits_the_endpoint_the_operator_serves_for_it(
    helm: Helm, probe: str, option: str, path: str, port: int
) -> None:
    objects = helm.render(REQUIRED_VALUES)
    (container,) = pod_spec(objects)["containers"]
    served = urlsplit(env_values(objects)[option] or "")
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    get = container[probe]["httpGet"]
    assert get["path"] == served.path == path
    assert ports[get["port"]] == served.port == port


def test_image_pinned_by_digest_ignores_the_tag(helm: Helm) -> None:
    digest = "sha256:" + "ab" * 32
    values = merged(
        REQUIRED_VALUES, {"image": {"repository": "registry.test/so", "tag": "1.2.3", "digest": digest}}
    )
    (container,) = pod_spec(helm.render(values))["containers"]
    assert container["image"] == f"registry.test/so@{digest}"


def test_ephemeral_storage_is_requested_and_bounded_above_tmp_and_the_logs(helm: Helm) -> None:
    spec = pod_spec(helm.render(REQUIRED_VALUES))
    (container,) = spec["containers"]
    storage = {kind: container["resources"][kind]["ephemeral-storage"] for kind in ("requests", "limits")}
    (tmp,) = [volume for volume in spec["volumes"] if volume["name"] == "tmp"]
    # The limit holds a full /tmp and the kubelet's default log files (5 x 10Mi) beside it.
    assert mebibytes(storage["limits"]) >= mebibytes(tmp["emptyDir"]["sizeLimit"]) + 50
    assert 0 < mebibytes(storage["requests"]) <= mebibytes(storage["limits"])


def mebibytes(quantity: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}
    return float(quantity[:-2]) * units[quantity[-2:]]


def test_no_network_policy_unless_enabled(helm: Helm) -> None:
    assert not by_kind(helm.render(REQUIRED_VALUES), "NetworkPolicy")


def test_network_policy_allows_dns_the_api_server_and_the_hub_out_and_the_probes_in(helm: Helm) -> None:
    monitoring = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    values = merged(
        NETWORK_POLICY, {"metrics": {"enabled": True}, "networkPolicy": {"ingressFrom": monitoring}}
    )
    objects = helm.render(values)
    policy = one(objects, "NetworkPolicy")["spec"]
    assert (
        policy["podSelector"]["matchLabels"].items()
        <= deployment(objects)["spec"]["template"]["metadata"]["labels"].items()
    )
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    dns, api_server, hub = policy["egress"]
    assert {(port["port"], port["protocol"]) for port in dns["ports"]} == {(53, "UDP"), (53, "TCP")}
    assert dns["to"] == CHART_VALUES["networkPolicy"]["dns"]
    assert api_server["to"] == [{"ipBlock": {"cidr": "10.96.0.1/32"}}, {"ipBlock": {"cidr": "192.0.2.10/32"}}]
    assert {port["port"] for port in api_server["ports"]} == {443, 6443}
    assert hub["to"] == CHART_VALUES["networkPolicy"]["hub"]["to"]
    assert [port["port"] for port in hub["ports"]] == [443]
    (ingress,) = policy["ingress"]
    assert ingress["from"] == monitoring
    (container,) = pod_spec(objects)["containers"]
    assert {port["port"] for port in ingress["ports"]} == {
        port["containerPort"] for port in container["ports"]
    }


def test_network_policy_without_sources_admits_no_one(helm: Helm) -> None:
    assert one(helm.render(NETWORK_POLICY), "NetworkPolicy")["spec"]["ingress"] == []


def test_network_policy_extra_egress_rules_are_appended(helm: Helm) -> None:
    proxy = {"to": [{"ipBlock": {"cidr": "192.0.2.80/32"}}], "ports": [{"port": 3128, "protocol": "TCP"}]}
    values = merged(NETWORK_POLICY, {"networkPolicy": {"extraEgress": [proxy]}})
    assert one(helm.render(values), "NetworkPolicy")["spec"]["egress"][-1] == proxy


def assert_leader_election_role(objects: list[dict[str, Any]], namespace: str, lease: str) -> None:
    """The Lease permissions, in the release namespace only, bound to the operator."""
    service_account = one(objects, "ServiceAccount")["metadata"]["name"]
    leases = [
        role
        for role in by_kind(objects, "Role")
        if ("coordination.k8s.io", "leases", "get") in permissions(role["rules"])
    ]
    (role,) = leases
    assert role["metadata"]["namespace"] == namespace
    assert permissions(role["rules"]) == LEADER_ELECTION_PERMISSIONS
    # Only `create` and `list` go unnamed (RBAC cannot name what does not exist yet, nor a listing);
    # the rest is the one Lease.
    for rule in role["rules"]:
        assert rule.get("resourceNames", [lease]) == [lease]
        assert ("resourceNames" in rule) == (rule["verbs"] != ["create", "list"])
    (binding,) = [
        binding
        for binding in by_kind(objects, "RoleBinding")
        if binding["roleRef"]
        == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]}
    ]
    assert binding["metadata"]["namespace"] == namespace
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": service_account, "namespace": namespace}
    ]


def test_cluster_wide_rbac_is_exactly_the_operators_calls(helm: Helm) -> None:
    values = REQUIRED_VALUES
    objects = rbac_objects(helm, values, release="so", namespace="ops")
    assert_cluster_reads(objects)
    (role,) = [
        r for r in by_kind(objects, "ClusterRole") if not r["metadata"]["name"].endswith(CLUSTER_READS)
    ]
    (binding,) = [
        b for b in by_kind(objects, "ClusterRoleBinding") if not b["metadata"]["name"].endswith(CLUSTER_READS)
    ]
    assert permissions(role["rules"]) == OPERATOR_PERMISSIONS
    assert all("resourceNames" not in rule for rule in role["rules"])
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    service_account = one(objects, "ServiceAccount")["metadata"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": service_account["name"], "namespace": "ops"}
    ]
    lease = env_values(helm.render(values, release="so", namespace="ops"))["SANDBOX_OPERATOR_LEASE_NAME"]
    assert_leader_election_role(objects, "ops", lease or "")


CLUSTER_READS = "-cluster-reads"


def assert_cluster_reads(objects: list[dict[str, Any]]) -> None:
    """The cluster-scoped reads: by name wherever the object is known in advance."""
    (role,) = [r for r in by_kind(objects, "ClusterRole") if r["metadata"]["name"].endswith(CLUSTER_READS)]
    (binding,) = [
        b for b in by_kind(objects, "ClusterRoleBinding") if b["metadata"]["name"].endswith(CLUSTER_READS)
    ]
    assert permissions(role["rules"]) == CLUSTER_READ_PERMISSIONS
    named = {rule["resources"][0]: rule.get("resourceNames") for rule in role["rules"]}
    assert named["validatingadmissionpolicies"] == ["sandbox-operator-approval"]
    assert named["namespaces"] == ["kube-system"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]


def test_namespaced_watch_grants_roles_only_in_watched_namespaces(helm: Helm) -> None:
    values = NAMESPACED
    objects = rbac_objects(helm, values, release="so", namespace="ops")
    assert_cluster_reads(objects)  # the only cluster-wide grant: reads, each as narrow as RBAC allows
    assert [r["metadata"]["name"] for r in by_kind(objects, "ClusterRole")] == [
        f"so-sandbox-operator{CLUSTER_READS}"
    ]
    lease = env_values(helm.render(values, release="so", namespace="ops"))["SANDBOX_OPERATOR_LEASE_NAME"]
    assert_leader_election_role(objects, "ops", lease or "")
    roles = {role["metadata"]["namespace"]: role for role in by_kind(objects, "Role")}
    roles.pop("ops")
    bindings = {binding["metadata"]["namespace"]: binding for binding in by_kind(objects, "RoleBinding")}
    bindings.pop("ops")
    assert roles.keys() == bindings.keys() == {"team-a", "team-b"}
    service_account = one(objects, "ServiceAccount")["metadata"]["name"]
    for namespace, role in roles.items():
        assert permissions(role["rules"]) == OPERATOR_PERMISSIONS
        binding = bindings[namespace]
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["roleRef"]["name"] == role["metadata"]["name"]
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": service_account, "namespace": "ops"}
        ]
    assert env_values(helm.render(NAMESPACED))["SANDBOX_OPERATOR_NAMESPACES"] == "team-a,team-b"


def test_the_session_quota_caps_sessions_in_each_namespace_it_names(helm: Helm) -> None:
    counted = f"count/{PLURAL}.{GROUP}"
    assert by_kind(helm.render(NAMESPACED), "ResourceQuota") == []  # none unless asked for
    quotas = by_kind(helm.render(merged(NAMESPACED, {"sessionQuota": {"perNamespace": 50}})), "ResourceQuota")
    assert {quota["metadata"]["namespace"]: quota["spec"]["hard"] for quota in quotas} == {
        "team-a": {counted: "50"},
        "team-b": {counted: "50"},
    }
    listed = {"sessionQuota": {"perNamespace": 0, "namespaces": ["tenant-x"]}}
    (quota,) = by_kind(helm.render(merged(REQUIRED_VALUES, listed)), "ResourceQuota")
    assert quota["metadata"]["namespace"] == "tenant-x" and quota["spec"]["hard"] == {counted: "0"}
    # Cluster-wide with no namespace named: the README's example is applied by hand.
    assert (
        by_kind(helm.render(merged(REQUIRED_VALUES, {"sessionQuota": {"perNamespace": 5}})), "ResourceQuota")
        == []
    )


def test_leader_election_can_be_turned_off(helm: Helm) -> None:
    objects = helm.render(merged(REQUIRED_VALUES, {"leaderElection": {"enabled": False}}))
    leases = ("coordination.k8s.io", "leases", "create")
    assert all(leases not in permissions(role["rules"]) for role in by_kind(objects, "Role"))
    assert not {name for name in env_values(objects) if name.startswith("SANDBOX_OPERATOR_LEASE_")}
    (container,) = pod_spec(objects)["containers"]
    assert container["args"] == ["--lease-name="]
    assert deployment(objects)["spec"]["strategy"] == {"type": "Recreate"}  # never two pods at once


def test_rbac_helper_ignores_roles_not_bound_to_the_operator(helm: Helm) -> None:
    """rbac_objects follows the bindings of the operator's ServiceAccount, not object kinds."""
    everything = helm.render(REQUIRED_VALUES)
    operator = rbac_objects(helm, REQUIRED_VALUES)
    bound = {(obj["kind"], obj["metadata"]["name"]) for obj in operator}
    service_account = one(everything, "ServiceAccount")["metadata"]["name"]
    for binding in by_kind(everything, "ClusterRoleBinding") + by_kind(everything, "RoleBinding"):
        names = {subject["name"] for subject in binding["subjects"] if subject["kind"] == "ServiceAccount"}
        assert ((binding["kind"], binding["metadata"]["name"]) in bound) == (service_account in names)


def test_metrics_service_and_service_monitor(helm: Helm) -> None:
    objects = helm.render(METRICS)
    service = one(objects, "Service")
    monitor = one(objects, "ServiceMonitor")
    (container,) = pod_spec(objects)["containers"]
    pod_labels = deployment(objects)["spec"]["template"]["metadata"]["labels"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    (service_port,) = service["spec"]["ports"]
    assert ports[service_port["targetPort"]] == service_port["port"] == 9090
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [service["metadata"]["namespace"]]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == service_port["name"]
    assert endpoint["honorLabels"] is True  # a session's `namespace` label is kept, not renamed
    assert env_values(objects)["SANDBOX_OPERATOR_METRICS_PORT"] == "9090"


def test_settings_reach_the_operators_env(helm: Helm) -> None:
    env = env_values(helm.render(EVERYTHING))
    assert env["HF_ENDPOINT"] == "https://hub.example.test/"
    assert env["SANDBOX_OPERATOR_DEFAULT_OWNER"] == "acme"
    assert env["SANDBOX_OPERATOR_CLUSTER_ID"] == "prod-eu"
    assert env["SANDBOX_OPERATOR_FREE_HARDWARE"] == "cpu-basic,cpu-upgrade"
    assert float(env["SANDBOX_OPERATOR_POLL_INTERVAL"] or "") == 0.5
    assert float(env["SANDBOX_OPERATOR_RESYNC_INTERVAL"] or "") == 600
    assert env["SANDBOX_OPERATOR_LOG_FORMAT"] == "json"
    assert float(env["SANDBOX_OPERATOR_MAX_USD_PER_HOUR"] or "") == 2.5
    assert float(env["SANDBOX_OPERATOR_MAX_BUDGET_USD"] or "") == 100
    assert float(env["SANDBOX_OPERATOR_SPEND_INTERVAL"] or "") == 30
    assert float(env["SANDBOX_OPERATOR_HUB_RATE"] or "") == 0.5
    assert env["SANDBOX_OPERATOR_HUB_BURST"] == "5"
    assert float(env["SANDBOX_OPERATOR_SWEEP_INTERVAL"] or "") == 0
    assert float(env["SANDBOX_OPERATOR_SWEEP_GRACE"] or "") == 60
    assert env["SANDBOX_OPERATOR_SWEEP_MAX_DELETES"] == "3"
    assert env["SANDBOX_OPERATOR_SWEEP_OWNERS"] == "acme,acme-ci"
    assert env["SANDBOX_OPERATOR_SWEEP_DRY_RUN"] == "true"
    assert env["SANDBOX_OPERATOR_METRICS_PORT"] == "9090"


def test_free_hardware_schema_lists_every_flavor() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["properties"]["freeHardware"]["items"]["enum"] == [flavor.value for flavor in Hardware]


BAD_VALUES = {
    "empty template": ({"defaultTemplate": ""}, "defaultTemplate is required"),
    "template without owner": ({"defaultTemplate": "agent-sandbox"}, "at '/defaultTemplate'"),
    "unknown top-level key": ({"replicaCount": 2}, "additional properties 'replicaCount' not allowed"),
    "misspelled budget key": ({"budget": {"maxUSDPerHour": 1}}, "additional properties 'maxUSDPerHour'"),
    "negative hourly budget": ({"budget": {"maxUsdPerHour": -1}}, "at '/budget/maxUsdPerHour': minimum"),
    "negative total budget": ({"budget": {"maxBudgetUsd": -0.01}}, "at '/budget/maxBudgetUsd': minimum"),
    "budget as text": ({"budget": {"maxBudgetUsd": "ten"}}, "at '/budget/maxBudgetUsd'"),
    "unknown flavor": ({"freeHardware": ["cpu-basic", "gpu"]}, "at '/freeHardware/1': value must be one of"),
    "flavors as a string": ({"freeHardware": "cpu-basic"}, "at '/freeHardware'"),
    "no free flavor": ({"freeHardware": []}, "at '/freeHardware': minItems"),
    "flag as text": ({"metrics": {"enabled": "yes"}}, "at '/metrics/enabled'"),
    "bad namespace": ({"watchNamespaces": ["Team_A"]}, "at '/watchNamespaces/0'"),
    "endpoint without scheme": ({"hub": {"endpoint": "huggingface.co"}}, "at '/hub/endpoint'"),
    "bad pull policy": ({"image": {"pullPolicy": "Sometimes"}}, "at '/image/pullPolicy'"),
    "digest without algorithm": ({"image": {"digest": "0123abcd"}}, "at '/image/digest'"),
    "API server by name": (
        {"networkPolicy": {"enabled": True, "apiServer": {"cidrs": ["kubernetes.default"]}}},
        "at '/networkPolicy/apiServer/cidrs/0'",
    ),
    "alert window without unit": (
        {"metrics": {"prometheusRule": {"hubRateLimited": {"window": "15"}}}},
        "at '/metrics/prometheusRule/hubRateLimited/window'",
    ),
    "zero poll interval": ({"pollInterval": 0}, "at '/pollInterval'"),
    "negative resync interval": ({"resyncInterval": -1}, "at '/resyncInterval'"),
    "negative spend interval": ({"budget": {"spendInterval": -5}}, "at '/budget/spendInterval'"),
    "no Hub burst": ({"hub": {"burst": 0}}, "at '/hub/burst'"),
    "fractional deletes": ({"sweeper": {"maxDeletes": 1.5}}, "at '/sweeper/maxDeletes'"),
    "bad sweep owner": ({"sweeper": {"owners": ["a/b"]}}, "at '/sweeper/owners/0'"),
    "unknown log format": ({"logFormat": "yaml"}, "at '/logFormat'"),
    # Rules across keys, which the chart's templates check.
    "no token": ({"hub": {"token": ""}}, "hub.token or hub.existingSecret is required"),
    "two tokens": ({"hub": {"existingSecret": "creds"}}, "hub.token and hub.existingSecret are both set"),
    "monitor without metrics": (
        {"metrics": {"serviceMonitor": {"enabled": True}}},
        "metrics.serviceMonitor.enabled needs metrics.enabled",
    ),
    "metrics on the liveness port": (
        {"metrics": {"enabled": True, "port": 8080}},
        "metrics.port must not be 8080",
    ),
    "metrics on the readiness port": (
        {"metrics": {"enabled": True, "port": 8081}},
        "metrics.port must not be 8081",
    ),
    "alerts without metrics": (
        {"metrics": {"prometheusRule": {"enabled": True}}},
        "metrics.prometheusRule.enabled needs metrics.enabled",
    ),
    "network policy without the API server": (
        {"networkPolicy": {"enabled": True}},
        "networkPolicy.apiServer.cidrs is required",
    ),
}


@pytest.mark.parametrize("case", BAD_VALUES)
def test_bad_values_are_rejected_naming_the_field(helm: Helm, case: str) -> None:
    values, message = BAD_VALUES[case]
    result = helm.template(merged(REQUIRED_VALUES, values), check=False)
    assert result.returncode != 0, f"accepted: {values}"
    assert message in result.stderr


def test_readme_documents_every_value() -> None:
    """Each leaf of values.yaml is a row of the README's values table."""

    def leaves(values: dict[str, Any], prefix: str = "") -> set[str]:
        found: set[str] = set()
        for key, value in values.items():
            path = f"{prefix}{key}"
            if isinstance(value, dict) and value and path not in OPAQUE_VALUES:
                found |= leaves(value, f"{path}.")
            else:
                found.add(path)
        return found

    rows = {
        line.split("|")[1].strip().strip("`")
        for line in (CHART / "README.md").read_text().splitlines()
        if line.startswith("| `")
    }
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert leaves(values) - rows == set()


def test_the_notes_list_every_key_of_the_connection_secret() -> None:
    from sandbox_operator.k8s import client as kube

    notes = (CHART / "templates" / "NOTES.txt").read_text()
    listed = re.search(r'connection Secret "demo-sandbox" \(keys ([^)]*)\)', notes)
    assert listed is not None, "NOTES.txt no longer names the connection Secret's keys"
    keys = {value for name, value in vars(kube).items() if name.startswith("KEY_")}
    assert sorted(listed.group(1).split(", ")) == sorted(keys)
