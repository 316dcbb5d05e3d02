"""Reading what Jaeger v2 (controlplane/jaeger.py) stored for the tracing tests: ``Trace``
is what its query API answers, OTLP JSON, exactly what the processes exported."""

from __future__ import annotations

import base64
import binascii
import json
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

from inference_devkit.controlplane import jaeger
from inference_devkit.controlplane.binaries import BinaryUnavailable
from inference_devkit.controlplane.jaeger import RunningJaeger

_KINDS = {1: "INTERNAL", 2: "SERVER", 3: "CLIENT"}


def unavailable() -> str | None:
    """Why the tracing tests cannot run here, or None."""
    try:
        jaeger.resolve()
    except BinaryUnavailable as error:
        return f"Jaeger unavailable: {error}"
    return None


def _hex(identifier: str) -> str:
    """A trace or span id as hex, however the JSON spells it (hex, or protobuf's base64)."""
    if len(identifier) in (16, 32):
        try:
            int(identifier, 16)
            return identifier.lower()
        except ValueError:
            pass
    try:
        return base64.b64decode(identifier).hex()
    except (binascii.Error, ValueError):
        return identifier


def _value(value: dict[str, Any]) -> Any:
    for kind in ("stringValue", "boolValue", "doubleValue"):
        if kind in value:
            return value[kind]
    if "intValue" in value:
        return int(value["intValue"])
    if "arrayValue" in value:
        return tuple(_value(v) for v in value["arrayValue"].get("values", []))
    return None


def _attributes(items: list[dict[str, Any]] | None) -> dict[str, Any]:
    return {item["key"]: _value(item.get("value", {})) for item in items or []}


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    kind: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]
    error: bool


@dataclass(frozen=True)
class Trace:
    raw: str  # the query API's answer as sent: what must hold no secret
    spans: tuple[Span, ...]

    def of(self, service: str, kind: str | None = None) -> list[Span]:
        return [s for s in self.spans if s.service == service and kind in (None, s.kind)]


def _trace(raw: str) -> Trace:
    spans = []
    for resource in json.loads(raw)["result"]["resourceSpans"]:
        service = _attributes(resource.get("resource", {}).get("attributes")).get(
            "service.name", "")
        for scope in resource.get("scopeSpans", []):
            for span in scope.get("spans", []):
                kind = span.get("kind", 0)
                spans.append(Span(
                    service=service, name=span["name"],
                    kind=_KINDS.get(kind, "") if isinstance(kind, int)
                    else str(kind).removeprefix("SPAN_KIND_"),
                    span_id=_hex(span["spanId"]),
                    parent_id=_hex(span.get("parentSpanId", "")),
                    attributes=_attributes(span.get("attributes")),
                    error=span.get("status", {}).get("code") in (2, "STATUS_CODE_ERROR")))
    return Trace(raw, tuple(spans))


def trace(jaeger: RunningJaeger, trace_id: str, *, spans: int, timeout: float = 20.0) -> Trace:
    """The trace once it holds at least ``spans`` spans (export is batched)."""
    deadline = time.monotonic() + timeout
    found = Trace("", ())
    while time.monotonic() < deadline:
        answer = jaeger.get(f"/api/v3/traces/{trace_id}")
        if answer is not None:
            found = _trace(answer)
            if len(found.spans) >= spans:
                return found
        time.sleep(0.2)
    raise AssertionError(f"trace {trace_id}: {len(found.spans)} spans after {timeout}s, "
                         f"not {spans}: {[s.name for s in found.spans]}")


def traces_of(jaeger: RunningJaeger, service: str, operation: str, *,
              timeout: float = 20.0) -> Trace:
    """All the spans of ``service``'s traces that hold an ``operation`` span, once there
    is one."""
    deadline = time.monotonic() + timeout
    query = urllib.parse.urlencode({
        "query.service_name": service, "query.operation_name": operation,
        "query.start_time_min": "2020-01-01T00:00:00Z",
        "query.start_time_max": "2100-01-01T00:00:00Z", "query.num_traces": "1000"})
    while time.monotonic() < deadline:
        answer = jaeger.get(f"/api/v3/traces?{query}")
        if answer is not None:
            return _trace(answer)
        time.sleep(0.2)
    raise AssertionError(f"no trace of {service} with {operation!r} after {timeout}s")
