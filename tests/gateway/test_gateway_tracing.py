"""Tracing as a platform team sees it in its collector: a gateway in this process, the
emulator as Anthropic, and the SDK's in-memory exporter in place of OTLP (the spans are
the SDK's own, as they would be exported). One SERVER span per request under the
caller's trace context, a CLIENT span per upstream attempt, GenAI attributes, no text,
key or token anywhere; the trace context reaches Anthropic only when asked."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from gateway_support import (
    ADMIN_TOKEN,
    GatewayFactory,
    RunningEmulator,
    RunningGateway,
    seed_body,
    sse_events,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from inference_devkit.waiting import poll_async
from inference_operator import telemetry
from inference_operator.gateway import trace_content, tracing

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = {"traceparent": f"00-{TRACE_ID}-{CALLER_SPAN}-01"}
PROMPT = "the secret prompt 7f3c"
COMPLETION = "/_inference/completion/anthropic_completion"
CHAT = "/_inference/chat_completion/chat"
MODEL = seed_body()["service_settings"]["model_id"]


class Traced:
    def __init__(self, gateway: RunningGateway, exporter: InMemorySpanExporter) -> None:
        self.gateway = gateway
        self.exporter = exporter

    async def post(self, path: str, body: dict[str, Any], headers: dict[str, str] | None = None
                   ) -> tuple[int, bytes]:
        async with self.gateway.session.post(self.gateway.public + path, json=body,
                                             headers=headers or {}) as response:
            return response.status, await response.read()

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def server(self) -> ReadableSpan:
        (span,) = [s for s in self.spans() if s.kind == SpanKind.SERVER]
        return span

    def clients(self) -> list[ReadableSpan]:
        return sorted((s for s in self.spans() if s.kind == SpanKind.CLIENT),
                      key=lambda s: s.start_time or 0)


async def _traced(make_gateway: GatewayFactory, body: dict[str, Any] | None = None,
                  **overrides: Any) -> Traced:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    gateway = await make_gateway(tracer_provider=provider, **overrides)
    await gateway.put(body=body)
    await gateway.put("chat", task_type="chat_completion")
    exporter.clear()  # the admin PUTs' spans
    return Traced(gateway, exporter)


@pytest.fixture
async def traced(make_gateway: GatewayFactory) -> AsyncIterator[Traced]:
    yield await _traced(make_gateway)


def exported(spans: list[ReadableSpan]) -> str:
    """Everything the exporter would send: names, attributes, events, resources."""
    return "\n".join(span.to_json() for span in spans)


async def test_a_completion_is_one_server_span_under_the_callers_with_a_client_span(
        traced: Traced, emulator: RunningEmulator) -> None:
    status, body = await traced.post(COMPLETION, {"input": PROMPT}, TRACEPARENT)
    assert status == 200, body
    server = traced.server()
    (client,) = traced.clients()
    assert format(server.context.trace_id, "032x") == TRACE_ID
    assert server.parent is not None and format(server.parent.span_id, "016x") == CALLER_SPAN
    assert server.name == "POST /_inference/{task_type}/{inference_id}"
    assert client.parent is not None and client.parent.span_id == server.context.span_id
    assert client.name == f"chat {MODEL}"
    (upstream,) = emulator.requests()
    answer = upstream.body
    attributes = dict(client.attributes or {})
    assert attributes[tracing.OPERATION] == "chat"
    assert attributes[tracing.PROVIDER] == "anthropic"
    assert attributes[tracing.REQUEST_MODEL] == MODEL
    assert attributes[tracing.REQUEST_MAX_TOKENS] == answer["max_tokens"]
    assert attributes[tracing.REQUEST_STREAM] is False
    assert attributes[tracing.RESPONSE_ID].startswith("msg_")
    assert attributes[tracing.RESPONSE_MODEL] == MODEL
    assert attributes[tracing.FINISH_REASONS] == ("end_turn",)
    assert attributes[tracing.INPUT_TOKENS] > 0 and attributes[tracing.OUTPUT_TOKENS] > 0
    assert attributes[tracing.SERVER_ADDRESS] == "127.0.0.1"
    server_attributes = dict(server.attributes or {})
    for name in (tracing.REQUEST_MODEL, tracing.RESPONSE_ID, tracing.INPUT_TOKENS,
                 tracing.OUTPUT_TOKENS, tracing.FINISH_REASONS):
        assert server_attributes[name] == attributes[name], name
    assert server_attributes[tracing.HTTP_STATUS] == 200
    assert server_attributes[tracing.INFERENCE_ID] == "anthropic_completion"
    assert server_attributes[tracing.CALLER_NAMESPACE] == "_anonymous"
    assert server_attributes[tracing.ADMISSION] == "admitted"
    assert server_attributes[tracing.QUEUE_WAIT] >= 0
    assert server.status.status_code == client.status.status_code == StatusCode.UNSET
    assert PROMPT not in exported(traced.spans())


async def test_without_a_traceparent_the_request_starts_a_trace(traced: Traced) -> None:
    status, _ = await traced.post(COMPLETION, {"input": "x"})
    assert status == 200
    assert traced.server().parent is None


async def test_a_chat_stream_ends_its_spans_with_its_last_event(traced: Traced) -> None:
    status, body = await traced.post(
        CHAT + "/_stream", {"messages": [{"role": "user", "content": PROMPT}]}, TRACEPARENT)
    assert status == 200 and sse_events(body.decode())[-1] == ("message", "[DONE]")
    server = traced.server()
    (client,) = traced.clients()
    attributes = dict(client.attributes or {})
    assert server.name == "POST /_inference/{task_type}/{inference_id}/_stream"
    assert attributes[tracing.REQUEST_STREAM] is True
    assert attributes[tracing.FINISH_REASONS] == ("end_turn",)
    assert attributes[tracing.OUTPUT_TOKENS] > 0 and attributes[tracing.INPUT_TOKENS] > 0
    first_chunk = attributes[tracing.TIME_TO_FIRST_CHUNK]
    assert 0 < first_chunk * 1e9 <= (client.end_time or 0) - (client.start_time or 0)
    assert (server.end_time or 0) >= (client.end_time or 0)
    assert PROMPT not in exported(traced.spans())


async def test_a_retried_attempt_is_a_client_span_of_its_own_with_its_error(
        traced: Traced, emulator: RunningEmulator) -> None:
    emulator.fail({"kind": "error", "status": 529})
    status, _ = await traced.post(COMPLETION, {"input": "x"})
    assert status == 200
    failed, answered = traced.clients()
    assert failed.status.status_code == StatusCode.ERROR
    assert (failed.attributes or {})[tracing.ERROR_TYPE] == "529"
    assert answered.status.status_code == StatusCode.UNSET
    assert tracing.ERROR_TYPE not in (answered.attributes or {})
    assert traced.server().status.status_code == StatusCode.UNSET


@pytest.mark.parametrize(("fault", "status"), [
    ({"kind": "error", "status": 500, "count": 10}, 502),  # every attempt failed
    ({"kind": "error", "status": 400, "error_type": "invalid_request_error"}, 400),
])
async def test_a_failed_request_says_so_on_its_spans(
        traced: Traced, emulator: RunningEmulator, fault: dict[str, Any], status: int) -> None:
    emulator.fail(fault)
    answered, _ = await traced.post(COMPLETION, {"input": "x"})
    assert answered == status
    server = dict(traced.server().attributes or {})
    assert server[tracing.ERROR_TYPE] == str(status)
    assert server[tracing.HTTP_STATUS] == status
    clients = traced.clients()
    assert [(c.attributes or {})[tracing.ERROR_TYPE] for c in clients] == (
        [str(fault["status"])] * len(clients))
    assert all(c.status.status_code == StatusCode.ERROR for c in clients)
    # As HTTP servers' spans: a 4xx is the caller's error, not the gateway's.
    assert (traced.server().status.status_code == StatusCode.ERROR) is (status >= 500)


async def test_the_wait_in_the_endpoints_queue_and_its_outcome_are_on_the_server_span(
        make_gateway: GatewayFactory) -> None:
    traced = await _traced(make_gateway, seed_body(requests_per_minute=60), queue_capacity=1)
    assert (await traced.post(COMPLETION, {"input": "x"}))[0] == 200  # this second's one
    traced.exporter.clear()
    # Waits its turn in the queue (the next second); meanwhile the queue is full.
    queued = asyncio.create_task(traced.post(COMPLETION + "?timeout=5s", {"input": "x"}))
    await asyncio.sleep(0.3)
    assert (await traced.post(COMPLETION, {"input": "x"}))[0] == 429
    assert (await queued)[0] == 200
    servers = {(s.attributes or {})[tracing.HTTP_STATUS]: dict(s.attributes or {})
               for s in traced.spans() if s.kind == SpanKind.SERVER}
    assert servers[200][tracing.ADMISSION] == "admitted"
    assert servers[200][tracing.QUEUE_WAIT] == pytest.approx(1.0, abs=0.5)
    assert servers[429][tracing.ADMISSION] == "es_rejected_execution_exception"
    assert len(traced.clients()) == 1  # only the queued one reached Anthropic


async def test_the_trace_context_reaches_anthropic_only_when_asked(
        make_gateway: GatewayFactory, emulator: RunningEmulator) -> None:
    quiet = await _traced(make_gateway)
    await quiet.post(COMPLETION, {"input": "x"}, TRACEPARENT)
    (request,) = emulator.requests()
    assert "traceparent" not in request.headers
    emulator.state.log.clear()
    told = await _traced(make_gateway, trace_upstream=True)
    await told.post(COMPLETION, {"input": "x"}, TRACEPARENT)
    (request,) = emulator.requests()
    (client,) = told.clients()
    assert request.headers["traceparent"] == (
        f"00-{TRACE_ID}-{format(client.context.span_id, '016x')}-01")


async def test_no_key_and_no_caller_token_in_any_span(
        make_gateway: GatewayFactory, emulator: RunningEmulator) -> None:
    traced = await _traced(make_gateway)
    key = seed_body()["service_settings"]["api_key"]
    status, _ = await traced.post(COMPLETION, {"input": PROMPT},
                                  {"Authorization": "Bearer caller-token-5e1f", **TRACEPARENT})
    assert status == 200
    text = exported(traced.spans())
    for secret in (key, "caller-token-5e1f", ADMIN_TOKEN, PROMPT):
        assert secret not in text


@pytest.mark.parametrize("setting", ["SPAN_ONLY", "true"])
async def test_the_prompt_and_the_answer_are_recorded_only_when_opted_in(
        make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch, setting: str) -> None:
    monkeypatch.setenv(telemetry.CONTENT_VARIABLE, setting)
    traced = await _traced(make_gateway)
    for path in (CHAT, CHAT + "/_stream"):
        traced.exporter.clear()
        status, _ = await traced.post(path, {"messages": [
            {"role": "system", "content": "be brief"}, {"role": "user", "content": PROMPT}]})
        assert status == 200
        (client,) = traced.clients()
        attributes = dict(client.attributes or {})
        assert json.loads(attributes[trace_content.SYSTEM_INSTRUCTIONS]) == [
            {"type": "text", "content": "be brief"}]
        assert json.loads(attributes[trace_content.INPUT_MESSAGES]) == [
            {"role": "user", "parts": [{"type": "text", "content": PROMPT}]}]
        (answer,) = json.loads(attributes[trace_content.OUTPUT_MESSAGES])
        assert answer["role"] == "assistant" and answer["finish_reason"] == "end_turn"
        assert answer["parts"][0]["type"] == "text" and answer["parts"][0]["content"]
        # On the attempt's span only, as the conventions place them.
        assert PROMPT not in traced.server().to_json()


def test_tracing_is_on_only_with_an_endpoint_and_not_disabled() -> None:
    assert not telemetry.tracing_enabled({})
    assert telemetry.tracing_enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"})
    assert telemetry.tracing_enabled({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318"})
    assert not telemetry.tracing_enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
                                          "OTEL_SDK_DISABLED": "true"})


@pytest.mark.parametrize(("environ", "problem"), [
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, None),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
      "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, None),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
     "OTEL_EXPORTER_OTLP_PROTOCOL=grpc is not supported"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
      "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}, None),
    ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, None),  # off: nothing to say
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
      telemetry.CONTENT_VARIABLE: "EVENT_ONLY"}, "EVENT_ONLY is not supported"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
      telemetry.CONTENT_VARIABLE: "no_content"}, None),
])
def test_an_unsupported_protocol_is_said_before_start(environ: dict[str, str],
                                                      problem: str | None) -> None:
    said = telemetry.config_problem(environ)
    assert (said is None) if problem is None else (said is not None and problem in said)


def test_a_gateway_without_tracing_imports_nothing_of_opentelemetry() -> None:
    code = ("import sys, inference_operator.cli.main, inference_operator.gateway.server, "
            "inference_operator.gateway.http; "
            "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env, check=True, timeout=60)
    assert json.loads(result.stdout.replace("'", '"')) == []


async def test_the_server_span_of_a_caller_that_went_away_ends(traced: Traced,
                                                                emulator: RunningEmulator
                                                                ) -> None:
    emulator.latency(first_token=5.0)
    timeout = aiohttp.ClientTimeout(total=0.5)
    with pytest.raises(TimeoutError):
        async with traced.gateway.session.post(traced.gateway.public + COMPLETION,
                                               json={"input": "x"}, timeout=timeout) as r:
            await r.read()
    async def server_span_ended() -> bool:
        return any(s.kind == SpanKind.SERVER for s in traced.spans())

    await poll_async(server_span_ended, timeout=5, interval=0.05)
    server = traced.server()
    assert (server.attributes or {})[tracing.HTTP_STATUS] == 499
    (client,) = traced.clients()
    assert client.status.status_code == StatusCode.ERROR
