"""A short chaos run in the suite; `hack/chaos.py` runs the long one (see chaos.py)."""

from __future__ import annotations

import os
import random

from sandbox_testbench.controlplane import Kubectl
from sandbox_testbench.hubsim import HubSimAdmin, HubSimServer

from chaos import ChaosConfig, run_chaos
from harness import OperatorProcess


def test_short_chaos_run_keeps_every_invariant(
    kubectl: Kubectl,
    hub: HubSimServer,
    hub_admin: HubSimAdmin,
    operator: OperatorProcess,
    namespace: str,
    approval_policy: None,
) -> None:
    seed = int(os.environ.get("CHAOS_SEED") or random.randrange(1_000_000))
    config = ChaosConfig(seed=seed, kills=12, parallel=3)
    result = run_chaos(config, kubectl, hub_admin, operator, namespace, hub.config.call_log_size)
    print(result.line())
    assert result.ok, f"{result.report()}\nreplay: CHAOS_SEED={seed}"
