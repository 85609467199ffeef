"""The API types and the CRD generated from them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from huggingface_hub import SpaceHardware
from pydantic import ValidationError

from sandbox_operator.api import AgentSessionSpec, Hardware
from sandbox_operator.api.crd import build_crd, build_pool_crd, render_crd, render_pool_crd

ROOT = Path(__file__).resolve().parents[2]


def test_committed_crd_is_generated_output() -> None:
    committed = (ROOT / "crds" / "agentsessions.yaml").read_text()
    assert committed == render_crd(), (
        "crds/agentsessions.yaml is stale: run `sandbox-operator crd > crds/agentsessions.yaml`"
    )
    committed_pool = (ROOT / "crds" / "agentsessionpools.yaml").read_text()
    assert committed_pool == render_pool_crd(), "crds/agentsessionpools.yaml is stale: run `make crd`"


def test_pool_crd_has_the_scale_subresource_and_documents_every_field() -> None:
    version = build_pool_crd()["spec"]["versions"][0]
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    assert _walk(version["schema"]["openAPIV3Schema"]) == []


def test_hardware_enum_matches_the_hub_client() -> None:
    assert {h.value for h in Hardware} == {h.value for h in SpaceHardware}


def _walk(node: object, path: str = "") -> list[str]:
    """Paths of every schema property that lacks a description."""
    missing = []
    if isinstance(node, dict):
        for name, prop in node.get("properties", {}).items():
            here = f"{path}.{name}"
            if "description" not in prop and name not in ("apiVersion", "kind", "metadata"):
                missing.append(here)
            missing += _walk(prop, here)
        if "items" in node:
            missing += _walk(node["items"], path + "[]")
    return missing


def test_every_field_has_a_description() -> None:
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert _walk(schema["properties"]["spec"], "spec") == []
    assert _walk(schema["properties"]["status"], "status") == []


def test_defaults() -> None:
    spec = AgentSessionSpec.model_validate({})
    assert spec.hardware == "cpu-basic" and spec.private is True and spec.deletion_policy == "Delete"


@pytest.mark.parametrize(
    "template",
    [
        "no-namespace",
        "a/b--c",
        "a/b..c",
        "a/b.git",
        "-a/b",
        "a/b-",
        "a/b/c",
        "a/" + "x" * 97,
        "a/b\n",
        # The API server's `\w` (Go's RE2) is ASCII: so is the model's, which parses what it admitted.
        "caf\u00e9/b",
        "a/\u0662",
    ],
)
def test_template_follows_the_hub_repo_id_rule(template: str) -> None:
    with pytest.raises(ValidationError):
        AgentSessionSpec.model_validate({"template": template})


@pytest.mark.parametrize("template", ["templates/agent-sandbox", "org_1/my.space", "a/b"])
def test_valid_templates(template: str) -> None:
    assert AgentSessionSpec.model_validate({"template": template}).template == template


def test_kopfs_copy_of_an_object_keeps_only_what_the_operator_reads() -> None:
    """A tenant's 250 KB annotation (or labels, or managedFields) is not kept per session: the object
    kopf keeps for the session's loop (its live body, a view of the event's object) loses them."""
    import kopf

    from sandbox_operator.api import keep_only_what_is_read

    blob = "x" * 250_000
    raw: dict[str, Any] = {
        "apiVersion": "agents.sandbox-operator.dev/v1alpha1",
        "kind": "AgentSession",
        "metadata": {
            "name": "s",
            "namespace": "team",
            "uid": "u",
            "generation": 2,
            "resourceVersion": "7",
            "creationTimestamp": "2026-11-26T12:00:00Z",
            "finalizers": ["agents.sandbox-operator.dev/finalizer"],
            "annotations": {"tenant/blob": blob},
            "labels": {"tenant/label": "x"},
            "managedFields": [{"manager": "kubectl", "fieldsV1": {f"f:{blob[:100]}": {}}}],
        },
        "spec": {"hardware": "cpu-basic"},
        "status": {"phase": "Ready"},
    }
    body = kopf.Body(raw)
    keep_only_what_is_read(raw)
    assert set(body.metadata) == {
        "name", "namespace", "uid", "generation", "resourceVersion", "creationTimestamp", "finalizers"
    }  # fmt: skip
    assert body.meta.annotations == {} and body.meta.labels == {}
    assert body.spec == {"hardware": "cpu-basic"} and body.status == {"phase": "Ready"}
    assert body.metadata.uid == "u" and body.metadata["finalizers"] == [
        "agents.sandbox-operator.dev/finalizer"
    ]


def test_the_operator_gives_large_allocations_their_own_mappings() -> None:
    """glibc's threshold is fixed at start (this machine's C library has mallopt), so the parsed
    objects of tenants' large metadata do not leave heap holes the process keeps."""
    from sandbox_operator.runtime import fixed_mmap_threshold

    assert fixed_mmap_threshold()
