"""What the image's build does, without a container engine: wheel from the build context, clean install."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from sandbox_operator.cli.main import main as operator
from sandbox_testbench.cli import main as bench_command
from tests.support.helm_chart import REPO, copied_sources, dockerfile_stages

# Over a minute in one worker: parallel runs start it first (tests/conftest.py).
pytestmark = pytest.mark.long

# Installing the dependencies from PyPI into a fresh venv takes a while on a cold cache.
TIMEOUT = 900.0


def sh(*argv: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(arg) for arg in argv], capture_output=True, text=True, timeout=TIMEOUT, cwd=cwd
    )
    assert result.returncode == 0, f"{argv}:\n{result.stdout}\n{result.stderr}"
    return result


def docker_context(target: Path) -> Path:
    """A copy of what the build stage COPYs, minus what .dockerignore drops, as `docker build` sends it."""
    ignored = [
        line.removeprefix("**/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.startswith("**/")
    ]
    target.mkdir(parents=True)
    for source in copied_sources(dockerfile_stages()[0]):
        path = REPO / source
        if path.is_dir():
            shutil.copytree(path, target / source, ignore=shutil.ignore_patterns(*ignored))
        else:
            shutil.copy2(path, target / source)
    return target


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The operator's wheel, built from the image's build context as the Dockerfile builds it."""
    tmp_path = tmp_path_factory.mktemp("wheel")
    context = docker_context(tmp_path / "context")
    dist = tmp_path / "dist"
    sh(sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", dist, context)
    (built,) = dist.glob("sandbox_operator-*.whl")
    return built


#: What only the test bench and offline demo use (testbench/): never in the operator's wheel or image.
BENCH_MODULES = ("hubsim", "controlplane", "dev", "sandbox_testbench")


def test_wheel_holds_only_what_runs_in_a_cluster(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    modules = [name for name in names if name.endswith(".py")]
    assert modules, names
    assert all(name.startswith("sandbox_operator/") for name in modules), modules
    bench = [name for name in modules if set(Path(name).with_suffix("").parts) & set(BENCH_MODULES)]
    assert bench == [], bench
    with zipfile.ZipFile(wheel) as archive:
        importing = [name for name in modules if "sandbox_testbench" in archive.read(name).decode()]
    assert importing == [], importing


def test_wheel_builds_and_runs_in_a_clean_venv(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    sh(sys.executable, "-m", "venv", venv)
    # Binary wheels only, as in the image: nothing may need a compiler.
    sh(venv / "bin" / "pip", "install", "--disable-pip-version-check", "--only-binary=:all:", wheel)
    sh(venv / "bin" / "pip", "check")
    help_text = sh(venv / "bin" / "sandbox-operator", "run", "--help").stdout
    assert "--default-template" in help_text
    # The installed package is complete: it renders the same CRD as the checkout.
    crd = sh(venv / "bin" / "sandbox-operator", "crd", cwd=tmp_path).stdout
    assert crd == (REPO / "crds" / "agentsessions.yaml").read_text()


def test_the_demo_and_the_emulator_are_the_test_benchs_commands() -> None:
    assert {"dev", "hubsim"} <= set(bench_command.commands)
    assert not {"dev", "hubsim"} & set(operator.commands)
    assert "dev" in CliRunner().invoke(bench_command, ["--help"]).output
