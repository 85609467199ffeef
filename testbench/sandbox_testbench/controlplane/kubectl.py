"""Run the kubectl built alongside the control plane, for tests and the dev mode."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ToolError


class KubectlError(ToolError):
    """kubectl exited non-zero."""


@dataclass(frozen=True)
class Kubectl:
    """kubectl bound to one kubeconfig (i.e. one identity), so calls never touch ~/.kube/config."""

    binary: Path
    kubeconfig: Path

    def __call__(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """Run `kubectl args...`; raise KubectlError on a non-zero exit unless check=False."""
        argv = [str(self.binary), f"--kubeconfig={self.kubeconfig}", *args]
        result = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise KubectlError(result.returncode, argv, result.stdout, result.stderr)
        return result

    def json(self, *args: str) -> Any:
        """Run `kubectl args... -o json` and decode the output."""
        return json.loads(self(*args, "-o", "json").stdout)
