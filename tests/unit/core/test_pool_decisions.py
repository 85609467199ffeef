"""The warm pool's pure decisions: building and replacing pooled Spaces, claims, and the fallback."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from sandbox_operator.api import (
    AgentSessionPoolSpec,
    AgentSessionPoolStatus,
    AgentSessionSpec,
    LaunchType,
    PooledSpace,
    PooledSpaceState,
)
from sandbox_operator.config.settings import OperatorConfig
from sandbox_operator.core import pool as core
from sandbox_operator.core.conditions import READY, Reason, rfc3339
from sandbox_operator.core.model import HealthResult, SpaceView
from sandbox_operator.pools import book as pools_shell
from tests.support.core import CONFIG, NOW, new_session

POOL_UID = "9f9f9f9f-1111-2222-3333-444455556666"
HEALTHY = HealthResult(True, "200 OK", 200)
#: The pool's key (from its Secret), from which its Spaces' tokens derive.
KEY = "pool-key-1"
#: What the default pool spec's Spaces are built for.
CURRENT = core.build_hash(AgentSessionPoolSpec(), CONFIG, KEY)


def ids() -> Iterator[str]:
    return (f"00000000-0000-0000-0000-{n:012d}" for n in itertools.count())


def pool(
    spec: dict[str, Any] | None = None, spaces: list[dict[str, Any]] | None = None, deleting: bool = False
) -> core.Pool:
    return core.Pool(
        name="warm",
        namespace="team-a",
        uid=POOL_UID,
        generation=1,
        spec=AgentSessionPoolSpec.model_validate(spec or {}),
        status=AgentSessionPoolStatus.model_validate({"spaces": spaces or []}),
        deleting=deleting,
    )


def entry(n: int, state: str = "Ready", age: float = 600.0, **extra: Any) -> dict[str, Any]:
    return {
        "spaceId": f"agents/ags-p{n}",
        "state": state,
        "requestedTime": rfc3339(NOW - timedelta(seconds=age), precise=True),
        "sandboxUrl": f"http://hub/_sandbox/agents/ags-p{n}",
        "specHash": CURRENT,
        **extra,
    }


def running(space_id: str, stage: str = "RUNNING", flavor: str = "cpu-basic") -> SpaceView:
    return SpaceView(space_id, stage, flavor, flavor, True, "url", "sandbox")


def seen(
    space: SpaceView | None, health: HealthResult | None = HEALTHY, **marker: Any
) -> core.PooledObservation:
    return core.PooledObservation(space=space, health=health, **marker)


def decide(p: core.Pool, **observed: Any) -> core.PoolPlan:
    """The pool's plan; each observation not told otherwise was taken for the record as it is (as
    the shell's are, when nothing changed the record since)."""
    observed.setdefault("live_sessions", frozenset())
    observed.setdefault("pool_key", KEY)
    records = {e.space_id: e for e in p.status.spaces}
    observed["spaces"] = {
        space_id: look if look.entry is not None else replace(look, entry=records.get(space_id))
        for space_id, look in observed.get("spaces", {}).items()
    }
    return core.decide_pool(p, core.PoolObservation(**observed), CONFIG, NOW, ids())


def test_an_empty_pool_records_then_creates_its_replicas() -> None:
    plan = decide(pool({"replicas": 3}))
    assert [type(a) for a in plan.actions] == [core.CreatePooledSpace] * 3
    recorded = [e.space_id for e in plan.status.spaces]
    assert recorded == [a.space_id for a in plan.actions]  # recorded in the status written first
    assert all(e.state == PooledSpaceState.CREATING for e in plan.status.spaces)
    assert recorded[0].startswith("agents/ags-")
    assert (plan.status.replicas, plan.status.ready, plan.status.claimed) == (3, 0, 0)
    ready = next(c for c in plan.status.conditions if c.type == READY)
    assert (ready.status, ready.reason) == ("False", Reason.POOL_FILLING)
    assert plan.requeue_after is not None


