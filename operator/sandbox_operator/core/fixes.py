"""How to fix what the core reports: remedies its conditions name, defined once for the core and the
shell (`k8s/admission.py` ships the policy they point at).
"""

from __future__ import annotations

#: Where the admission policy is shipped on its own, for clusters that run the operator without the chart.
POLICY_FILE = "deploy/approval-policy.yaml"
#: How to install it: the chart, or the policy alone.
HOW_TO_FIX = (
    "install the Helm chart with approval.enabled=true, or the policy alone: "
    f"`kubectl apply -f {POLICY_FILE}` "
    "(the same as `sandbox-operator approval-policy | kubectl apply -f -`)"
)
