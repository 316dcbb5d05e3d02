"""The gateway's spans, made only when tracing is on (telemetry.py): one SERVER span per
request, a child of the caller's W3C trace context when it sends one, and a CLIENT span
per upstream attempt under it, so retries show. Both carry the OpenTelemetry GenAI
semantic conventions' attributes (v1.41 names, the last released) and ours under
``inference_gateway.``. No key and no caller token is ever an attribute, and the prompt
and the answer only when ``capture_content`` says so (trace_content.py); the trace context
reaches Anthropic only when ``propagate_upstream`` says so. A stream's spans end with its
last event."""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web

from inference_operator import telemetry
from inference_operator.anthropic.replies import object_at
from inference_operator.gateway import trace_content
from inference_operator.gateway.auth.caller import Caller
from inference_operator.gateway.routes import PREFIX, Action, Route

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span

# GenAI semantic conventions (v1.41).
OPERATION = "gen_ai.operation.name"
PROVIDER = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
REQUEST_TEMPERATURE = "gen_ai.request.temperature"
REQUEST_TOP_P = "gen_ai.request.top_p"
REQUEST_TOP_K = "gen_ai.request.top_k"
REQUEST_STREAM = "gen_ai.request.stream"
RESPONSE_ID = "gen_ai.response.id"
RESPONSE_MODEL = "gen_ai.response.model"
FINISH_REASONS = "gen_ai.response.finish_reasons"
TIME_TO_FIRST_CHUNK = "gen_ai.response.time_to_first_chunk"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
CACHE_READ_TOKENS = "gen_ai.usage.cache_read.input_tokens"
CACHE_CREATION_TOKENS = "gen_ai.usage.cache_creation.input_tokens"
# General and HTTP semantic conventions (stable).
ERROR_TYPE = telemetry.ERROR_TYPE
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
HTTP_METHOD = "http.request.method"
HTTP_ROUTE = "http.route"
HTTP_STATUS = "http.response.status_code"
# Ours.
INFERENCE_ID = "inference_gateway.inference_id"
CALLER_NAMESPACE = "inference_gateway.caller.namespace"
QUEUE_WAIT = "inference_gateway.queue.wait"  # seconds in the endpoint's queue, retries too
# "admitted", the refusal's error type, or "cancelled" (the request's timeout or its
# client ended the wait)
ADMISSION = "inference_gateway.admission"

# Both task types are the Messages API upstream: "chat" (the conventions' own example for
# it), whatever the caller's route.
CHAT = "chat"
ANTHROPIC = "anthropic"
_REQUEST_PARAMETERS = {"model": REQUEST_MODEL, "max_tokens": REQUEST_MAX_TOKENS,
                       "temperature": REQUEST_TEMPERATURE, "top_p": REQUEST_TOP_P,
                       "top_k": REQUEST_TOP_K}


class Tracing(telemetry.SpanMaker):
    """Made once per gateway, from its tracer provider (telemetry.tracer_provider, or
    the tests' in-memory one)."""

    def __init__(self, provider: TracerProvider, upstream_url: str, *,
                 propagate_upstream: bool = False, capture_content: bool = False) -> None:
        from opentelemetry import propagate

        super().__init__(provider, "inference_operator.gateway")
        self._propagate = propagate
        self.propagate_upstream = propagate_upstream
        self.capture_content = capture_content
        url = urllib.parse.urlsplit(upstream_url)
        self.server = {SERVER_ADDRESS: url.hostname or "",
                       SERVER_PORT: url.port or (443 if url.scheme == "https" else 80)}

    def request(self, request: web.Request) -> RequestTrace:
        """The request's SERVER span, started; ``RequestTrace.end`` ends it."""
        parent = self._propagate.extract(request.headers)
        span = self._tracer.start_span(
            request.method, context=parent, kind=self._trace.SpanKind.SERVER,
            attributes={HTTP_METHOD: request.method}, record_exception=False,
            set_status_on_exception=False)
        return RequestTrace(self, span)

    def attempt(self, parent: Span, attributes: Mapping[str, Any]) -> Attempt:
        model = attributes.get(REQUEST_MODEL)
        span = self._tracer.start_span(
            f"{CHAT} {model}" if model else CHAT, kind=self._trace.SpanKind.CLIENT,
            context=self._trace.set_span_in_context(parent),
            attributes={**attributes, **self.server}, record_exception=False,
            set_status_on_exception=False)
        headers: dict[str, str] = {}
        if self.propagate_upstream:
            self._propagate.inject(headers, context=self._trace.set_span_in_context(span))
        return Attempt(self, span, parent, headers)


