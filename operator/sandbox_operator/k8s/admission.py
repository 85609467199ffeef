"""The admission policy that guards approvals, Secret references and the finalizer: its one definition.

The API server, not the operator, knows who sends a request. This ValidatingAdmissionPolicy
admits a new or changed `spec.approval` or `spec.denial` only from a user entitled to approve that
flavor in the session's namespace, writing their own username (and only groups they are in), a
`spec.requestedBy` only as its writer's own username, and a
`spec.secrets` reference only from a user who may read that Secret, and the finalizer's removal only
from who may write the object's status (the operator). The chart's template and
`deploy/approval-policy.yaml` are generated from here (`make crd`), and the operator compares
what the API server holds with `POLICY` before it trusts an approval or reads a Secret.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from sandbox_operator import api

POLICY_NAME = "sandbox-operator-approval"

#: Every Secret an AgentSession may name, one CEL list of names per line; `{o}` is the object.
#: A new Secret reference in the spec is one more line here.
SECRET_REFERENCES = [
    "(has({o}.spec.secrets) ? {o}.spec.secrets.map(s, s.secretKeyRef.name) : [])",
    "(has({o}.spec.hubTokenSecretRef) ? [{o}.spec.hubTokenSecretRef.name] : [])",
]


def _secret_names(obj: str) -> str:
    return " + ".join(reference.format(o=obj) for reference in SECRET_REFERENCES)


_HARDWARE = f"authorizer.group('{api.GROUP}').resource('hardware').namespace(request.namespace)"
#: The flavor a session requests (the schema defaults it; a pool has none).
_REQUESTED = f"(has(object.spec.hardware) ? object.spec.hardware : '{api.Hardware.CPU_BASIC.value}')"
_SECRETS = "authorizer.group('').resource('secrets').namespace(request.namespace)"

VARIABLES: list[dict[str, str]] = [
    {
        "name": "approvalChanged",
        "expression": "has(object.spec.approval) && (oldObject == null || !has(oldObject.spec.approval) || "
        "oldObject.spec.approval != object.spec.approval)",
    },
    {
        "name": "denialChanged",
        "expression": "has(object.spec.denial) && (oldObject == null || !has(oldObject.spec.denial) || "
        "oldObject.spec.denial != object.spec.denial)",
    },
    {
        # Who asks for a flavor is shown to approvers: it must be whoever sets it, or changes the flavor to
        # a paid one. Going back to free hardware asks nobody for anything, so anyone may, beside it.
        "name": "requesterChanged",
        "expression": "has(object.spec.requestedBy) && (oldObject == null || "
        "!has(oldObject.spec.requestedBy) || oldObject.spec.requestedBy != object.spec.requestedBy || "
        "(oldObject.spec.hardware != object.spec.hardware && "
        f"object.spec.hardware != '{api.Hardware.CPU_BASIC}'))",
    },
    {
        # Without the finalizer the object goes at once: its Space is neither deleted nor its paid
        # hardware accounted for. kopf removes it, as the operator, once the finalizer's work is done.
        "name": "finalizerDropped",
        "expression": f"oldObject != null && has(oldObject.metadata.finalizers) && "
        f"'{api.FINALIZER}' in oldObject.metadata.finalizers && !(has(object.metadata.finalizers) && "
        f"'{api.FINALIZER}' in object.metadata.finalizers)",
    },
    {"name": "hardwareAuthorizer", "expression": _HARDWARE},
    {"name": "secretNames", "expression": _secret_names("object")},
    {"name": "oldSecretNames", "expression": f"oldObject == null ? [] : {_secret_names('oldObject')}"},
    {
        "name": "unreadableSecrets",
        "expression": "variables.secretNames == variables.oldSecretNames ? [] : "
        f"variables.secretNames.filter(n, !{_SECRETS}.name(n).check('get').allowed())",
    },
]

VALIDATIONS: list[dict[str, str]] = [
    {
        "expression": "!variables.approvalChanged || "
        "object.spec.approval.approvedBy == request.userInfo.username",
        "messageExpression": "'spec.approval.approvedBy must be your own username \"' + "
        "request.userInfo.username + '\", not \"' + object.spec.approval.approvedBy + '\"'",
        "reason": "Forbidden",
    },
    {
        "expression": "!variables.approvalChanged || !has(object.spec.approval.approverGroups) || "
        "object.spec.approval.approverGroups.all(g, g in request.userInfo.groups)",
        "messageExpression": "'spec.approval.approverGroups may name only groups you are in: ' + "
        "object.spec.approval.approverGroups.filter(g, !(g in request.userInfo.groups)).join(', ')",
        "reason": "Forbidden",
    },
    {
        "expression": "!variables.approvalChanged || !has(object.spec.approval.hardware) || "
        "variables.hardwareAuthorizer.name(object.spec.approval.hardware).check('approve').allowed()",
        "messageExpression": "'user \"' + request.userInfo.username + '\" may not approve hardware ' + "
        "object.spec.approval.hardware + ' in namespace ' + request.namespace + ': it needs the verb "
        "\"approve\" on hardware/' + object.spec.approval.hardware + ' in "
        f"{api.GROUP} (ClusterRole sandbox-operator-approver grants every flavor)'",
        "reason": "Forbidden",
    },
    {
        "expression": "!variables.approvalChanged || has(object.spec.approval.hardware) || "
        "variables.hardwareAuthorizer.check('approve').allowed()",
        "messageExpression": "'user \"' + request.userInfo.username + '\" may not grant a standing hardware "
        "budget in namespace ' + request.namespace + ': it needs the verb \"approve\" on every hardware "
        f"flavor in {api.GROUP} (ClusterRole sandbox-operator-approver)'",
        "reason": "Forbidden",
    },
    {
        # An approval grants what the approver saw: the flavor the session asks for as it is written. An
        # editor's switch to another flavor between the approver's look and the write makes it refused
        # here; a switch after it, the operator's verdict (the approval names another flavor).
        "expression": "!variables.approvalChanged || !has(object.spec.approval.hardware) || "
        f"object.spec.approval.hardware == {_REQUESTED}",
        "messageExpression": "'spec.approval.hardware ' + object.spec.approval.hardware + ' is not the "
        f"flavor the session requests now (' + {_REQUESTED} + '): an approval is for the requested flavor; "
        "look at the session again and approve what it asks for'",
        "reason": "Invalid",
    },
    {
        "expression": "!variables.denialChanged || object.spec.denial.deniedBy == request.userInfo.username",
        "messageExpression": "'spec.denial.deniedBy must be your own username \"' + "
        "request.userInfo.username + '\", not \"' + object.spec.denial.deniedBy + '\"'",
        "reason": "Forbidden",
    },
    {
        "expression": "!variables.denialChanged || !has(object.spec.denial.approverGroups) || "
        "object.spec.denial.approverGroups.all(g, g in request.userInfo.groups)",
        "messageExpression": "'spec.denial.approverGroups may name only groups you are in: ' + "
        "object.spec.denial.approverGroups.filter(g, !(g in request.userInfo.groups)).join(', ')",
        "reason": "Forbidden",
    },
    {
        "expression": "!variables.denialChanged || "
        "variables.hardwareAuthorizer.name(object.spec.denial.hardware).check('approve').allowed()",
        "messageExpression": "'user \"' + request.userInfo.username + '\" may not deny hardware ' + "
        "object.spec.denial.hardware + ' in namespace ' + request.namespace + ': only who may approve it "
        "may deny it (the verb \"approve\" on hardware/' + object.spec.denial.hardware + ' in "
        f"{api.GROUP})'",
        "reason": "Forbidden",
    },
    {
        "expression": "!variables.requesterChanged || object.spec.requestedBy == request.userInfo.username",
        "messageExpression": "'spec.requestedBy must be your own username \"' + request.userInfo.username + "
        "'\" (or be left out), not \"' + object.spec.requestedBy + '\"'",
        "reason": "Forbidden",
    },
    {
        # Who may write the object's status: the operator, not a session editor (nor the edit role).
        "expression": "!variables.finalizerDropped || "
        f"authorizer.group('{api.GROUP}').resource(request.resource.resource).subresource('status')"
        ".namespace(request.namespace).name(object.metadata.name).check('patch').allowed()",
        "messageExpression": "'user \"' + request.userInfo.username + '\" may not remove the finalizer "
        f"{api.FINALIZER}: the operator removes it once the Space is deleted (or released), which "
        "deleting the object asks for'",
        "reason": "Forbidden",
    },
    {
        "expression": "variables.unreadableSecrets.size() == 0",
        # The variable (its authorizer calls) cannot be read from a messageExpression: name them all.
        "messageExpression": "'user \"' + request.userInfo.username + '\" may not get every Secret the "
        "session names (' + variables.secretNames.join(', ') + ') in namespace ' + request.namespace + ': a "
        "session may name only Secrets its author may read'",
        "reason": "Forbidden",
    },
]

POLICY: dict[str, Any] = {
    "apiVersion": "admissionregistration.k8s.io/v1",
    "kind": "ValidatingAdmissionPolicy",
    "metadata": {"name": POLICY_NAME, "labels": {"app.kubernetes.io/part-of": "sandbox-operator"}},
    "spec": {
        "failurePolicy": "Fail",
        "matchConstraints": {
            "resourceRules": [
                {
                    "apiGroups": [api.GROUP],
                    "apiVersions": ["*"],
                    "operations": ["CREATE", "UPDATE"],
                    # A pool's spec.secrets go to every Space it builds: checked the same way.
                    "resources": [api.PLURAL, api.POOL_PLURAL],
                }
            ]
        },
        "variables": VARIABLES,
        "validations": VALIDATIONS,
    },
}

BINDING: dict[str, Any] = {
    "apiVersion": "admissionregistration.k8s.io/v1",
    "kind": "ValidatingAdmissionPolicyBinding",
    "metadata": {"name": POLICY_NAME, "labels": {"app.kubernetes.io/part-of": "sandbox-operator"}},
    "spec": {"policyName": POLICY_NAME, "validationActions": ["Deny"]},
}


def render_policy() -> str:
    """The policy and its binding as YAML, exactly as committed in deploy/ and the chart's files/."""
    header = (
        "# Generated by `sandbox-operator approval-policy` from sandbox_operator/k8s/admission.py.\n"
        "# Do not edit.\n"
        "# Who may approve paid hardware and name Secrets in an AgentSession, checked by the API server.\n"
    )
    dump = [yaml.safe_dump(obj, sort_keys=False, width=120) for obj in (POLICY, BINDING)]
    return header + "---\n".join(dump)


