"""The local control plane (real kube-apiserver + etcd + kube-controller-manager) for tests and dev mode."""

from .errors import ControlPlaneError
from .kubectl import Kubectl, KubectlError
from .plane import ControlPlane, find_binaries
from .processes import stop_from_state_dir

__all__ = [
    "ControlPlane",
    "ControlPlaneError",
    "Kubectl",
    "KubectlError",
    "find_binaries",
    "stop_from_state_dir",
]
