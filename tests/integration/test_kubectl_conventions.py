"""What kubectl shows of the operator's work on the real control plane: one field manager for every
write it makes (kopf's included), Events from the operator's component and pod, the `-o wide`
columns, and spec lists that are maps by name under server-side apply."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from sandbox_operator import api
from sandbox_operator.k8s.transport import COMPONENT
from sandbox_testbench.controlplane import Kubectl
from tests.support import wait_for
from tests.support.harness import TEMPLATE, OperatorProcess, pool_manifest, session_manifest, wait_ready

#: The field manager of `kubectl apply` (client-side), as a user creates a session.
KUBECTL_APPLY = "kubectl-client-side-apply"
#: kubectl leaves managedFields out of what it prints unless asked.
SHOW_MANAGED = "--show-managed-fields"


def managers(obj: dict[str, Any]) -> set[tuple[str, str]]:
    """(manager, subresource) of every managedFields entry."""
    return {(entry["manager"], entry.get("subresource", "")) for entry in obj["metadata"]["managedFields"]}


def columns(printed: str) -> dict[str, str]:
    """The one row of `kubectl get` by column name (an empty cell is empty, not a missing column)."""
    header, row = printed.splitlines()
    starts = [match.start() for match in re.finditer(r"\S+", header)]
    ends = [*starts[1:], None]
    return {
        name: row[start:end].strip() for name, start, end in zip(header.split(), starts, ends, strict=True)
    }


def test_a_ready_sessions_writes_and_events_name_the_operator(
    kubectl: Kubectl, operator: OperatorProcess, namespace: str
) -> None:
    kubectl("apply", "-f", "-", stdin=session_manifest("kappa", namespace))
    wait_ready(kubectl, "kappa", namespace)
    session = kubectl.json("get", "ags", "kappa", "-n", namespace, SHOW_MANAGED)

    # The user's apply, then the operator: kopf's finalizer and annotations, its own status writes.
    assert managers(session) == {(KUBECTL_APPLY, ""), (COMPONENT, ""), (COMPONENT, "status")}
    secret = kubectl.json(
        "get", "secret", session["status"]["connectionSecret"], "-n", namespace, SHOW_MANAGED
    )
    assert managers(secret) == {(COMPONENT, "")}

    events = kubectl.json(
        "get", "events", "-n", namespace, "--field-selector", "involvedObject.name=kappa", SHOW_MANAGED
    )
    assert events["items"], "no Event about the session"
    for event in events["items"]:
        assert event["source"]["component"] == COMPONENT, event
        assert (event["reportingComponent"], event["reportingInstance"]) == (COMPONENT, operator.identity)
        assert {entry["manager"] for entry in event["metadata"]["managedFields"]} == {COMPONENT}
    # kubectl's From column: the component (and source.host, a node's name, which an operator has not).
    events_table = kubectl("describe", "ags", "kappa", "-n", namespace).stdout.split("\nEvents:")[1]
    header, *lines = events_table.strip().splitlines()
    assert header.split() == ["Type", "Reason", "Age", "From", "Message"]
    assert lines[1:] and all(line.split()[3] == COMPONENT for line in lines[1:]), events_table


def test_get_wide_shows_what_was_asked_for_and_what_it_costs(
    kubectl: Kubectl, operator: OperatorProcess, namespace: str
) -> None:
    kubectl("apply", "-f", "-", stdin=session_manifest("lambda", namespace, hardware="t4-small"))
    wait_ready(kubectl, "lambda", namespace)  # on cpu-basic, while t4-small waits for an approval

    wide = columns(kubectl("get", "ags", "lambda", "-n", namespace, "-o", "wide").stdout)
    assert list(wide)[:8] == ["NAME", "READY", "PHASE", "REASON", "HARDWARE", "SPACE", "EXPIRES", "AGE"]
    assert (wide["HARDWARE"], wide["REQUESTED"], wide["USD/HOUR"]) == ("cpu-basic", "t4-small", "0")
    assert wide["TEMPLATE"] == TEMPLATE  # the operator's default, as recorded
    assert wide["LAUNCH"] == ""  # no pool named


def test_get_says_why_a_session_is_not_ready(
    kubectl: Kubectl, operator: OperatorProcess, namespace: str
) -> None:
    kubectl("apply", "-f", "-", stdin=session_manifest("mu", namespace, template="elsewhere/template"))
    reason = '{.status.conditions[?(@.type=="Ready")].reason}'
    wait_for(
        lambda: kubectl("get", "ags", "mu", "-n", namespace, f"-o=jsonpath={reason}").stdout, 30, "a reason"
    )
    row = columns(kubectl("get", "ags", "mu", "-n", namespace).stdout)
    assert (row["READY"], row["REASON"]) == ("False", "TemplateNotAllowed")


def _secret(name: str, key: str) -> dict[str, Any]:
    return {"name": name, "secretKeyRef": {"name": "team-secrets", "key": key}}


@pytest.mark.parametrize(
    ("kind", "manifest"), [(api.PLURAL, session_manifest), (api.POOL_PLURAL, pool_manifest)]
)
def test_spec_secrets_are_a_map_by_name(
    kubectl: Kubectl, crd: None, namespace: str, kind: str, manifest: Any
) -> None:
    # No Space is made for either: the Secret is not there, and the pool keeps none.
    base = {"replicas": 0} if kind == api.POOL_PLURAL else {}
    twice = manifest("mapped", namespace, **base, secrets=[_secret("API_KEY", "a"), _secret("API_KEY", "b")])
    refused = kubectl("apply", "-f", "-", stdin=twice, check=False)
    assert refused.returncode != 0
    assert "spec.secrets[1]: Duplicate value" in refused.stderr, refused.stderr

    # Server-side apply merges entries by name: each field manager adds its own, none removes another's.
    for manager, entry in (("team-a", _secret("API_KEY", "a")), ("team-b", _secret("DB_URL", "b"))):
        applied = manifest("mapped", namespace, **base, secrets=[entry])
        kubectl("apply", "--server-side", f"--field-manager={manager}", "-f", "-", stdin=applied)
    found = kubectl.json("get", kind, "mapped", "-n", namespace, SHOW_MANAGED)
    assert [entry["name"] for entry in found["spec"]["secrets"]] == ["API_KEY", "DB_URL"]
    owned = {
        entry["manager"]: json.dumps(entry["fieldsV1"])
        for entry in found["metadata"]["managedFields"]
        if entry["manager"] in ("team-a", "team-b")
    }
    assert '"k:{\\"name\\":\\"API_KEY\\"}"' in owned["team-a"] and "DB_URL" not in owned["team-a"]
    assert '"k:{\\"name\\":\\"DB_URL\\"}"' in owned["team-b"] and "API_KEY" not in owned["team-b"]