# Is it enforcing? ---------------------------------------------------------------------------


def _covers(values: Sequence[str] | None, wanted: str) -> bool:
    return bool(values) and ("*" in (values or []) or wanted in (values or []))


def _matches_every_session(spec: Mapping[str, Any]) -> bool:
    """The policy's match constraints reach every AgentSession create and update."""
    constraints = spec.get("matchConstraints") or {}
    if (
        constraints.get("excludeResourceRules")
        or constraints.get("namespaceSelector")
        or constraints.get("objectSelector")
    ):
        return False
    return all(
        any(
            _covers(rule.get("apiGroups"), api.GROUP)
            and _covers(rule.get("resources"), plural)
            and _covers(rule.get("operations"), "CREATE")
            and _covers(rule.get("operations"), "UPDATE")
            and not rule.get("resourceNames")
            for rule in constraints.get("resourceRules") or []
        )
        for plural in (api.PLURAL, api.POOL_PLURAL)
    )


def _binds_everything(binding: Mapping[str, Any]) -> bool:
    spec = binding.get("spec") or {}
    resources = spec.get("matchResources") or {}
    narrowed = any(
        resources.get(key)
        for key in ("namespaceSelector", "objectSelector", "resourceRules", "excludeResourceRules")
    )
    return (
        spec.get("policyName") == POLICY_NAME
        and "Deny" in (spec.get("validationActions") or [])
        and not spec.get("paramRef")
        and not narrowed
    )


