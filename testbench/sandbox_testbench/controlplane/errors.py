"""Errors of the local control plane, kept apart so every submodule can raise them."""

import subprocess


class ControlPlaneError(RuntimeError):
    """The local control plane could not be found, built, started or stopped."""


class PortInUseError(ControlPlaneError):
    """A component lost the race for a port picked as free; the start is retried with new ports."""


class ToolError(subprocess.CalledProcessError):
    """A failed kubectl or helm call whose message carries the tool's stderr, which says what went wrong."""

    def __str__(self) -> str:
        return f"{super().__str__()}\n{self.stderr}"
