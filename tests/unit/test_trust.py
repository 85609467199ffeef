"""What the operator trusts: the approval policy, the approver, allow-lists, the connection Secret name."""

from __future__ import annotations

import copy
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from sandbox_operator.api import AgentSessionSpec, AgentSessionStatus, Phase
from sandbox_operator.config.settings import OperatorConfig
from sandbox_operator.core.creation import creation_refusal
from sandbox_operator.core.fixes import POLICY_FILE
from sandbox_operator.core.lifecycle import decide
from sandbox_operator.core.model import (
    HealthResult,
    Observation,
    RecordIntent,
    RequestHardware,
    Session,
    SpaceView,
)
from sandbox_operator.core.money import INSECURE_TRUST_WARNING, judge_hardware
from sandbox_operator.hub.spaces import ListedSpace, Ownership
from sandbox_operator.k8s import admission as policy
from sandbox_operator.k8s.client import connection_claim
from sandbox_operator.sweeper import Policy, Verdict, claims, plan
from tests.support.core import NOW, SPACE_ID, UID, new_session

ROOT = Path(__file__).resolve().parents[2]
CONFIG = OperatorConfig(
    default_owner="agents",
    default_template="templates/agent-sandbox",
    cluster_id="c1",
    allowed_templates=frozenset({"team-*/sandbox"}),
    allowed_owners=frozenset({"research", "team-*"}),
)
APPROVED = {"hardware": "a10g-small", "approval": {"hardware": "a10g-small", "approvedBy": "alice"}}
PRICES = {"a10g-small": 1.0}


def session(spec: dict[str, Any] | None = None, status: dict[str, Any] | None = None) -> Session:
    return new_session(spec, status)


def ready(plan_status: AgentSessionStatus) -> tuple[str, str, str]:
    found = next(c for c in plan_status.conditions if c.type == "Ready")
    return found.status, found.reason, found.message


# One definition of the policy ------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["deploy/approval-policy.yaml", "charts/sandbox-operator/files/approval-policy.yaml"]
)
def test_shipped_policy_files_are_generated_from_the_python_definition(path: str) -> None:
    assert (ROOT / path).read_text() == policy.render_policy(), f"{path} is stale: run `make crd`"


def served(obj: dict[str, Any]) -> dict[str, Any]:
    """The object as the API server returns it: defaults filled in, status and metadata added."""
    out = copy.deepcopy(obj)
    out["metadata"] |= {"uid": "u", "resourceVersion": "1", "generation": 1}
    spec = out["spec"]
    if "matchConstraints" in spec:
        spec["matchConstraints"] |= {
            "matchPolicy": "Equivalent",
            "namespaceSelector": {},
            "objectSelector": {},
        }
        for rule in spec["matchConstraints"]["resourceRules"]:
            rule["scope"] = "*"
        out["status"] = {"observedGeneration": 1, "typeChecking": {}}
    return out


def test_the_policy_as_served_is_enforced() -> None:
    assert policy.enforcement_problem(served(policy.POLICY), [served(policy.BINDING)]) is None


def test_the_policy_is_enforced_since_it_and_a_binding_enforcing_it_both_exist() -> None:
    def created(obj: dict[str, Any], at: str) -> dict[str, Any]:
        out = served(obj)
        out["metadata"]["creationTimestamp"] = at
        return out

    early, late = "2026-11-01T08:00:00Z", "2026-11-20T09:30:00Z"
    since = policy.enforced_since
    assert since(created(policy.POLICY, early), [created(policy.BINDING, late)]) == late
    assert since(created(policy.POLICY, late), [created(policy.BINDING, early)]) == late
    warn_only = _mutated(policy.BINDING, lambda spec: spec.update(validationActions=["Warn"]))
    warn_only["metadata"]["creationTimestamp"] = early
    assert since(created(policy.POLICY, early), [warn_only, created(policy.BINDING, late)]) == late
    assert since(created(policy.POLICY, early), [warn_only]) is None
    assert since(None, [created(policy.BINDING, early)]) is None