def _logic(spec: Mapping[str, Any]) -> tuple[Any, Any]:
    variables = [(v.get("name"), v.get("expression")) for v in spec.get("variables") or []]
    validations = [v.get("expression") for v in spec.get("validations") or []]
    return variables, validations


def enforcement_problem(
    policy: Mapping[str, Any] | None, bindings: Sequence[Mapping[str, Any]]
) -> str | None:
    """Why the API server does not enforce this version's policy on every session; None if it does."""
    if policy is None:
        return f"the ValidatingAdmissionPolicy {POLICY_NAME} is not installed"
    spec = policy.get("spec") or {}
    if _logic(spec) != _logic(POLICY["spec"]):
        return (
            f"the ValidatingAdmissionPolicy {POLICY_NAME} is not the one this operator version expects "
            "(its variables or validations differ)"
        )
    if spec.get("failurePolicy", "Fail") != "Fail":
        policy_says = spec.get("failurePolicy")
        return f"the ValidatingAdmissionPolicy {POLICY_NAME} has failurePolicy {policy_says}, not Fail"
    if not _matches_every_session(spec):
        return (
            f"the ValidatingAdmissionPolicy {POLICY_NAME} does not match every AgentSession and "
            "AgentSessionPool create and update"
        )
    if not any(_binds_everything(binding) for binding in bindings):
        return (
            f"no ValidatingAdmissionPolicyBinding binds {POLICY_NAME} with validationActions [Deny] "
            "to every namespace"
        )
    return None


