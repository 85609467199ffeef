"""`run`'s options are generated from the settings models; empty options are resolved before start."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from sandbox_operator import startup
from sandbox_operator.cli.main import main, run
from sandbox_operator.config.settings import OperatorConfig, RunSettings, options_of


def test_run_help_shows_every_option_with_its_flag_and_environment_variable() -> None:
    result = CliRunner().invoke(main, ["run", "--help"])
    assert result.exit_code == 0
    ctx = run.make_context("run", ["--help"], resilient_parsing=True)
    records = {param.name: param.get_help_record(ctx) for param in run.params}
    for spec in options_of(OperatorConfig) + options_of(RunSettings):
        record = records[spec.name]
        assert record is not None
        flags, help_text = record
        assert spec.flags[-1] in flags and spec.flags[-1] in result.output
        assert str(spec.field.description) in " ".join(help_text.split())
        if spec.env is None:
            assert "env var" not in help_text
        else:
            assert f"env var: {spec.env}" in help_text


def test_environment_values_parse_into_the_models() -> None:
    env = {
        "SANDBOX_OPERATOR_FREE_HARDWARE": "cpu-basic, t4-small,",
        "SANDBOX_OPERATOR_ALLOW_PUBLIC_SPACES": "false",
        "SANDBOX_OPERATOR_SWEEP_DRY_RUN": "true",
        "SANDBOX_OPERATOR_NAMESPACES": "team-a,team-b",
        "SANDBOX_OPERATOR_MAX_USD_PER_HOUR": "2.5",
        "HF_ENDPOINT": "https://hub.example.test/",
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        params: dict[str, Any] = dict(run.make_context("run", []).params)
    config = OperatorConfig.model_validate(
        {k: v for k, v in params.items() if k in OperatorConfig.model_fields}
    )
    settings = RunSettings.model_validate({k: v for k, v in params.items() if k in RunSettings.model_fields})
    assert config.free_hardware == {"cpu-basic", "t4-small"}
    assert (config.allow_public_spaces, config.sweep_dry_run) == (False, True)
    assert config.max_usd_per_hour == 2.5
    assert config.hub_endpoint == "https://hub.example.test"
    assert settings.namespaces == ("team-a", "team-b")


def test_a_value_the_model_refuses_is_a_usage_error() -> None:
    args = ["run", "--default-template", "t/t", "--sleep-time-default", "7200", "--sleep-time-max", "3600"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert "sleep_time_default must not exceed sleep_time_max" in result.output


def test_the_template_is_required() -> None:
    result = CliRunner().invoke(main, ["run"], env={"SANDBOX_OPERATOR_DEFAULT_TEMPLATE": ""})
    assert result.exit_code == 2
    assert "--default-template" in result.output


def test_empty_options_are_resolved_once_before_start(monkeypatch: pytest.MonkeyPatch) -> None:
    async def cluster_id(configured: str) -> str:
        return configured or "uid-1"

    monkeypatch.setattr(startup, "resolve_cluster_id", cluster_id)
    monkeypatch.setattr(startup, "installed_namespace", lambda: "ops")
    monkeypatch.setattr(startup, "token_user", lambda config: "alice")
    resolved = startup.resolve_config(OperatorConfig())
    assert (resolved.default_owner, resolved.cluster_id, resolved.operator_namespace) == (
        "alice",
        "uid-1",
        "ops",
    )
    given = OperatorConfig(default_owner="acme", cluster_id="prod", operator_namespace="so")
    assert startup.resolve_config(given) == given


def test_the_token_user_is_asked_again_until_the_hub_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    answers: list[Any] = [ConnectionResetError("reset"), ConnectionResetError("reset"), {"name": "alice"}]

    def whoami(self: object) -> Any:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(startup.HfApi, "whoami", whoami)
    waits: list[float] = []
    assert startup.token_user(OperatorConfig(backoff_base=2, backoff_max=3), sleep=waits.append) == "alice"
    assert waits == [2, 3]
