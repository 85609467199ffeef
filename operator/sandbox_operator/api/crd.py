"""Generates both kinds' CustomResourceDefinitions (AgentSession, AgentSessionPool) from the models in `api`.

Pydantic emits JSON Schema with `$ref`s, `anyOf` for optionals and titles; the API server
wants a structural OpenAPI v3 schema. This module inlines and trims it, so `crds/` is a
build output of the models in `api/` and never edited by hand.
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode

from sandbox_operator import api

_DROPPED_KEYS = {"title", "$defs"}
#: The status the API server gives an object until the operator writes one (a default on read).
UNOBSERVED_STATUS = {"observedGeneration": 0}

#: The Ready condition's reason, which says why an object is not Ready (or how it is).
_READY_REASON = '.status.conditions[?(@.type=="Ready")].reason'

#: Printer columns for `kubectl get agentsessions`.
PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    # Why it is (not) Ready: Building, HubUnavailable, TemplateNotAllowed, Paused, ...
    {"name": "Reason", "type": "string", "jsonPath": _READY_REASON},
    {"name": "Hardware", "type": "string", "jsonPath": ".status.hardware.current"},
    {"name": "Space", "type": "string", "jsonPath": ".status.spaceId"},
    # A string, not a date: kubectl prints a date in the future as "<invalid>".
    {"name": "Expires", "type": "string", "jsonPath": ".status.expiresAt"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    # `-o wide` only (priority 1): what was asked for, what it costs now, and how the Space came.
    {"name": "Requested", "type": "string", "jsonPath": ".spec.hardware", "priority": 1},
    {"name": "Template", "type": "string", "jsonPath": ".status.template", "priority": 1},
    {"name": "USD/Hour", "type": "number", "jsonPath": ".status.spend.usdPerHour", "priority": 1},
    {"name": "Launch", "type": "string", "jsonPath": ".status.launchType", "priority": 1},
]

#: Printer columns for `kubectl get agentsessionpools`.
POOL_PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Desired", "type": "integer", "jsonPath": ".spec.replicas"},
    {"name": "Ready", "type": "integer", "jsonPath": ".status.ready"},
    {"name": "Claimed", "type": "integer", "jsonPath": ".status.claimed"},
    {"name": "Available", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
    {"name": "Reason", "type": "string", "jsonPath": _READY_REASON},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    # `-o wide` only: unclaimed Spaces in any state, those still building too. (Not spec.owner or
    # spec.template: empty for the operator's defaults, so the column would say nothing.)
    {"name": "Unclaimed", "type": "integer", "jsonPath": ".status.replicas", "priority": 1},
]


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    """Inline `$ref`s, turn `anyOf[X, null]` into a nullable-free X, and drop JSON-Schema-only keys."""
    if isinstance(node, list):
        return [_structural(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _structural(merged, defs)
    if "anyOf" in node:
        options = [option for option in node["anyOf"] if option.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot express anyOf {node['anyOf']} structurally")
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        if rest.get("default", ...) is None:
            del rest["default"]
        return _structural({**options[0], **rest}, defs)
    for bound, limit in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(node.get(bound), int | float) and not isinstance(node.get(bound), bool):
            # JSON Schema's numeric form; OpenAPI v3.0 (what the API server speaks) wants a flag.
            node = {**node, limit: node[bound], bound: True}
    if "const" in node:
        node = {**{k: v for k, v in node.items() if k != "const"}, "enum": [node["const"]]}
    out = {key: _structural(value, defs) for key, value in node.items() if key not in _DROPPED_KEYS}
    if out.get("type") == "object" and "properties" in out:
        out.setdefault("additionalProperties", None)
        if out["additionalProperties"] is None:
            del out["additionalProperties"]
    return out


def model_schema(model: type[BaseModel], *, mode: JsonSchemaMode = "validation") -> dict[str, Any]:
    """The structural OpenAPI schema of one model (by its aliases, as stored in the API server)."""
    raw = model.model_json_schema(by_alias=True, mode=mode)
    schema: dict[str, Any] = _structural(raw, raw.get("$defs", {}))
    return schema


#: kopf's record of its handlers' progress under status (api.HANDLER_PROGRESS), in kopf's own shape.
_HANDLER_PROGRESS_SCHEMA = {
    "type": "object",
    "description": "The operator's record of its finalizer's progress (kopf's), where only it may write.",
    "x-kubernetes-preserve-unknown-fields": True,
}


def _status_schema(model: type[BaseModel] = api.AgentSessionStatus) -> dict[str, Any]:
    schema = model_schema(model, mode="serialization")
    # Defaults on status would make the API server fill fields the operator did not write.
    trimmed: dict[str, Any] = _without_defaults(schema)
    trimmed["properties"][api.HANDLER_PROGRESS] = _HANDLER_PROGRESS_SCHEMA
    return trimmed


def _unobserved_by_default(status: dict[str, Any]) -> dict[str, Any]:
    """Status defaults observedGeneration to 0, its one default: an object the operator has not
    reported on yet (no status, or one with kopf's record only) reads 0, behind metadata.generation,
    so kstatus, Flux and Argo CD see it in progress; with no status at all kstatus calls it Current."""
    status["default"] = dict(UNOBSERVED_STATUS)
    status["properties"]["observedGeneration"]["default"] = UNOBSERVED_STATUS["observedGeneration"]
    return status


def _without_defaults(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_defaults(v) for k, v in node.items() if k != "default"}
    if isinstance(node, list):
        return [_without_defaults(v) for v in node]
    return node


def _spec_schema() -> dict[str, Any]:
    schema = model_schema(api.AgentSessionSpec)
    schema["description"] = "Desired state of the session's Space sandbox."
    return schema


def _object_schema(description: str, spec: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    """A kind's top-level schema: type meta, metadata, spec and status."""
    return {
        "type": "object",
        "description": description,
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }


def build_crd() -> dict[str, Any]:
    """The whole AgentSession CustomResourceDefinition object."""
    status = _unobserved_by_default(_status_schema())
    status["description"] = "Observed state of the session, written by the operator."
    root = _object_schema(
        "A sandbox for one AI-agent session: a Hugging Face Space owned by this object.",
        _spec_schema(),
        status,
    )
    root["x-kubernetes-validations"] = [
        {
            "rule": "self.metadata.name.size() <= 63",
            "message": "metadata.name must be at most 63 characters (it names the connection Secret)",
        }
    ]
    root["properties"]["spec"]["default"] = {}
    names = (api.KIND, api.PLURAL, api.SINGULAR, api.SHORT_NAMES)
    return _crd(names, root, {"status": {}}, PRINTER_COLUMNS)


def build_pool_crd() -> dict[str, Any]:
    """The AgentSessionPool CustomResourceDefinition: a warm pool, with the scale subresource."""
    spec = model_schema(api.AgentSessionPoolSpec)
    spec["description"] = "Desired state of the warm pool."
    spec["default"] = {}
    status = _unobserved_by_default(_status_schema(api.AgentSessionPoolStatus))
    status["description"] = "Observed state of the pool, written by the operator."
    root = _object_schema(
        "A warm pool of Spaces built ahead, each handed to one AgentSession naming the pool.", spec, status
    )
    scale = {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    names = (api.POOL_KIND, api.POOL_PLURAL, api.POOL_SINGULAR, api.POOL_SHORT_NAMES)
    return _crd(names, root, {"status": {}, "scale": scale}, POOL_PRINTER_COLUMNS)


def _crd(
    names: tuple[str, str, str, list[str]],
    root: dict[str, Any],
    subresources: dict[str, Any],
    columns: list[dict[str, Any]],
) -> dict[str, Any]:
    kind, plural, singular, short_names = names
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{api.GROUP}",
            "labels": {
                "app.kubernetes.io/name": "sandbox-operator",
                "app.kubernetes.io/part-of": "sandbox-operator",
            },
        },
        "spec": {
            "group": api.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": singular,
                "shortNames": short_names,
                "categories": ["sandbox-operator"],
            },
            "versions": [
                {
                    "name": api.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": subresources,
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def render_crd() -> str:
    """The CRD as YAML, exactly as committed in crds/agentsessions.yaml."""
    header = "# Generated by `sandbox-operator crd` from sandbox_operator/api/. Do not edit.\n"
    return header + yaml.safe_dump(build_crd(), sort_keys=False, width=120)


def render_pool_crd() -> str:
    """The AgentSessionPool CRD as YAML, exactly as committed in crds/agentsessionpools.yaml."""
    header = "# Generated by `sandbox-operator crd --pool` from sandbox_operator/api/. Do not edit.\n"
    return header + yaml.safe_dump(build_pool_crd(), sort_keys=False, width=120)