def _mutated(obj: dict[str, Any], change: Any) -> dict[str, Any]:
    copied = served(obj)
    change(copied["spec"])
    return copied


@pytest.mark.parametrize(
    ("policy_object", "bindings", "said"),
    [
        (None, [], "is not installed"),
        (
            _mutated(policy.POLICY, lambda spec: spec["validations"].pop()),
            [served(policy.BINDING)],
            "not the one this operator version expects",
        ),
        (
            _mutated(policy.POLICY, lambda spec: spec["validations"][0].update(expression="true")),
            [served(policy.BINDING)],
            "not the one this operator version expects",
        ),
        (
            _mutated(policy.POLICY, lambda spec: spec.update(failurePolicy="Ignore")),
            [served(policy.BINDING)],
            "failurePolicy Ignore",
        ),
        (
            _mutated(
                policy.POLICY,
                lambda spec: spec["matchConstraints"]["resourceRules"][0].update(operations=["CREATE"]),
            ),
            [served(policy.BINDING)],
            "does not match every AgentSession",
        ),
        (
            _mutated(
                policy.POLICY,
                lambda spec: spec["matchConstraints"]["resourceRules"][0].update(resources=["agentsessions"]),
            ),
            [served(policy.BINDING)],
            "does not match every AgentSession and AgentSessionPool",
        ),
        (served(policy.POLICY), [], "no ValidatingAdmissionPolicyBinding"),
        (
            served(policy.POLICY),
            [_mutated(policy.BINDING, lambda spec: spec.update(validationActions=["Warn", "Audit"]))],
            "validationActions [Deny]",
        ),
        (
            served(policy.POLICY),
            [
                _mutated(
                    policy.BINDING,
                    lambda spec: spec.update(
                        matchResources={"namespaceSelector": {"matchLabels": {"x": "y"}}}
                    ),
                )
            ],
            "to every namespace",
        ),
        (
            served(policy.POLICY),
            [_mutated(policy.BINDING, lambda spec: spec.update(policyName="something-else"))],
            "no ValidatingAdmissionPolicyBinding",
        ),
    ],
)
def test_a_missing_changed_or_unbound_policy_is_not_enforced(
    policy_object: dict[str, Any] | None, bindings: list[dict[str, Any]], said: str
) -> None:
    problem = policy.enforcement_problem(policy_object, bindings)
    assert problem is not None and said in problem


def test_one_more_secret_reference_is_one_more_line() -> None:
    names = next(v for v in policy.VARIABLES if v["name"] == "secretNames")["expression"]
    assert names == " + ".join(ref.format(o="object") for ref in policy.SECRET_REFERENCES)


def test_approver_review_asks_in_the_sessions_namespace_with_the_named_groups() -> None:
    spec = AgentSessionSpec.model_validate(
        {
            "hardware": "t4-small",
            "approval": {"hardware": "t4-small", "approvedBy": "carol", "approverGroups": ["gpu-approvers"]},
        }
    )
    question = policy.approver_question(spec, "team-a")
    assert question is not None
    assert question.review()["spec"] == {
        "user": "carol",
        "groups": ["gpu-approvers"],
        "resourceAttributes": {
            "group": "agents.sandbox-operator.dev",
            "resource": "hardware",
            "verb": "approve",
            "namespace": "team-a",
            "name": "t4-small",
        },
    }
    budget = AgentSessionSpec.model_validate({"approval": {"maxUsdPerHour": 2, "approvedBy": "alice"}})
    standing = policy.approver_question(budget, "team-a")
    assert standing is not None and "name" not in standing.review()["spec"]["resourceAttributes"]


# Approvals count only when enforced and confirmed -------------------------------------------


def test_approval_is_not_trusted_without_the_enforced_policy() -> None:
    spec = AgentSessionSpec.model_validate(APPROVED)
    verdict = judge_hardware(
        spec, CONFIG, PRICES, policy_problem="the policy is not installed", approver_authorized=None
    )
    assert (verdict.approved, verdict.reason) == (False, "ApprovalNotEnforced")
    assert "the policy is not installed" in verdict.message and POLICY_FILE in verdict.message


