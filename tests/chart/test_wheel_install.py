"""What the image's build does, without a container engine: wheel from the build context, clean install."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from helm_chart import REPO, copied_sources, dockerfile_stages

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


def test_wheel_builds_and_runs_in_a_clean_venv(tmp_path: Path) -> None:
    context = docker_context(tmp_path / "context")
    dist = tmp_path / "dist"
    sh(sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", dist, context)
    (wheel,) = dist.glob("sandbox_operator-*.whl")
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
