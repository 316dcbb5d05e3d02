"""The canonical JSON Schema of the spec and status, derived from the pydantic models.

Pydantic's output is normalised into a self-contained, reference-free schema: ``$ref``s
are inlined (Kubernetes forbids them), ``Optional`` unions collapse to their non-null
branch (an absent field, not ``null``, is how Kubernetes says "unset") and titles go.
The operator's validator checks objects against exactly this; the CRD is a rendering of it.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

from pydantic import BaseModel

from inference_operator.api.models import InferenceEndpointSpec, InferenceEndpointStatus

Schema = dict[str, Any]


def _inline(node: Any, defs: dict[str, Schema]) -> Any:
    if isinstance(node, list):
        return [_inline(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node:
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
        node = {**target, **node}  # the field's own description beats the class docstring
    branches = node.get("anyOf")
    if branches and {"type": "null"} in branches:
        rest = [branch for branch in branches if branch != {"type": "null"}]
        if len(rest) == 1:
            del node["anyOf"]
            if node.get("default", ...) is None:
                del node["default"]
            node = {**_inline(rest[0], defs), **node}  # the branch may be a $ref
    node.pop("title", None)
    if "description" in node:  # docstrings arrive wrapped; kubectl explain re-wraps them
        node["description"] = " ".join(node["description"].split())
    return {
        key: value if key in ("default", "enum", "required") else _inline(value, defs)
        for key, value in node.items()
    }


def json_schema(model: type[BaseModel]) -> Schema:
    raw = model.model_json_schema(mode="validation", by_alias=True)
    defs = raw.pop("$defs", {})
    return _inline(raw, defs)


@cache
def _spec() -> Schema:
    return json_schema(InferenceEndpointSpec)


@cache
def _status() -> Schema:
    return json_schema(InferenceEndpointStatus)


def spec_schema() -> Schema:
    return copy.deepcopy(_spec())


def status_schema() -> Schema:
    return copy.deepcopy(_status())
