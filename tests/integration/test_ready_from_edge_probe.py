"""A cold start does not wait for a listing: the session is Ready once its Space's app answers at the
edge (docs/hub-fidelity.md F36), which costs no Hub API call.

The operator here lists the owner's Spaces once an hour and would poll a building session only after
two of those intervals: a session Ready within the test's wait learned that its Space runs from the
edge probe, not from the Hub.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox_testbench.controlplane import ControlPlane, Kubectl
from sandbox_testbench.controlplane.processes import free_ports
from sandbox_testbench.hubsim import HubSimAdmin, HubSimServer
from tests.support.harness import OperatorProcess, scrape_metrics, session_manifest, wait_ready
from tests.support.polling import wait_for

#: Long enough that the Space is seen building first, short enough for a test.
BUILD_SECONDS = 3.0
#: Listings an hour apart: none comes while the test waits.
OBSERVE_INTERVAL = "3600"
#: The Space's own reads: what a session would ask the Hub to learn that its Space runs.
SPACE_READS = frozenset({"space_info", "runtime"})


@pytest.fixture
def slow_listing_operator(
    control_plane: ControlPlane, hub: HubSimServer, without_shared_operator: None, tmp_path: Path
) -> Iterator[OperatorProcess]:
    process = OperatorProcess(
        control_plane.kubeconfig,
        hub.url,
        tmp_path,
        SANDBOX_OPERATOR_OBSERVE_INTERVAL=OBSERVE_INTERVAL,
        SANDBOX_OPERATOR_METRICS_PORT=str(free_ports(1)[0]),
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def slow_builds(hub_admin: HubSimAdmin) -> Iterator[None]:
    before = hub_admin.delays()["build"]
    hub_admin.set_delays(build=BUILD_SECONDS)
    try:
        yield
    finally:
        hub_admin.set_delays(build=before)


def _read_no_space_of_its_own(hub_admin: HubSimAdmin, session: dict[str, Any]) -> None:
    space_id = session["status"]["spaceId"]
    own_reads = [c["route"] for c in hub_admin.calls() if space_id in c["path"] and c["route"] in SPACE_READS]
    assert own_reads == [], "the session read its Space from the Hub to learn that it runs"


@pytest.mark.usefixtures("slow_builds", "slow_listing_operator")
def test_a_session_is_ready_from_its_apps_answer_without_another_listing(
    kubectl: Kubectl, hub_admin: HubSimAdmin, namespace: str
) -> None:
    hub_admin.clear_calls()
    kubectl("apply", "-f", "-", stdin=session_manifest("cold", namespace))
    session = wait_ready(kubectl, "cold", namespace, timeout=60)
    assert session["status"]["stage"] == "RUNNING"
    assert session["status"]["hardware"]["current"] == "cpu-basic"
    routes = [call["route"] for call in hub_admin.calls()]
    assert "health" in routes, "the app was never asked at its edge"
    assert routes.count("list_spaces") <= 1, "more than the listing that confirmed the duplicate"
    _read_no_space_of_its_own(hub_admin, session)


@pytest.mark.usefixtures("slow_builds")
def test_an_edge_refusing_probes_with_429_is_obeyed_and_the_session_is_ready_once_it_lets_them_by(
    kubectl: Kubectl, hub_admin: HubSimAdmin, slow_listing_operator: OperatorProcess, namespace: str
) -> None:
    """No public source names a limit of the apps' edge (F36); should it answer 429, the prober
    halves its rate (hub/edge_probe.py) and the session is still Ready from its app's answer."""
    hub_admin.clear_calls()
    hub_admin.add_fault("health", 429)  # until cleared: the edge refuses every probe meanwhile
    try:
        kubectl("apply", "-f", "-", stdin=session_manifest("refused", namespace))
        wait_for(
            lambda: [c for c in hub_admin.calls() if c["route"] == "health" and c["status"] == 429],
            timeout=60,
            what="a probe the edge refused",
        )
    finally:
        hub_admin.clear_faults()
    session = wait_ready(kubectl, "refused", namespace, timeout=60)
    assert "the Hub's edge answered a health probe 429" in slow_listing_operator.current_log()
    # What the chart's SandboxOperatorEdgeRefusingProbes alert and a dashboard read.
    metrics = scrape_metrics(slow_listing_operator)
    assert re.search(r'sandbox_operator_edge_probes_total\{answer="refused"\} [1-9]', metrics), metrics
    assert 'sandbox_operator_edge_probes_total{answer="healthy"} 1.0' in metrics
    _read_no_space_of_its_own(hub_admin, session)
