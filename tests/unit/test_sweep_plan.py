"""The orphan sweeper's decision: which listed Spaces it may delete, and which it must not touch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sandbox_operator.config.settings import OperatorConfig
from sandbox_operator.hub.spaces import ListedSpace, Ownership
from sandbox_operator.sweeper import (
    Policy,
    Verdict,
    claims,
    markers_needed,
    name_uid,
    ours_by_name,
    owners_to_sweep,
    plan,
    pool_claims,
)

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
POLICY = Policy(
    cluster_id="prod", prefix="ags", grace=600, max_deletes=10, dry_run=False, namespaces=frozenset()
)


def uid(n: int) -> str:
    return f"00000000-0000-0000-0000-{n:012d}"


def listed(n: int, age: float = 3600) -> ListedSpace:
    return ListedSpace(f"agents/ags-{uid(n)}", NOW - timedelta(seconds=age))


def marker(n: int, cluster: str = "prod", session: str = "team/s") -> Ownership:
    return Ownership(uid(n), cluster, session)


def verdicts(decisions: list) -> dict[str, Verdict]:  # type: ignore[type-arg]
    return {d.space_id: d.verdict for d in decisions}


def test_names_must_match_whole() -> None:
    assert name_uid(f"agents/ags-{uid(1)}", "ags") == uid(1)
    assert name_uid(f"agents/bags-{uid(1)}", "ags") is None
    assert name_uid(f"agents/ags-{uid(1)}-copy", "ags") is None
    spaces = [listed(1), ListedSpace("agents/ags-demo", NOW)]
    assert ours_by_name(spaces, POLICY) == [listed(1)]


def test_only_old_unclaimed_spaces_need_their_marker_read() -> None:
    spaces = [listed(1), listed(2, age=60), listed(3)]
    assert markers_needed(spaces, frozenset({uid(3)}), NOW, POLICY) == [listed(1).space_id]


def test_an_unclaimed_space_of_this_cluster_is_deleted() -> None:
    decisions = plan([listed(1)], frozenset(), {listed(1).space_id: marker(1)}, NOW, POLICY)
    assert verdicts(decisions) == {listed(1).space_id: Verdict.DELETE}
    assert decisions[0].session == "team/s" and decisions[0].session_uid == uid(1)


def test_never_touches_unmarked_foreign_released_claimed_young_or_gone() -> None:
    spaces = [listed(n) for n in range(1, 6)] + [listed(6, age=10)]
    markers = {
        listed(1).space_id: Ownership("", "", ""),
        listed(2).space_id: marker(2, cluster="staging"),
        listed(3).space_id: Ownership(uid(3), "", "team/kept"),  # released: deletionPolicy Orphan
        listed(4).space_id: marker(99),  # marker names a live session though the name does not
        listed(5).space_id: None,
    }
    found = verdicts(plan(spaces, frozenset({uid(99)}), markers, NOW, POLICY))
    assert found == {
        listed(1).space_id: Verdict.UNMARKED,
        listed(2).space_id: Verdict.OTHER_CLUSTER,
        listed(3).space_id: Verdict.OTHER_CLUSTER,
        listed(4).space_id: Verdict.CLAIMED,
        listed(5).space_id: Verdict.GONE,
        listed(6).space_id: Verdict.TOO_YOUNG,
    }


def test_sessions_of_unwatched_namespaces_are_out_of_scope() -> None:
    policy = Policy("prod", "ags", 600, 10, False, frozenset({"team"}))
    markers = {listed(1).space_id: marker(1, session="other/s"), listed(2).space_id: marker(2)}
    found = verdicts(plan([listed(1), listed(2)], frozenset(), markers, NOW, policy))
    assert found == {listed(1).space_id: Verdict.OUT_OF_SCOPE, listed(2).space_id: Verdict.DELETE}


def test_cap_deletes_the_oldest_and_defers_the_rest() -> None:
    policy = Policy("prod", "ags", 600, 2, False, frozenset())
    spaces = [listed(1, age=1000), listed(2, age=3000), listed(3, age=2000)]
    markers = {s.space_id: marker(n) for n, s in enumerate(spaces, 1)}
    found = verdicts(plan(spaces, frozenset(), markers, NOW, policy))
    assert found == {
        listed(2).space_id: Verdict.DELETE,
        listed(3).space_id: Verdict.DELETE,
        listed(1).space_id: Verdict.DEFERRED,
    }


def test_dry_run_deletes_nothing() -> None:
    policy = Policy("prod", "ags", 600, 10, True, frozenset())
    found = verdicts(plan([listed(1)], frozenset(), {listed(1).space_id: marker(1)}, NOW, policy))
    assert found == {listed(1).space_id: Verdict.WOULD_DELETE}


def test_a_live_pool_claims_its_unclaimed_spaces_and_those_it_records() -> None:
    """A pooled Space's marker names its pool; the pool also records it before it exists."""
    pools = [
        {
            "metadata": {"uid": uid(90)},
            "status": {"spaces": [{"spaceId": f"agents/ags-{uid(3)}"}, {"spaceId": f"agents/ags-{uid(4)}"}]},
        }
    ]
    claimed = claims([{"metadata": {"uid": uid(1)}}]) | pool_claims(pools)
    spaces = [listed(2), listed(3), listed(5)]
    markers = {s.space_id: marker(90) for s in spaces}  # all three carry the pool's marker
    result = verdicts(plan(spaces, claimed, markers, NOW, POLICY))
    assert result == {s.space_id: Verdict.CLAIMED for s in spaces}
    # The pool gone, its Spaces are orphans like any other.
    gone = verdicts(plan(spaces, claims([]), markers, NOW, POLICY))
    assert set(gone.values()) == {Verdict.DELETE}


def test_lists_only_owners_a_session_may_create_spaces_in() -> None:
    """A session naming a disallowed owner got no Space there: its owner is never listed, so a tenant
    cannot make every pass list (and wait on) Hub namespaces of its choosing."""
    config = OperatorConfig(
        default_owner="agents",
        default_template="t/t",
        allowed_owners=frozenset({"team-*", "shared"}),
        sweep_owners=frozenset({"legacy"}),
    )
    named = ["team-a", "someone-else", "team-b", "", "victim-org"]
    sessions = [{"spec": {"owner": owner}} for owner in named] + [{"spec": {}}]
    assert owners_to_sweep(sessions, config) == ["agents", "legacy", "shared", "team-a", "team-b"]