def test_a_running_healthy_space_becomes_ready_and_the_pool_is_ready() -> None:
    p = pool({"replicas": 1}, [entry(1, "Creating", age=5)])
    plan = decide(p, spaces={"agents/ags-p1": seen(running("agents/ags-p1"))})
    assert plan.actions == []
    assert plan.status.spaces[0].state == PooledSpaceState.READY
    ready = next(c for c in plan.status.conditions if c.type == READY)
    assert (ready.status, ready.reason) == ("True", Reason.POOL_READY)
    assert plan.requeue_after is None


def test_building_and_unhealthy_spaces_are_not_ready() -> None:
    p = pool({"replicas": 2}, [entry(1, "Creating", age=5), entry(2, "Creating", age=5)])
    plan = decide(
        p,
        spaces={
            "agents/ags-p1": seen(running("agents/ags-p1", "BUILDING"), None),
            "agents/ags-p2": seen(running("agents/ags-p2"), HealthResult(False, "503", 503)),
        },
    )
    states = [e.state for e in plan.status.spaces]
    assert states == [PooledSpaceState.CREATING, PooledSpaceState.NOT_READY]
    assert plan.actions == []


def test_a_failed_or_upgraded_space_is_replaced_never_paid_for() -> None:
    p = pool({"replicas": 2}, [entry(1), entry(2)])
    plan = decide(
        p,
        spaces={
            "agents/ags-p1": seen(running("agents/ags-p1", "RUNTIME_ERROR")),
            "agents/ags-p2": seen(running("agents/ags-p2", flavor="a10g-small")),
        },
    )
    deletes = [a for a in plan.actions if isinstance(a, core.DeletePooledSpace)]
    creates = [a for a in plan.actions if isinstance(a, core.CreatePooledSpace)]
    assert {a.space_id for a in deletes} == {"agents/ags-p1", "agents/ags-p2"}
    assert len(creates) == 2  # replacements, while the broken ones are deleted
    # A deleting entry stays recorded until the Hub no longer shows it.
    gone = decide(pool({"replicas": 0}, [entry(1, "Deleting")]), spaces={"agents/ags-p1": seen(None)})
    assert gone.status.spaces == []


def test_a_space_not_found_is_waited_for_within_the_duplicate_window_then_dropped() -> None:
    young = pool({"replicas": 1}, [entry(1, "Creating", age=1)])
    assert decide(young, spaces={"agents/ags-p1": seen(None)}).status.spaces[0].space_id == "agents/ags-p1"
    old = pool({"replicas": 1}, [entry(1, "Creating", age=3600)])
    plan = decide(old, spaces={"agents/ags-p1": seen(None)})
    assert [e.space_id for e in plan.status.spaces] != ["agents/ags-p1"]
    assert len(plan.actions) == 1 and isinstance(plan.actions[0], core.CreatePooledSpace)


def test_scaling_down_deletes_the_least_useful_unclaimed_spaces_first() -> None:
    p = pool({"replicas": 1}, [entry(1), entry(2, "NotReady"), entry(3, age=10)])
    plan = decide(p)
    deleted = {a.space_id for a in plan.actions if isinstance(a, core.DeletePooledSpace)}
    assert deleted == {"agents/ags-p2", "agents/ags-p3"}
    assert plan.status.replicas == 1


def test_replicas_are_capped_by_the_operator() -> None:
    config = CONFIG.model_copy(update={"pool_max_replicas": 2})
    plan = core.decide_pool(pool({"replicas": 50}), core.PoolObservation(pool_key=KEY), config, NOW, ids())
    assert len(plan.actions) == 2
    # Said in the condition, with the value used and the option that caps it, and in a Warning Event.
    said = "spec.replicas 50 is capped at 2, the operator's --pool-max-replicas"
    assert f"({said})" in next(c.message for c in plan.status.conditions if c.type == READY)
    warning, filling = plan.events
    assert (warning.type, warning.reason, warning.message) == ("Warning", "ReplicasCapped", said)
    assert filling.reason == "PoolFilling" and filling.message.endswith(f"({said})")
    # Once per spec: the next pass on the same generation says it only in the condition.
    again = replace(pool({"replicas": 50}), status=plan.status)
    later = core.decide_pool(again, core.PoolObservation(pool_key=KEY), config, NOW, ids())
    assert "ReplicasCapped" not in [note.reason for note in later.events]


