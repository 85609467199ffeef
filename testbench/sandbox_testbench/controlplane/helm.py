"""Run the helm built alongside the control plane: chart tests and dev mode install through it."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import ToolError


class HelmError(ToolError):
    """helm exited non-zero (a schema or template error, a failed install)."""


@dataclass(frozen=True)
class Helm:
    """The helm binary with its own config/cache/data dirs, so nothing reads or writes ~/.config/helm."""

    binary: Path
    home: Path
    kubeconfig: Path | None = None

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_DATA_HOME": str(self.home / "data"),
        }
        env.pop("KUBECONFIG", None)
        argv = [str(self.binary), *args]
        if self.kubeconfig is not None:
            argv.append(f"--kubeconfig={self.kubeconfig}")
        result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)
        if check and result.returncode != 0:
            raise HelmError(result.returncode, argv, result.stdout, result.stderr)
        return result

    def values_file(self, values: dict[str, Any]) -> Path:
        """Values as a file (JSON is YAML): `--set` would turn strings like "1.0" into numbers."""
        self.home.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="values-", suffix=".yaml", dir=self.home)
        with os.fdopen(fd, "w") as file:
            json.dump(values, file)
        return Path(name)

    def template(
        self,
        chart: Path,
        values: dict[str, Any],
        *,
        release: str = "so",
        namespace: str = "sandbox-operator",
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        return self(
            "template",
            release,
            str(chart),
            "--namespace",
            namespace,
            "--values",
            str(self.values_file(values)),
            check=check,
        )

    def render(
        self, chart: Path, values: dict[str, Any], *, release: str = "so", namespace: str = "sandbox-operator"
    ) -> list[dict[str, Any]]:
        """The chart's objects for these values (merged over the chart's values.yaml)."""
        output = self.template(chart, values, release=release, namespace=namespace).stdout
        return [doc for doc in yaml.safe_load_all(output) if doc]
