"""The chart's PrometheusRule: valid for Prometheus' own checker (`promtool check rules`), each alert's
expression firing on series shaped like the operator's (`promtool test rules`), every metric it reads
one the operator exports."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from sandbox_operator.observability import metrics
from tests.support.helm_chart import REQUIRED_VALUES, Helm, merged, one

ALERTS = merged(REQUIRED_VALUES, {"metrics": {"enabled": True, "prometheusRule": {"enabled": True}}})
#: The job label of the release "so" as the chart's ServiceMonitor scrapes it: the rules' default selector.
JOB = 'job="so-sandbox-operator-metrics"'
OTHER_JOB = 'job="another-release-metrics"'


def rule_groups(helm: Helm, values: dict[str, Any]) -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = one(helm.render(values), "PrometheusRule")["spec"]["groups"]
    return groups


def alerts(helm: Helm, values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for group in rule_groups(helm, values) for rule in group["rules"]}


def write_rules(helm: Helm, tmp_path: Path, values: dict[str, Any]) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule_groups(helm, values)}))
    return path


def run(promtool: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(promtool), *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "values",
    [ALERTS, merged(ALERTS, {"metrics": {"prometheusRule": {"selector": 'service="so", tier!="test"'}}})],
    ids=["default-selector", "own-selector"],
)
def test_promtool_accepts_the_rules(
    helm: Helm, promtool: Path, tmp_path: Path, values: dict[str, Any]
) -> None:
    result = run(promtool, "check", "rules", str(write_rules(helm, tmp_path, values)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(SCENARIOS)} rules found" in result.stdout + result.stderr


def test_no_rule_unless_enabled(helm: Helm) -> None:
    assert not [obj for obj in helm.render(REQUIRED_VALUES) if obj["kind"] == "PrometheusRule"]


def test_thresholds_severities_and_labels_come_from_the_values(helm: Helm) -> None:
    values = merged(
        ALERTS,
        {
            "metrics": {
                "prometheusRule": {
                    "labels": {"release": "kube-prometheus"},
                    "alertLabels": {"team": "platform"},
                    "approvalWaiting": {"seconds": 600, "severity": "critical"},
                    "hubRateLimited": {"count": 3, "window": "30m"},
                    "sessionsStalled": {"for": "1h"},
                }
            }
        },
    )
    rule = one(helm.render(values), "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus"
    found = alerts(helm, values)
    assert found["SandboxOperatorApprovalWaiting"]["expr"].endswith("> 600")
    assert found["SandboxOperatorApprovalWaiting"]["labels"] == {"severity": "critical", "team": "platform"}
    assert "[30m]" in found["SandboxOperatorHubRateLimited"]["expr"]
    assert found["SandboxOperatorHubRateLimited"]["expr"].endswith("> 3")
    assert found["SandboxOperatorSessionsStalled"]["for"] == "1h"
    for alert in found.values():
        assert {"summary", "description"} <= alert["annotations"].keys()
        assert "What to do:" in alert["annotations"]["description"]
        assert alert["labels"]["team"] == "platform"


def test_every_metric_the_rules_read_is_one_the_operator_exports(helm: Helm) -> None:
    exported = {
        family.name + ("_total" if family.type == "counter" else "")
        for wrapper in vars(metrics).values()
        if isinstance(wrapper, MetricWrapperBase)
        for family in wrapper.describe()
    }
    read = {
        name
        for alert in alerts(helm, ALERTS).values()
        for name in re.findall(r"\bsandbox_operator_\w+", alert["expr"])
    }
    assert len(read) == len(SCENARIOS)  # one metric each
    assert read - exported == set()


def series(metric: str, values: str, job: str = JOB, **labels: str) -> dict[str, str]:
    """An input series of `promtool test rules`: sandbox_operator_<metric>, one sample a minute."""
    matchers = ",".join([job, *(f'{key}="{value}"' for key, value in labels.items())])
    return {"series": f"sandbox_operator_{metric}{{{matchers}}}", "values": values}


#: Series shaped like the operator's (another release's beside them), and what each alert's expression
#: returns at some times: the label sets it fires for (its value replaced by 1: who fires is compared).
SCENARIOS: dict[str, tuple[list[dict[str, str]], list[tuple[str, list[str]]]]] = {
    "SandboxOperatorApprovalWaiting": (
        [  # waiting since Unix time 0 (the test's start), and since 50 minutes later
            series("pending_approval_oldest_timestamp_seconds", "0x120", namespace="a"),
            series("pending_approval_oldest_timestamp_seconds", "3000x120", namespace="b"),
            series("pending_approval_oldest_timestamp_seconds", "0x120", OTHER_JOB, namespace="c"),
        ],
        [("59m", []), ("61m", ['{namespace="a"}'])],
    ),
    "SandboxOperatorHubRateLimited": (
        [
            series("hub_calls_total", "0+10x60", route="space", code="200"),
            series("hub_calls_total", "0x20 1x40", route="space", code="429"),
            series("hub_calls_total", "0+1x60", OTHER_JOB, route="space", code="429"),
        ],
        [("15m", []), ("25m", ["{}"]), ("60m", [])],
    ),
    "SandboxOperatorEdgeRefusingProbes": (
        [
            series("edge_probes_total", "0+100x60", answer="other"),
            series("edge_probes_total", "0x20 40x40", answer="refused"),
            series("edge_probes_total", "0+5x60", OTHER_JOB, answer="refused"),
        ],
        [("15m", []), ("25m", ["{}"]), ("60m", [])],
    ),
    "SandboxOperatorOrphansSwept": (
        [series("orphans_swept_total", "0x30 2x100"), series("orphans_swept_total", "0+1x130", OTHER_JOB)],
        [("20m", []), ("40m", ["{}"]), ("125m", [])],
    ),
    "SandboxOperatorBudgetExhausted": (
        [
            series("sessions_budget_exhausted", "0x5 2x10", namespace="a"),
            series("sessions_budget_exhausted", "0x15", namespace="b"),
            series("sessions_budget_exhausted", "1x15", OTHER_JOB, namespace="c"),
        ],
        [("2m", []), ("10m", ['{namespace="a"}'])],
    ),
    "SandboxOperatorSessionsStalled": (
        [
            series("sessions_stalled", "0x15", namespace="a"),
            series("sessions_stalled", "0x5 1x10", namespace="b"),
            series("sessions_stalled", "1x15", OTHER_JOB, namespace="c"),
        ],
        [("2m", []), ("10m", ['{namespace="b"}'])],
    ),
}


def test_each_alert_fires_for_this_releases_series_past_its_threshold_only(
    helm: Helm, promtool: Path, tmp_path: Path
) -> None:
    found = alerts(helm, ALERTS)
    assert found.keys() == SCENARIOS.keys()
    tests = [
        {
            "name": name,
            "interval": "1m",
            "input_series": series,
            "promql_expr_test": [
                {
                    "expr": f"({found[name]['expr']}) * 0 + 1",
                    "eval_time": at,
                    "exp_samples": [{"labels": labels, "value": 1} for labels in firing],
                }
                for at, firing in checks
            ],
        }
        for name, (series, checks) in SCENARIOS.items()
    ]
    rules = write_rules(helm, tmp_path, ALERTS)
    unit = tmp_path / "tests.yaml"
    unit.write_text(yaml.safe_dump({"rule_files": [rules.name], "evaluation_interval": "1m", "tests": tests}))
    result = run(promtool, "test", "rules", str(unit))
    assert result.returncode == 0, result.stdout + result.stderr