def test_a_deleting_pool_says_how_many_of_its_spaces_were_already_on_their_way() -> None:
    p = pool({"replicas": 1}, [entry(1), entry(2, "Deleting")], deleting=True)
    said = next(c.message for c in decide(p).status.conditions if c.type == READY)
    assert said == "deleting 2 unclaimed Spaces, 1 of them already on their way"


def test_the_same_allow_lists_refuse_a_pool_as_a_session() -> None:
    refused = decide(pool({"replicas": 2, "template": "evil/template"}))
    assert refused.actions == []
    ready = next(c for c in refused.status.conditions if c.type == READY)
    assert ready.reason == Reason.TEMPLATE_NOT_ALLOWED
    owner = decide(pool({"replicas": 1, "owner": "someone-else"}))
    assert owner.actions == [] and owner.status.conditions[0].reason == Reason.OWNER_NOT_ALLOWED
    secrets = {"secrets": [{"name": "API_KEY", "secretKeyRef": {"name": "s", "key": "k"}}], "replicas": 1}
    unenforced = decide(pool(secrets), policy_problem="the policy is not installed")
    assert unenforced.actions == [] and unenforced.status.conditions[0].reason == Reason.SECRETS_NOT_ENFORCED
    assert len(decide(pool(secrets), policy_problem=None).actions) == 1


def test_claims_hand_each_ready_space_to_one_session_and_repeat_the_same_answer() -> None:
    status = pool({"replicas": 2}, [entry(1, age=100), entry(2, age=200), entry(3, "Creating")]).status
    requests = [core.ClaimRequest(f"s{n}", f"uid-{n}") for n in range(3)]
    claimed, answers = core.assign_claims(status, requests, NOW, CURRENT)
    assert answers["uid-0"] is not None and answers["uid-0"].space_id == "agents/ags-p2"  # oldest first
    assert answers["uid-1"] is not None and answers["uid-1"].space_id == "agents/ags-p1"
    assert answers["uid-2"] is None  # the building one is never handed out
    assert (claimed.ready, claimed.claimed) == (0, 2)
    # A retry (after a crash between the claim and the session's own record) gets the same Space.
    again, repeat = core.assign_claims(claimed, [core.ClaimRequest("s1", "uid-1")], NOW, CURRENT)
    assert again == claimed
    assert repeat["uid-1"] is not None and repeat["uid-1"].space_id == "agents/ags-p1"


def test_many_claims_never_share_a_space() -> None:
    status = pool({"replicas": 50}, [entry(n) for n in range(50)]).status
    answers: dict[str, Any] = {}
    for batch in range(10):  # ten batches of twenty, each on the status the previous one wrote
        requests = [core.ClaimRequest(f"s{n}", f"uid-{batch}-{n}") for n in range(20)]
        status, got = core.assign_claims(status, requests, NOW, CURRENT)
        answers |= got
    handed = [a.space_id for a in answers.values() if a is not None]
    assert len(handed) == 50 == len(set(handed))
    assert status.claimed == 50 and status.ready == 0


def test_claimed_spaces_leave_the_pool_count_and_it_replenishes() -> None:
    claimed = entry(1, claimedBy={"name": "s", "uid": "uid-s"})
    plan = decide(pool({"replicas": 1}, [claimed]), live_sessions=frozenset({"uid-s"}))
    assert len([a for a in plan.actions if isinstance(a, core.CreatePooledSpace)]) == 1
    assert plan.status.claimed == 1


