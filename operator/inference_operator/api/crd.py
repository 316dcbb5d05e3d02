"""Renders the InferenceEndpoint CustomResourceDefinition from the canonical schema."""

from __future__ import annotations

import json
from typing import Any

from inference_operator.api import models
from inference_operator.api.schema import Schema, spec_schema, status_schema

RESOURCE_DESCRIPTION = (
    "InferenceEndpoint declares an Anthropic completion or chat endpoint that the operator serves "
    "through the gateway's Elasticsearch-compatible _inference API. The API key stays in a "
    "Secret; clients call status.url."
)

_READY = '.status.conditions[?(@.type=="Ready")]'
PRINTER_COLUMNS = [
    {"name": "Ready", "type": "string", "jsonPath": f"{_READY}.status"},
    {"name": "Reason", "type": "string", "jsonPath": f"{_READY}.reason"},
    {"name": "Task-Type", "type": "string", "jsonPath": ".spec.task_type"},
    {"name": "Model", "type": "string", "jsonPath": ".spec.service_settings.model_id"},
    {"name": "Inference-ID", "type": "string", "jsonPath": ".status.inference_id"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Message", "type": "string", "jsonPath": f"{_READY}.message", "priority": 1},
    {"name": "Org-Output-TPM", "type": "integer", "priority": 1,
     "jsonPath": ".status.organisation_limits.output_tokens_per_minute",
     "description": "The organisation's output tokens per minute for the key and model class"},
    {"name": "Org-Used-Pct", "type": "integer", "priority": 1,
     "jsonPath": ".status.organisation_limits.used_percent",
     "description": "Share of the most used organisation limit in use, in percent"},
]


def _structural(node: Any) -> Any:
    """Adapts one canonical schema node to what a CRD's structural schema allows."""
    if isinstance(node, list):
        return [_structural(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    # Structural schemas forbid additionalProperties:false beside properties; the API
    # server refuses unknown fields through strict field validation instead.
    if node.get("additionalProperties") is False:
        del node["additionalProperties"]
    messages = node.pop(models.MESSAGES, {})
    rules = []
    if "pattern" in messages:
        # Said in CEL so the user reads the rule, not the regular expression.
        pattern = node.pop("pattern")
        rule = f"self.matches({json.dumps(pattern)})"
        rules.append({"rule": rule, "message": messages["pattern"]})
    if "type" in messages:
        # A typed object would answer a literal string with a bare "must be of type
        # object". Left untyped, the string gets through to the admission policy, which
        # says what to do instead (CEL inside the CRD cannot see untyped nodes).
        del node["type"]
        node["x-kubernetes-preserve-unknown-fields"] = True
    if rules:
        node["x-kubernetes-validations"] = rules
    return {
        key: value if key in ("default", "enum", "required") else _structural(value)
        for key, value in node.items()
    }


def openapi_schema() -> Schema:
    return {
        "type": "object",
        "description": RESOURCE_DESCRIPTION,
        "required": ["spec"],
        "properties": {
            "apiVersion": {
                "type": "string",
                "description": "Versioned schema of this object: "
                f"{models.API_VERSION}.",
            },
            "kind": {"type": "string", "description": f"Always {models.KIND}."},
            "metadata": {"type": "object"},
            "spec": _structural(spec_schema()),
            # Until the operator's first status write, a new endpoint reads back (the API
            # server defaults on read) with observedGeneration 0 < generation, which
            # kstatus (Flux's wait, helm --wait) takes as InProgress; with no status at
            # all it would be Current, and a `wait` would pass before the endpoint is Ready.
            "status": {**_structural(status_schema()), "default": {"observedGeneration": 0}},
        },
    }


def custom_resource_definition() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": models.CRD_NAME,
            "labels": {"app.kubernetes.io/part-of": "inference-operator"},
        },
        "spec": {
            "group": models.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": models.KIND,
                "listKind": f"{models.KIND}List",
                "plural": models.PLURAL,
                "singular": models.SINGULAR,
                "shortNames": list(models.SHORT_NAMES),
                "categories": list(models.CATEGORIES),
            },
            "versions": [
                {
                    "name": models.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {"openAPIV3Schema": openapi_schema()},
                }
            ],
        },
    }
