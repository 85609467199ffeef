"""Fixtures for tests against the local control plane (real kube-apiserver, etcd, controller manager).

A missing binary or a failed start fails the tests instead of skipping them: a skipped
integration suite would look green while testing nothing.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from sandbox_operator.core.shards import SHARD_LEASE_LABEL
from sandbox_testbench.controlplane import ControlPlane, Kubectl
from sandbox_testbench.dev import install_crd
from sandbox_testbench.hubsim import HubSimAdmin, HubSimConfig, HubSimServer
from tests.support.harness import (
    OPERATOR_TOKEN,
    OWNER,
    READ_TOKEN,
    SECOND_OPERATOR,
    SECOND_OPERATOR_TOKEN,
    TEMPLATE,
    OperatorProcess,
    install_approval_policy,
    install_read_token,
)

HERE = Path(__file__).parent
_LOG_SIZES_AT_START = pytest.StashKey[dict[Path, int]]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark everything under tests/integration, so `-m "not integration"` deselects it."""
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def _operator_logs_from_here(request: pytest.FixtureRequest) -> None:
    """Where every operator's log stands as a test starts: its report shows what they logged after."""
    request.node.stash[_LOG_SIZES_AT_START] = OperatorProcess.log_sizes()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed integration test's report ends with what each operator process logged during it."""
    report: pytest.TestReport = yield
    if report.failed and report.when == "call" and _LOG_SIZES_AT_START in item.stash:
        for path, text in OperatorProcess.logs_since(item.stash[_LOG_SIZES_AT_START]):
            report.sections.append((f"operator log {path}", text))
    return report


@pytest.fixture(scope="session")
def crd(control_plane: ControlPlane) -> None:
    """The AgentSession CRD, installed from the generated schema and Established, and the platform's
    read token Secret the operator processes are configured with."""
    install_crd(control_plane)
    install_read_token(control_plane)


@pytest.fixture
def approval_policy(control_plane: ControlPlane, crd: None) -> None:
    """The chart's approval policy and approver roles, enforced: what sessions with approvals need.

    Function-scoped and idempotent (a fast no-op when in place), since a test may remove the policy."""
    install_approval_policy(control_plane)


@pytest.fixture(scope="session")
def hub() -> Iterator[HubSimServer]:
    """The Hub emulator with short delays, so a session is Ready in well under a second."""
    config = HubSimConfig(
        tokens={
            OPERATOR_TOKEN: OWNER,
            READ_TOKEN: OWNER,
            "hf_test_outsider": "outsider",
            SECOND_OPERATOR_TOKEN: SECOND_OPERATOR,
        },
        # A second operator's token, with write access to the owner: its calls show up under its own user.
        # The operator's own user is a member of team-x, an owner an allow-list may name.
        orgs={SECOND_OPERATOR: [OWNER], OWNER: ["team-x"]},
        templates=[TEMPLATE],
        build_seconds=0.2,
        hardware_switch_seconds=0.2,
    )
    with HubSimServer(config) as server:
        yield server


@pytest.fixture
def hub_admin(hub: HubSimServer) -> Iterator[HubSimAdmin]:
    """The emulator's admin API; faults and delays set by a test are cleared after it."""
    admin = hub.admin
    yield admin
    admin.clear_faults()
    admin.set_build_failures(0)


@pytest.fixture(scope="session")
def operator_process(
    control_plane: ControlPlane, crd: None, hub: HubSimServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    process = OperatorProcess(control_plane.kubeconfig, hub.url, tmp_path_factory.mktemp("operator"))
    process.start()
    yield process
    process.stop()


@pytest.fixture
def operator(operator_process: OperatorProcess) -> Iterator[OperatorProcess]:
    """The running operator; restarted if a test killed it (its log is in a failed test's report)."""
    if operator_process.proc is None or operator_process.proc.poll() is not None:
        operator_process.start()
    yield operator_process
    if operator_process.proc is None or operator_process.proc.poll() is not None:
        operator_process.start()


@pytest.fixture
def without_shared_operator(operator_process: OperatorProcess, kubectl: Kubectl) -> Iterator[None]:
    """Stops the suite's shared operator for a test that runs operators of its own: the shared one
    watches the whole cluster and holds another Lease, so it would act on their sessions too."""
    operator_process.stop()
    # No operator runs now: a Lease left held by one killed earlier (or by the shared one, stopped
    # while it still waited for such a Lease) would count as a live shard claiming every namespace
    # for a lease duration, and hold back the operators this test starts.
    kubectl("delete", "leases", "--all-namespaces", "-l", f"{SHARD_LEASE_LABEL}=true", "--wait=false")
    try:
        yield
    finally:
        operator_process.start()