def test_a_space_whose_claimant_is_gone_is_deleted_unless_it_moved_on() -> None:
    claimed = entry(1, claimedBy={"name": "s", "uid": "uid-s"})
    p = pool({"replicas": 0}, [claimed])
    assert core.to_observe(p, frozenset(), full=False) == ["agents/ags-p1"]
    # Handover never finished (marker still the pool's), or finished: nobody else deletes it.
    for marker in (POOL_UID, "uid-s"):
        space = seen(running("agents/ags-p1"), marker_uid=marker, marker_cluster=CONFIG.cluster_id)
        plan = decide(p, spaces={"agents/ags-p1": space})
        assert plan.actions == [core.DeletePooledSpace("agents/ags-p1")]
    # Kept by its session's deletionPolicy Orphan (released: no cluster in the marker): left alone.
    released = seen(running("agents/ags-p1"), marker_uid="uid-s", marker_cluster="")
    plan = decide(p, spaces={"agents/ags-p1": released})
    assert plan.actions == [] and plan.status.spaces == []
    # A live claimant's Space is never looked at nor touched.
    assert core.to_observe(p, frozenset({"uid-s"}), full=True) == []


def test_a_space_claimed_after_the_pass_looked_at_it_stays_with_its_new_session() -> None:
    # A full pass lists the sessions, then looks at every ready Space; a session created after the
    # list claims one of them before the pass decides. Its claimant is not in the list, but it is not
    # gone: the Space is the new session's, which is Ready on it.
    p = pool({"replicas": 1}, [entry(1, claimedBy={"name": "new", "uid": "uid-new"})])
    unclaimed = PooledSpace.model_validate(entry(1))
    looked_at = seen(
        running("agents/ags-p1"), marker_uid=POOL_UID, marker_cluster=CONFIG.cluster_id, entry=unclaimed
    )
    plan = decide(p, live_sessions=frozenset({"uid-old"}), spaces={"agents/ags-p1": looked_at})
    assert not any(isinstance(a, core.DeletePooledSpace) for a in plan.actions)
    kept = plan.status.spaces[0]
    assert kept.claimed_by is not None and kept.claimed_by.uid == "uid-new"
    assert kept.state == PooledSpaceState.READY


def test_a_ready_space_is_not_made_not_ready_by_a_look_older_than_what_made_it_ready() -> None:
    # A pass looked at a Space while it was building (the listing it read showed it so); a newer
    # pass, on the edge's answer, recorded it ready before this one decides. Taken as is, the older
    # look would make the Space not ready again, and claims meanwhile would find it unclaimable.
    p = pool({"replicas": 1}, [entry(1)])
    building = PooledSpace.model_validate(entry(1, "Creating", age=70))
    older = seen(running("agents/ags-p1", "BUILDING"), None, entry=building)
    plan = decide(p, spaces={"agents/ags-p1": older})
    assert plan.status.spaces[0].state == PooledSpaceState.READY and plan.actions == []
    assert plan.status.ready == 1
    # The same look, on the record it was taken for, does judge it.
    p = pool({"replicas": 1}, [entry(1, "Creating", age=70)])
    plan = decide(p, spaces={"agents/ags-p1": seen(running("agents/ags-p1", "BUILDING"), None)})
    assert plan.status.spaces[0].state == PooledSpaceState.CREATING


def test_deleting_the_pool_deletes_unclaimed_spaces_and_leaves_claimed_ones() -> None:
    claimed = entry(2, claimedBy={"name": "s", "uid": "uid-s"})
    p = pool({"replicas": 2}, [entry(1), claimed], deleting=True)
    plan = decide(
        p, live_sessions=frozenset({"uid-s"}), spaces={"agents/ags-p1": seen(running("agents/ags-p1"))}
    )
    assert plan.actions == [core.DeletePooledSpace("agents/ags-p1")]
    assert not plan.done
    assert [note.message for note in plan.events] == ["Ready=False: deleting 1 unclaimed Spaces"]
    after = pool({"replicas": 2}, [entry(1, "Deleting"), claimed], deleting=True)
    done = decide(after, live_sessions=frozenset({"uid-s"}), spaces={"agents/ags-p1": seen(None)})
    assert done.done and [e.space_id for e in done.status.spaces] == ["agents/ags-p2"]


