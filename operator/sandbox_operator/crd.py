"""Generates the AgentSession CustomResourceDefinition from the pydantic models in `api`.

Pydantic emits JSON Schema with `$ref`s, `anyOf` for optionals and titles; the API server
wants a structural OpenAPI v3 schema. This module inlines and trims it, so `crds/` is a
build output of `api.py` and never edited by hand.
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode

from . import api

_DROPPED_KEYS = {"title", "$defs"}

#: Printer columns for `kubectl get agentsessions`.
PRINTER_COLUMNS = [
    {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Hardware", "type": "string", "jsonPath": ".status.hardware.current"},
    {"name": "Space", "type": "string", "jsonPath": ".status.spaceId"},
    # A string, not a date: kubectl prints a date in the future as "<invalid>".
    {"name": "Expires", "type": "string", "jsonPath": ".status.expiresAt"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
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


def _status_schema() -> dict[str, Any]:
    schema = model_schema(api.AgentSessionStatus, mode="serialization")
    # Defaults on status would make the API server fill fields the operator did not write.
    trimmed: dict[str, Any] = _without_defaults(schema)
    return trimmed


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


def build_crd() -> dict[str, Any]:
    """The whole CustomResourceDefinition object."""
    status = _status_schema()
    status["description"] = "Observed state of the session, written by the operator."
    root: dict[str, Any] = {
        "type": "object",
        "description": "A sandbox for one AI-agent session: a Hugging Face Space owned by this object.",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": _spec_schema(),
            "status": status,
        },
        "x-kubernetes-validations": [
            {
                "rule": "self.metadata.name.size() <= 63",
                "message": "metadata.name must be at most 63 characters (it names the connection Secret)",
            }
        ],
    }
    root["properties"]["spec"]["default"] = {}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{api.PLURAL}.{api.GROUP}",
            "labels": {
                "app.kubernetes.io/name": "sandbox-operator",
                "app.kubernetes.io/part-of": "sandbox-operator",
            },
        },
        "spec": {
            "group": api.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": api.KIND,
                "listKind": f"{api.KIND}List",
                "plural": api.PLURAL,
                "singular": api.SINGULAR,
                "shortNames": api.SHORT_NAMES,
                "categories": ["sandbox-operator"],
            },
            "versions": [
                {
                    "name": api.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def render_crd() -> str:
    """The CRD as YAML, exactly as committed in crds/agentsessions.yaml."""
    header = "# Generated by `sandbox-operator crd` from sandbox_operator/api.py. Do not edit.\n"
    return header + yaml.safe_dump(build_crd(), sort_keys=False, width=120)
