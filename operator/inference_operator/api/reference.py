"""The field reference tables of docs/api.md, rendered from the canonical schema so the
documented defaults and limits are the enforced ones."""

from __future__ import annotations

import json
from collections.abc import Iterator

from inference_operator.api import models
from inference_operator.api.schema import Schema, spec_schema, status_schema

BEGIN = "<!-- BEGIN GENERATED FIELD REFERENCE (make generate) -->"
END = "<!-- END GENERATED FIELD REFERENCE -->"

_LIMITS = {
    "minimum": ">= {}", "maximum": "<= {}", "minLength": "length >= {}",
    "maxLength": "length <= {}", "pattern": "matches `{}`",
}


def _type(node: Schema) -> str:
    if "enum" in node:
        return " \\| ".join(f"`{value}`" for value in node["enum"])
    if node.get("type") == "array":
        return f"list of {node['items'].get('type', 'object')}"
    if "format" in node:
        return f"{node['type']} ({node['format']})"
    return node.get("type", "object")


def _limits(node: Schema) -> str:
    limits = [template.format(node[key]) for key, template in _LIMITS.items() if key in node]
    if "type" in node.get(models.MESSAGES, {}):
        limits.append("a Secret reference; a literal string is refused")
    return "; ".join(limits).replace("|", "\\|")


def _rows(node: Schema, prefix: str) -> Iterator[str]:
    required = set(node.get("required", ()))
    for name, child in node.get("properties", {}).items():
        path = f"{prefix}.{name}"
        default = f"`{json.dumps(child['default'])}`" if "default" in child else ""
        yield (
            f"| `{path}` | {_type(child)} | {'yes' if name in required else ''} | {default} "
            f"| {_limits(child)} | {child['description']} |"
        )
        if "items" in child:
            yield from _rows(child["items"], f"{path}[]")
        else:
            yield from _rows(child, path)


def _table(schema: Schema, prefix: str) -> str:
    header = "| Field | Type | Required | Default | Limits | Description |"
    return "\n".join([header, "|---" * 6 + "|", *_rows(schema, prefix)])


def fields_markdown() -> str:
    return (
        f"### spec\n\n{_table(spec_schema(), 'spec')}\n\n"
        f"### status\n\n{_table(status_schema(), 'status')}\n"
    )


def splice(document: str, generated: str) -> str:
    """``document`` with the text between the markers replaced by ``generated``."""
    head, found, rest = document.partition(BEGIN)
    _, found_end, tail = rest.partition(END)
    if not (found and found_end):
        raise ValueError(f"markers {BEGIN!r} ... {END!r} not found")
    return f"{head}{BEGIN}\n{generated}{END}{tail}"