@pytest.mark.parametrize("authorized", [False, None])
def test_approval_by_someone_not_authorized_is_not_acted_on(authorized: bool | None) -> None:
    spec = AgentSessionSpec.model_validate(APPROVED)
    verdict = judge_hardware(spec, CONFIG, PRICES, policy_problem=None, approver_authorized=authorized)
    assert (verdict.approved, verdict.reason) == (False, "ApproverNotAuthorized")
    assert "alice" in verdict.message and "hardware/a10g-small" in verdict.message


def test_enforced_and_authorized_approval_is_approved() -> None:
    spec = AgentSessionSpec.model_validate(APPROVED)
    verdict = judge_hardware(spec, CONFIG, PRICES, policy_problem=None, approver_authorized=True)
    assert (verdict.approved, verdict.reason) == (True, "Approved")


def test_insecure_trust_approves_and_says_so() -> None:
    config = CONFIG.model_copy(update={"insecure_trust_approvals": True})
    spec = AgentSessionSpec.model_validate(APPROVED)
    verdict = judge_hardware(spec, config, PRICES, policy_problem="not installed", approver_authorized=None)
    assert verdict.approved and INSECURE_TRUST_WARNING in verdict.message


def test_paid_hardware_is_never_requested_while_the_policy_is_not_enforced() -> None:
    space = SpaceView(SPACE_ID, "RUNNING", "cpu-basic", "cpu-basic", True, "u", "s", UID)
    recorded = {"spaceId": SPACE_ID, "connectionSecret": "demo-sandbox", "url": "u"}
    observed = Observation(space=space, token="t", connection_url="s", policy_problem="gone")
    result = decide(session(APPROVED, recorded), observed, CONFIG, NOW)
    assert not isinstance(result.action, RequestHardware)
    approved = next(c for c in result.status.conditions if c.type == "HardwareApproved")
    assert approved.reason == "ApprovalNotEnforced"
    assert any(e.reason == "ApprovalNotEnforced" and e.type == "Warning" for e in result.events)


# The Hub token is not lent -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ({"template": "other-team/private-model"}, "TemplateNotAllowed"),
        ({"owner": "someone-else"}, "OwnerNotAllowed"),
        ({"private": False}, "PublicSpaceNotAllowed"),
        ({"secrets": [{"name": "K", "secretKeyRef": {"name": "s", "key": "k"}}]}, "SecretsNotEnforced"),
    ],
)
def test_sessions_outside_the_allow_lists_get_no_intent_and_no_action(
    spec: dict[str, Any], reason: str
) -> None:
    result = decide(session(spec), Observation(policy_problem="the policy is not installed"), CONFIG, NOW)
    assert result.action is None and result.status.space_id is None
    assert ready(result.status)[:2] == ("False", reason)
    assert result.status.phase == Phase.FAILED
    # No connection Secret is written, so none is claimed to hold what agent pods need.
    observed = Observation(policy_problem="the policy is not installed", read_token="hf_reader")
    result = decide(session(spec), observed, CONFIG, NOW)
    access = next(c for c in result.status.conditions if c.type == "AgentAccess")
    assert (access.status, access.reason) == ("False", "NoConnectionSecret")


@pytest.mark.parametrize(
    "spec",
    [
        {"template": "team-b/sandbox", "owner": "team-b"},
        {"owner": "research"},
        {"template": "templates/agent-sandbox", "owner": "agents"},
        {"secrets": [{"name": "K", "secretKeyRef": {"name": "s", "key": "k"}}]},
    ],
)
def test_allowed_sessions_are_created(spec: dict[str, Any]) -> None:
    result = decide(session(spec), Observation(policy_problem=None), CONFIG, NOW)
    assert isinstance(result.action, RecordIntent)


def test_public_spaces_where_the_operator_permits_them() -> None:
    config = CONFIG.model_copy(update={"allow_public_spaces": True})
    assert (
        creation_refusal(AgentSessionSpec.model_validate({"private": False}), Observation(), config) is None
    )