def enforced_since(policy: Mapping[str, Any] | None, bindings: Sequence[Mapping[str, Any]]) -> str | None:
    """Since when the API server has held a policy of this name and a binding that enforces it on
    every session (the later of their creation times, RFC 3339; editing them in place keeps those),
    whatever their checks; None without both. A spec.approval written after that went through an
    admission policy that saw its writer's own name and groups (what 0.1.0's chart installed)."""
    if policy is None:
        return None
    # The API server writes them as "YYYY-MM-DDTHH:MM:SSZ": ordered as text as in time.
    created = [
        str(b.get("metadata", {}).get("creationTimestamp") or "") for b in bindings if _binds_everything(b)
    ]
    binding = min((time for time in created if time), default="")
    since = str(policy.get("metadata", {}).get("creationTimestamp") or "")
    return max(since, binding) if since and binding else None


@dataclass(frozen=True)
class ApproverQuestion:
    """May `user` (with `groups`) approve `flavor` (None: every flavor) in `namespace`? Asked by a
    SubjectAccessReview."""

    user: str
    groups: tuple[str, ...]
    namespace: str
    flavor: str | None

    def review(self) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "group": api.GROUP,
            "resource": "hardware",
            "verb": "approve",
            "namespace": self.namespace,
        }
        if self.flavor is not None:
            attributes["name"] = self.flavor
        return {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {"user": self.user, "groups": list(self.groups), "resourceAttributes": attributes},
        }


def denier_question(spec: api.AgentSessionSpec, namespace: str) -> ApproverQuestion | None:
    """The question to ask before honouring a denial of the requested flavor; None when none applies."""
    denial = spec.denial
    if denial is None or str(denial.hardware) != str(spec.hardware):
        return None
    return ApproverQuestion(
        user=denial.denied_by,
        groups=tuple(denial.approver_groups or ()),
        namespace=namespace,
        flavor=str(denial.hardware),
    )


def approver_question(spec: api.AgentSessionSpec, namespace: str) -> ApproverQuestion | None:
    """The question to ask before acting on the session's approval; None when it has none."""
    approval = spec.approval
    if approval is None:
        return None
    return ApproverQuestion(
        user=approval.approved_by,
        groups=tuple(approval.approver_groups or ()),
        namespace=namespace,
        flavor=str(approval.hardware) if approval.hardware is not None else None,
    )