def test_a_session_claims_only_a_space_built_for_what_it_asks() -> None:
    pool_spec = AgentSessionPoolSpec.model_validate({})
    assert core.claim_mismatch(AgentSessionSpec.model_validate({}), pool_spec, CONFIG) is None
    for spec in (
        {"template": "templates/other"},
        {"owner": "acme"},
        {"private": False},
        {"secrets": [{"name": "K", "secretKeyRef": {"name": "s", "key": "k"}}]},
    ):
        assert core.claim_mismatch(AgentSessionSpec.model_validate(spec), pool_spec, CONFIG) is not None


def test_a_pool_with_secrets_serves_only_sessions_that_name_them_themselves() -> None:
    """Hostile: code in a claimed Space sees the pool's secrets; a session whose author was never
    checked for them (it names none, or others) must not get one, or the pool would lend them."""
    secret = {"name": "API_KEY", "secretKeyRef": {"name": "team-key", "key": "token"}}
    pool_spec = AgentSessionPoolSpec.model_validate({"secrets": [secret]})
    assert core.claim_mismatch(AgentSessionSpec.model_validate({}), pool_spec, CONFIG) is not None
    other = {"name": "API_KEY", "secretKeyRef": {"name": "other-key", "key": "token"}}
    assert core.claim_mismatch(AgentSessionSpec.model_validate({"secrets": [other]}), pool_spec, CONFIG)
    same = AgentSessionSpec.model_validate({"secrets": [secret]})
    assert core.claim_mismatch(same, pool_spec, CONFIG) is None


def test_claimed_session_is_ready_once_its_sandbox_answers_its_token_and_hands_over_afterwards() -> None:
    session = new_session({"poolRef": {"name": "warm"}})
    status = pool({}, [entry(1)]).status
    _, answers = core.assign_claims(status, [core.ClaimRequest("demo", session.uid)], NOW, CURRENT)
    answer = answers[session.uid]
    assert answer is not None
    args = (session.status, answer, "warm", "demo-sandbox", 1, NOW, "templates/agent")
    claimed = core.claimed_status(*args, HEALTHY)
    assert claimed.space_id == "agents/ags-p1" and claimed.launch_type == LaunchType.WARM
    assert claimed.template == "templates/agent"
    ready = next(c for c in claimed.conditions if c.type == READY)
    assert (ready.status, ready.reason) == ("True", Reason.WARM_SPACE_CLAIMED)
    assert core.handover_pending(claimed)
    assert not core.handover_pending(core.handed_over_status(claimed, "cluster-a", NOW))
    # Its sandbox does not answer the token (restarting, asleep): claimed, but not Ready yet.
    waiting = core.claimed_status(*args, HealthResult(False, "answered 503", 503))
    ready = next(c for c in waiting.conditions if c.type == READY)
    assert (ready.status, ready.reason) == ("False", Reason.STARTING) and "503" in ready.message
    assert next(c for c in waiting.conditions if c.type == core.WARM_CLAIM).status == "True"
    assert waiting.space_id == "agents/ags-p1" and core.handover_pending(waiting)


def test_each_pooled_space_has_a_token_of_its_own_derived_from_the_pools_key() -> None:
    token = core.pooled_token("key", "agents/ags-p1")
    assert token == core.pooled_token("key", "agents/ags-p1")  # derived again after any restart
    assert token.startswith("sbx_") and len(token) > 40
    assert token != core.pooled_token("key", "agents/ags-p2")
    assert token != core.pooled_token("other-key", "agents/ags-p1")


