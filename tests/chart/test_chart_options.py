"""The chart against the one definition of the operator's options (config/settings.py): the Deployment sets
every option the chart may set and nothing else, and its defaults are the model's."""

from __future__ import annotations

from typing import Any

import pytest

from sandbox_operator.cli.main import run
from sandbox_operator.config.settings import OperatorConfig, OptionSpec, RunSettings, options_of
from tests.support.helm_chart import REQUIRED_VALUES, Helm, container_env, merged, one

OPTIONS: list[OptionSpec] = options_of(OperatorConfig) + options_of(RunSettings)
# Read by libraries, not by the `run` command.
LIBRARY_ENV = {"HF_HOME"}
# Every optional setting the Deployment renders conditionally turned on.
ALL_ON = merged(
    REQUIRED_VALUES,
    {
        "budget": {"maxUsdPerHour": 2.5, "maxBudgetUsd": 100},
        "approval": {"maxDuration": 3600},
        "metrics": {"enabled": True},
    },
)
# Options the chart sets from the release, the pod or a Secret rather than from a default, and the
# required template: the only ones whose rendered value may differ from the model's default.
NOT_DEFAULTS = {
    "hub_token",
    "default_template",
    "operator_namespace",
    "lease_name",
    "lease_namespace",
    "identity",
}


def rendered_env(helm: Helm, values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    env = container_env(one(helm.render(values), "Deployment"))
    return {name: entry for name, entry in env.items() if name not in LIBRARY_ENV}


def test_every_option_is_set_by_the_chart_and_every_env_is_an_option(helm: Helm) -> None:
    env = rendered_env(helm, ALL_ON).keys()
    wanted = {spec.env for spec in OPTIONS if spec.in_chart}
    assert None not in wanted, "an option the chart sets needs an environment variable"
    assert wanted - env == set(), "options the chart does not set"
    assert env - wanted == set(), "env of the Deployment that is no option of the chart"


def test_options_kept_out_of_the_chart_have_no_environment_variable() -> None:
    """A development switch is a flag typed by hand, never something a cluster's env can turn on."""
    kept_out = [spec for spec in OPTIONS if not spec.in_chart]
    assert {spec.name for spec in kept_out} >= {"insecure_trust_approvals"}
    assert [spec.env for spec in kept_out if spec.env is not None] == []


def test_the_charts_defaults_are_the_models(helm: Helm, monkeypatch: pytest.MonkeyPatch) -> None:
    """The chart's default values, read by `run` as the operator reads them, give the model's defaults."""
    for name, entry in rendered_env(helm, merged(REQUIRED_VALUES, {"metrics": {"enabled": True}})).items():
        monkeypatch.setenv(name, entry.get("value", "from-the-cluster"))
    params = run.make_context("run", []).params
    for spec in OPTIONS:
        if spec.name in NOT_DEFAULTS:
            continue
        model = OperatorConfig if spec.name in OperatorConfig.model_fields else RunSettings
        parsed = model.model_validate({spec.name: params[spec.name]})
        assert getattr(parsed, spec.name) == spec.field.default, f"{spec.env}: the chart's default differs"
