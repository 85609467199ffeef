"""The Dockerfile, read with a Dockerfile parser (no container engine runs here)."""

from __future__ import annotations

import json
import shlex
import tomllib

import yaml
from dockerfile_parse import DockerfileParser

from tests.support.helm_chart import CHART, REPO, copied_sources, dockerfile_stages, instruction_values

PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def test_every_base_image_is_pinned_to_an_exact_python_release() -> None:
    parsed = dockerfile_stages()
    assert len(parsed) >= 2, "multi-stage: a build stage and a runtime stage"
    for stage in parsed:
        image = instruction_values(stage, "FROM")[0].split()[0]
        name, _, tag = image.partition(":")
        assert name == "python", image
        version, _, variant = tag.partition("-")
        parts = version.split(".")
        assert len(parts) == 3 and all(part.isdigit() for part in parts), f"{image}: not an exact x.y.z"
        assert variant.startswith("slim"), f"{image}: not a slim base"
        assert f"{parts[0]}.{parts[1]}" == PROJECT["requires-python"].removeprefix(">=")


def test_runtime_stage_runs_as_the_charts_numeric_non_root_user() -> None:
    user = instruction_values(dockerfile_stages()[-1], "USER")[-1]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and gid.isdigit(), f"USER {user}: not numeric (runAsNonRoot needs a numeric UID)"
    assert int(uid) != 0 and int(gid) != 0
    context = yaml.safe_load((CHART / "values.yaml").read_text())["podSecurityContext"]
    assert (context["runAsUser"], context["runAsGroup"]) == (int(uid), int(gid))


def test_entrypoint_is_the_wheels_console_script() -> None:
    (entrypoint,) = instruction_values(dockerfile_stages()[-1], "ENTRYPOINT")
    command = json.loads(entrypoint)  # exec form: no shell between the kubelet's SIGTERM and kopf
    assert command == ["sandbox-operator", "run"]
    assert command[0] in PROJECT["scripts"]


def test_runtime_stage_installs_only_the_built_wheels() -> None:
    runtime = dockerfile_stages()[-1]
    for command in instruction_values(runtime, "RUN"):
        words = shlex.split(command)
        assert "apt-get" not in words and "gcc" not in words
        if "pip" in words and "install" in words:
            assert "--no-index" in words, command  # wheels from the build stage, nothing else
            assert any(word.startswith("--mount=") and "from=build" in word for word in words)
    assert not instruction_values(runtime, "COPY") and not instruction_values(runtime, "ADD")


def test_environment_and_labels() -> None:
    parser = DockerfileParser(path=str(REPO / "Dockerfile"))
    assert parser.envs["HF_HOME"].startswith("/tmp/")
    labels = parser.labels
    assert labels["org.opencontainers.image.version"] == PROJECT["version"]
    assert labels["org.opencontainers.image.licenses"] == PROJECT["license"]
    assert labels["org.opencontainers.image.base.name"].endswith(parser.baseimage)
    for key in ("title", "description", "revision"):
        assert labels[f"org.opencontainers.image.{key}"]


def test_build_context_holds_what_the_build_stage_copies() -> None:
    """.dockerignore allows only what the build stage COPYs, so the context stays small."""
    lines = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()]
    patterns = [line for line in lines if line and not line.startswith("#")]
    assert patterns[0] == "*"
    allowed = {pattern[1:].rstrip("/") for pattern in patterns if pattern.startswith("!")}
    copied = {source.rstrip("/") for source in copied_sources(dockerfile_stages()[0])}
    assert copied == allowed
