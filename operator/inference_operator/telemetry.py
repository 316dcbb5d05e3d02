"""OpenTelemetry tracing, configured the standard way: the SDK's own ``OTEL_*`` variables
(endpoint, protocol, headers, service name, resource attributes, sampler, batch sizes).
Setting an OTLP endpoint turns it on; without one nothing of OpenTelemetry is imported,
so tracing off costs a process nothing."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span

ERROR_TYPE = "error.type"
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
PROTOCOL_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
# The one exporter shipped: gRPC's would add a large native dependency for no gain.
PROTOCOL = "http/protobuf"
# The GenAI instrumentations' opt-in for prompts and answers in spans; the older "true"
# is taken too. Off unless set: they are the users' data.
CONTENT_VARIABLE = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
_CONTENT_ON = frozenset({"SPAN_ONLY", "SPAN_AND_EVENT", "TRUE"})
_CONTENT_OFF = frozenset({"", "NO_CONTENT", "FALSE"})


def tracing_enabled(environ: Mapping[str, str] = os.environ) -> bool:
    """An OTLP endpoint is set and the SDK is not switched off (``OTEL_SDK_DISABLED``)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return any(environ.get(name, "").strip() for name in ENDPOINT_VARIABLES)


def config_problem(environ: Mapping[str, str] = os.environ) -> str | None:
    """What keeps the tracing variables from working, said before the process starts
    rather than found when the first span is exported."""
    if not tracing_enabled(environ):
        return None
    content = environ.get(CONTENT_VARIABLE, "").strip().upper()
    if content not in _CONTENT_ON | _CONTENT_OFF:
        return (f"{CONTENT_VARIABLE}={environ[CONTENT_VARIABLE]} is not supported: "
                "SPAN_ONLY (or SPAN_AND_EVENT, true) records prompts and answers on spans "
                "(there are no GenAI events), NO_CONTENT (the default) does not")
    for name in PROTOCOL_VARIABLES:  # the traces' own variable first, as the SDK reads them
        value = environ.get(name, "").strip()
        if value:
            if value != PROTOCOL:
                return f"{name}={value} is not supported: tracing exports {PROTOCOL} only"
            return None
    return None


def capture_content(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the user opted in to prompts and answers on spans."""
    return environ.get(CONTENT_VARIABLE, "").strip().upper() in _CONTENT_ON


def tracer_provider(service_name: str) -> TracerProvider:
    """A provider that exports in batches over OTLP/HTTP from a thread of its own: no
    request waits for the collector, and a collector that is down costs spans (the queue
    is bounded, ``OTEL_BSP_MAX_QUEUE_SIZE``), never a request. ``service_name`` unless
    ``OTEL_SERVICE_NAME`` or ``OTEL_RESOURCE_ATTRIBUTES`` name the service."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    named = SERVICE_NAME in OTELResourceDetector().detect().attributes
    provider = TracerProvider(  # the sampler: OTEL_TRACES_SAMPLER, read by the SDK
        resource=Resource.create({} if named else {SERVICE_NAME: service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


class SpanMaker:
    """One part's tracer (the gateway's, the operator's) on its provider: what both do
    with spans besides making their own."""

    def __init__(self, provider: TracerProvider, scope: str) -> None:
        from opentelemetry import trace

        self._provider = provider
        self._tracer = provider.get_tracer(scope)
        self._trace = trace

    def failed(self, span: Span, error_type: str) -> None:
        span.set_attribute(ERROR_TYPE, error_type)
        span.set_status(self._trace.StatusCode.ERROR)

    def shutdown(self) -> None:
        """Exports what is queued (blocking: run it off the event loop)."""
        self._provider.shutdown()