SECRET = {"name": "API_KEY", "secretKeyRef": {"name": "team-key", "key": "token"}}


OTHER_SECRET = {**SECRET, "secretKeyRef": {"name": "team-key", "key": "other"}}
MOVED = CONFIG.model_copy(update={"default_template": "templates/next"})


@pytest.mark.parametrize(
    ("spec", "config", "key", "outdated"),
    [
        ({}, CONFIG, KEY, False),
        ({"replicas": 7}, CONFIG, KEY, False),  # scaling builds nothing differently
        ({"secrets": [SECRET]}, CONFIG, KEY, True),
        ({"secrets": [OTHER_SECRET]}, CONFIG, KEY, True),
        ({"sleepTimeSeconds": 600}, CONFIG, KEY, True),
        ({}, MOVED, KEY, True),  # the operator's default template changed
        ({}, CONFIG, "pool-key-2", True),  # the key's Secret was deleted and made anew
        ({"replicas": 7}, CONFIG, "pool-key-2", True),
    ],
)
def test_the_build_hash_follows_what_a_space_is_built_from_not_the_replicas(
    spec: dict[str, Any], config: OperatorConfig, key: str, outdated: bool
) -> None:
    built = core.build_hash(AgentSessionPoolSpec.model_validate(spec), config, key)
    assert (built != CURRENT) is outdated
    assert key not in built and KEY not in built


def test_the_build_hash_tells_secret_references_apart() -> None:
    def built(spec: dict[str, Any]) -> str:
        return core.build_hash(AgentSessionPoolSpec.model_validate(spec), CONFIG, KEY)

    assert built({"secrets": [OTHER_SECRET]}) != built({"secrets": [SECRET]})


def test_a_new_key_replaces_the_spaces_built_with_the_old_one() -> None:
    """The key's Secret was made anew: tokens of Spaces built before derive from the old key, so a
    claim would hand over a token the sandbox rejects. They are outdated like a changed spec's."""
    old = [entry(1, age=900), entry(2, age=800)]
    plan = decide(pool({"replicas": 2}, old), pool_key="pool-key-2")
    created = [a for a in plan.actions if isinstance(a, core.CreatePooledSpace)]
    assert len(created) == 2  # replacements at once; the old ready ones wait for them
    assert not [a for a in plan.actions if isinstance(a, core.DeletePooledSpace)]
    assert plan.status.ready == 0  # none of the old ones is claimable
    renewed = core.build_hash(AgentSessionPoolSpec.model_validate({"replicas": 2}), CONFIG, "pool-key-2")
    fresh = {a.space_id for a in created}
    assert {e.space_id for e in plan.status.spaces if e.spec_hash == renewed} == fresh
    ready = next(c for c in plan.status.conditions if c.type == READY)
    assert (ready.status, ready.reason) == ("False", Reason.POOL_FILLING)
    assert "pool-key-2" not in plan.status.model_dump_json()


def test_a_space_built_for_an_earlier_spec_is_never_claimed() -> None:
    """Hostile: the pool dropped a Secret; Spaces built while it named it must not reach a claimant."""
    status = pool({}, [entry(1, specHash="earlier"), entry(2, specHash=None), entry(3, age=5)]).status
    requests = [core.ClaimRequest(f"s{n}", f"uid-{n}") for n in range(3)]
    claimed, answers = core.assign_claims(status, requests, NOW, CURRENT)
    assert [a.space_id if a else None for a in answers.values()] == ["agents/ags-p3", None, None]
    assert claimed.ready == 0


