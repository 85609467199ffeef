"""Errors of the local control plane, kept apart so every submodule can raise them."""


class ControlPlaneError(RuntimeError):
    """The local control plane could not be found, built, started or stopped."""


class PortInUseError(ControlPlaneError):
    """A component lost the race for a port picked as free; the start is retried with new ports."""