class RequestTrace:
    """One request's spans: its SERVER span and the CLIENT span of its upstream attempt."""

    def __init__(self, tracing: Tracing, span: Span) -> None:
        self._tracing = tracing
        self.span = span
        self._request: dict[str, Any] = {}
        self._content: dict[str, Any] = {}  # the prompt, when captured
        self._queue_wait = 0.0
        self.stream: Attempt | None = None  # a stream's attempt, open until its last event

    def params(self, params: Mapping[str, Any], *, stream: bool) -> None:
        """The Messages API request the caller's body became: its GenAI attributes."""
        attributes: dict[str, Any] = {OPERATION: CHAT, PROVIDER: ANTHROPIC,
                                      REQUEST_STREAM: stream}
        for name, attribute in _REQUEST_PARAMETERS.items():
            value = params.get(name)
            # Strings and numbers only; an integer past 64 bits is valid JSON (so a
            # valid max_tokens) but cannot be an attribute: left out.
            if isinstance(value, str) or (isinstance(value, int | float)
                                          and not isinstance(value, bool)
                                          and abs(value) < 2**63):
                attributes[attribute] = value
        self._request = attributes
        self.span.set_attributes(attributes)
        if self._tracing.capture_content:  # on the attempts' spans only, as the conventions
            self._content = trace_content.input_attributes(params)

    def admission(self, outcome: str, waited: float) -> None:
        self._queue_wait += waited
        self.span.set_attributes({ADMISSION: outcome, QUEUE_WAIT: self._queue_wait})

    def attempt(self) -> Attempt:
        return self._tracing.attempt(self.span, {**self._request, **self._content})

    def end(self, status: int, route: Route | None, caller: Caller | None,
            inference_id: str | None) -> None:
        """After the answer (a stream's last event): name, status and who asked."""
        if self.stream is not None:  # the caller went away before the stream ended
            self.stream.end("cancelled")
        span = self.span
        template = _template(route)
        if template is not None:
            span.update_name(f"{span.name} {template}")  # the name so far: the method
            span.set_attribute(HTTP_ROUTE, template)
        span.set_attribute(HTTP_STATUS, status)
        if caller is not None:
            span.set_attribute(CALLER_NAMESPACE, caller.namespace)
        if inference_id is not None:  # only once the caller was allowed to know it exists
            span.set_attribute(INFERENCE_ID, inference_id)
        if status >= 400:
            span.set_attribute(ERROR_TYPE, str(status))
            if status >= 500:  # as HTTP servers' spans: a 4xx is the caller's, not ours
                self._tracing.failed(span, str(status))
        span.end()


class Attempt:
    """One upstream attempt's CLIENT span, and the headers its request carries (the
    trace context when propagated upstream)."""

    def __init__(self, tracing: Tracing, span: Span, server: Span,
                 headers: dict[str, str]) -> None:
        self._tracing = tracing
        self.span = span
        self._server = server  # the request's span: the response's attributes go on both
        self.headers = headers
        self._started = time.monotonic()
        self._first_chunk = False
        self._message: dict[str, Any] = {}
        self._streamed = trace_content.StreamedContent() if tracing.capture_content else None

    def answered(self, message: Mapping[str, Any]) -> None:
        """A Message: the response's attributes, and the end of the attempt."""
        self._finish(message, message.get("content"), None)

    def event(self, event: Mapping[str, Any]) -> None:
        """A stream's event: its Message is put together as Anthropic's SDK does, from
        ``message_start`` and the ``message_delta`` that carries the stop reason and the
        output tokens so far."""
        kind = event.get("type")
        if self._streamed is not None:
            self._streamed.add(event)
        if kind == "message_start":
            self._message = dict(object_at(event, "message"))
            return
        if not self._first_chunk:
            self._first_chunk = True
            self._set({TIME_TO_FIRST_CHUNK: time.monotonic() - self._started})
        if kind == "message_delta":
            stop_reason = object_at(event, "delta").get("stop_reason")
            if stop_reason:
                self._message["stop_reason"] = stop_reason
            self._message["usage"] = {**object_at(self._message, "usage"),
                                      **object_at(event, "usage")}

    def end(self, error_type: str | None = None) -> None:
        """A stream's end: what it reported, and the error that cut it, if one did."""
        self._finish(self._message,
                     None if self._streamed is None else self._streamed.blocks(), error_type)

    def failed(self, error_type: str) -> None:
        self._tracing.failed(self.span, error_type)
        self.span.end()

    def _finish(self, message: Mapping[str, Any], content: Any,
                error_type: str | None) -> None:
        self._set(response_attributes(message))
        if self._tracing.capture_content:
            self.span.set_attributes(trace_content.output_attributes(
                content, message.get("stop_reason")))
        if error_type is not None:
            self._tracing.failed(self.span, error_type)
        self.span.end()

    def _set(self, attributes: Mapping[str, Any]) -> None:
        self.span.set_attributes(attributes)
        self._server.set_attributes(attributes)


def response_attributes(message: Mapping[str, Any]) -> dict[str, Any]:
    """A Message's GenAI attributes. Anthropic's ``input_tokens`` leaves out the cached
    ones; the conventions' input tokens are all of them (their Anthropic page)."""
    attributes: dict[str, Any] = {}
    for key, attribute in (("id", RESPONSE_ID), ("model", RESPONSE_MODEL)):
        if isinstance(message.get(key), str):
            attributes[attribute] = message[key]
    if isinstance(message.get("stop_reason"), str):
        attributes[FINISH_REASONS] = (message["stop_reason"],)
    counts = {key: value for key, value in object_at(message, "usage").items()
              if isinstance(value, int) and not isinstance(value, bool) and value >= 0}
    cache_read = counts.get("cache_read_input_tokens", 0)
    cache_creation = counts.get("cache_creation_input_tokens", 0)
    if "input_tokens" in counts:
        attributes[INPUT_TOKENS] = counts["input_tokens"] + cache_read + cache_creation
    if "output_tokens" in counts:
        attributes[OUTPUT_TOKENS] = counts["output_tokens"]
    if "cache_read_input_tokens" in counts:
        attributes[CACHE_READ_TOKENS] = cache_read
    if "cache_creation_input_tokens" in counts:
        attributes[CACHE_CREATION_TOKENS] = cache_creation
    return attributes


def _template(route: Route | None) -> str | None:
    """The inference routes' templates (http.route); other routes are named by their
    method alone."""
    if route is None or route.action not in (Action.INFER, Action.STREAM):
        return None
    template = PREFIX + ("/{task_type}" if route.task_type else "") + "/{inference_id}"
    return template + ("/_stream" if route.action == Action.STREAM else "")