def test_a_changed_spec_replaces_its_spaces_keeping_ready_ones_until_their_replacements_are() -> None:
    spec = {"replicas": 2, "secrets": [SECRET]}
    old = [entry(1, age=900), entry(2, age=800), entry(3, "Creating", age=5)]
    plan = decide(pool(spec, old), policy_problem=None)
    deleted = [a.space_id for a in plan.actions if isinstance(a, core.DeletePooledSpace)]
    created = [a for a in plan.actions if isinstance(a, core.CreatePooledSpace)]
    assert deleted == ["agents/ags-p3"]  # not ready: nothing to keep it for
    assert len(created) == 2  # replacements at once, built for the new spec
    new_hash = core.build_hash(AgentSessionPoolSpec.model_validate(spec), CONFIG, KEY)
    fresh = [e for e in plan.status.spaces if e.space_id in {a.space_id for a in created}]
    assert {e.spec_hash for e in fresh} == {new_hash}
    assert plan.status.ready == 0  # the old ready ones are not claimable
    ready = next(c for c in plan.status.conditions if c.type == READY)
    assert (ready.status, ready.reason) == ("False", Reason.POOL_FILLING)

    # One replacement ready: the oldest old one goes; the other waits for the second replacement.
    spaces = [e.model_dump(by_alias=True) for e in plan.status.spaces if e.state != PooledSpaceState.DELETING]
    first = fresh[0].space_id
    spaces = [{**e, "state": "Ready"} if e["spaceId"] == first else e for e in spaces]
    step = decide(pool(spec, spaces), policy_problem=None)
    assert [a for a in step.actions if isinstance(a, core.DeletePooledSpace)] == [
        core.DeletePooledSpace("agents/ags-p1")
    ]
    assert not [a for a in step.actions if isinstance(a, core.CreatePooledSpace)]

    # The spec changed back within the build: the old ready ones are current again, the surplus goes.
    back = decide(pool({"replicas": 2}, spaces))
    kept = {e.space_id for e in back.status.spaces if e.state == PooledSpaceState.READY}
    assert kept == {"agents/ags-p1", "agents/ags-p2"}
    assert {a.space_id for a in back.actions} == {e.space_id for e in fresh}
    assert all(isinstance(a, core.DeletePooledSpace) for a in back.actions)


def test_no_ready_space_falls_back_to_cold_and_says_so() -> None:
    session = new_session({"poolRef": {"name": "warm"}})
    cold = core.cold_status(session.status, Reason.NO_WARM_SPACE, "pool warm has no ready Space", 1, NOW)
    assert cold.launch_type == LaunchType.COLD and cold.space_id is None
    claim = next(c for c in cold.conditions if c.type == core.WARM_CLAIM)
    assert claim.status == "False" and "no ready Space" in claim.message
    assert not core.handover_pending(cold)


def test_an_unreadable_pool_spec_is_a_stalled_condition_and_touches_no_space() -> None:
    """A spec the API server admitted but the operator cannot read (an older CRD) stops nothing: the
    pool says why, keeps its Spaces as they are (none built, retired or scaled on half a spec)."""
    body = {
        "metadata": {"name": "warm", "namespace": "team-a", "uid": POOL_UID, "generation": 4},
        "spec": {"replicas": 3, "sleepTimeSeconds": "soon"},
        "status": {"spaces": [entry(1), entry(2, specHash="earlier")]},
    }
    unreadable = pools_shell.pool_from_body(body)
    assert unreadable.spec_problem is not None and "sleepTimeSeconds" in unreadable.spec_problem
    assert unreadable.spec.replicas == 3  # what parses is kept
    plan = decide(unreadable, spaces={"agents/ags-p1": seen(running("agents/ags-p1"))})
    assert plan.actions == []
    found = {c.type: (c.status, c.reason) for c in plan.status.conditions}
    assert found[READY] == ("False", Reason.SPEC_INVALID)
    assert found["Stalled"] == ("True", Reason.SPEC_INVALID)
    assert plan.status.observed_generation == 4
    assert plan.requeue_after is None or plan.requeue_after > 0
    # It holds 2 of the 3 asked for because it cannot read its spec, not because the operator caps it.
    assert Reason.REPLICAS_CAPPED not in [note.reason for note in plan.events]