def test_a_lost_space_is_not_recreated_from_a_template_no_longer_allowed() -> None:
    recorded = {"spaceId": SPACE_ID, "connectionSecret": "demo-sandbox"}
    result = decide(
        session({"template": "gone/away"}, recorded), Observation(token="t", policy_problem=None), CONFIG, NOW
    )
    assert result.action is None and ready(result.status)[1] == "TemplateNotAllowed"


def test_a_foreign_connection_secret_is_a_condition_not_an_overwrite() -> None:
    observed = Observation(policy_problem=None, connection_conflict="Secret team-a/demo-sandbox exists")
    result = decide(session(), observed, CONFIG, NOW)
    assert result.action is None and result.status.space_id is None
    status, reason, message = ready(result.status)
    assert (status, reason) == ("False", "ConnectionSecretConflict") and "team-a/demo-sandbox" in message
    assert result.requeue_after is not None


def _secret(labels: dict[str, str], owners: list[tuple[str, str, str, str]]) -> Any:
    refs = [{"apiVersion": a, "kind": k, "name": n, "uid": u} for a, k, n, u in owners]
    return {"metadata": {"labels": labels, "ownerReferences": refs}}


@pytest.mark.parametrize(
    ("secret", "claim"),
    [
        (None, "absent"),
        (_secret({}, [("agents.sandbox-operator.dev/v1alpha1", "AgentSession", "demo", UID)]), "ours"),
        (
            _secret(
                {"app.kubernetes.io/managed-by": "sandbox-operator"},
                [("agents.sandbox-operator.dev/v1alpha1", "AgentSession", "demo", "old-uid")],
            ),
            "stale",
        ),
        (_secret({}, []), "foreign"),
        (_secret({"app.kubernetes.io/managed-by": "sandbox-operator"}, []), "foreign"),
        (
            _secret(
                {"app.kubernetes.io/managed-by": "sandbox-operator"},
                [("agents.sandbox-operator.dev/v1alpha1", "AgentSession", "another", "x")],
            ),
            "foreign",
        ),
        (
            _secret({}, [("agents.sandbox-operator.dev/v1alpha1", "AgentSession", "demo", "old-uid")]),
            "foreign",
        ),
    ],
)
def test_only_our_own_or_a_predecessors_connection_secret_is_written(secret: Any, claim: str) -> None:
    assert connection_claim(secret, "demo", UID) == claim


# Sweeper: a live session's Space is never an orphan --------------------------------------------


def test_sweeper_keeps_a_space_a_live_session_names_whatever_its_marker() -> None:
    other_uid = "99999999-1111-2222-3333-444455556666"
    space_id = f"agents/ags-{other_uid}"
    listed = [ListedSpace(space_id, NOW - timedelta(hours=1))]
    live = [{"metadata": {"uid": UID}, "status": {"spaceId": space_id}}]
    rules = Policy(
        cluster_id="c1", prefix="ags", grace=0, max_deletes=10, dry_run=False, namespaces=frozenset()
    )
    marker = {space_id: Ownership(other_uid, "c1", "team-a/gone")}
    (decision,) = plan(listed, claims(live), marker, NOW, rules)
    assert decision.verdict is Verdict.CLAIMED
    (orphan,) = plan(listed, claims([]), marker, NOW, rules)
    assert orphan.verdict is Verdict.DELETE


@pytest.mark.parametrize(("problem", "authorized"), [("not installed", None), (None, False)])
def test_an_untrusted_approval_is_looked_at_again(problem: str | None, authorized: bool | None) -> None:
    space = SpaceView(SPACE_ID, "RUNNING", "cpu-basic", "cpu-basic", True, "u", "s", UID)
    recorded = {"spaceId": SPACE_ID, "connectionSecret": "demo-sandbox", "url": "u"}
    observed = Observation(
        space=space,
        token="t",
        connection_url="s",
        health=HealthResult(True, "ok"),
        policy_problem=problem,
        approver_authorized=authorized,
    )
    result = decide(session(APPROVED, recorded), observed, CONFIG, NOW)
    assert result.requeue_after == CONFIG.approval_recheck_interval
