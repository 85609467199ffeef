"""Shards are named by namespace: `--namespaces` takes names, never kopf's globs, which would need
the namespace scanning the operator keeps off and which the sweeper's exact match cannot honour."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from sandbox_operator.cli.main import main
from sandbox_operator.config.settings import RunSettings


def test_namespace_names_are_taken() -> None:
    assert RunSettings(namespaces=("team-a", "team-a-ci", "b")).namespaces == ("team-a", "team-a-ci", "b")
    assert RunSettings().namespaces == ()


@pytest.mark.parametrize("pattern", ["team-*", "!team-b", "team-?", "Team-A", "-a", "a" * 64])
def test_globs_negations_and_non_names_are_refused(pattern: str) -> None:
    with pytest.raises(ValidationError, match="not a namespace name"):
        RunSettings(namespaces=("team-a", pattern))


def test_a_glob_on_the_command_line_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["run", "--default-template", "t/t", "--namespaces", "team-*"])
    assert result.exit_code == 2
    assert "not a namespace name" in result.output
