"""The pool's scale subresource publishes a label selector, so a HorizontalPodAutoscaler can
drive spec.replicas (the HPA requires one; a pool has no pods, so it scales on Object or External
metrics)."""

from __future__ import annotations

import itertools

from sandbox_operator import api
from sandbox_operator.api import crd
from sandbox_operator.core import pool as core
from tests.support.core import CONFIG, NOW


def test_the_scale_subresource_has_a_selector_the_pool_status_publishes() -> None:
    version = crd.build_pool_crd()["spec"]["versions"][0]
    assert version["subresources"]["scale"]["labelSelectorPath"] == ".status.selector"
    pool = core.Pool(
        name="warm",
        namespace="team",
        uid="uid",
        generation=1,
        spec=api.AgentSessionPoolSpec(replicas=0),
        status=api.AgentSessionPoolStatus(),
    )
    ids = (str(n) for n in itertools.count())
    plan = core.decide_pool(
        pool, core.PoolObservation(pool_key="key", live_sessions=frozenset()), CONFIG, NOW, ids
    )
    assert plan.status.selector == f"{api.POOL_LABEL}=warm" == "agents.sandbox-operator.dev/pool=warm"
