"""Waits on the control plane that more than one test module needs."""

from __future__ import annotations

from sandbox_testbench.controlplane import Kubectl

from .polling import wait_for


def wait_for_service_account(kubectl: Kubectl, namespace: str, name: str, timeout: float = 30.0) -> None:
    """The ServiceAccount exists (a fresh namespace's `default` comes from a controller, later)."""
    wait_for(
        lambda: kubectl("get", "serviceaccount", name, "-n", namespace, check=False).returncode == 0,
        timeout,
        f"ServiceAccount {namespace}/{name}",
        interval=0.2,
    )
