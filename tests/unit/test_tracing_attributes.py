"""The GenAI attributes the gateway's spans carry, table-driven: what Anthropic's answers
and stream events become, and what the request parameters become (gateway/tracing.py)."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from inference_operator.gateway import trace_content, tracing


@pytest.mark.parametrize(("message", "attributes"), [
    ({"id": "msg_1", "model": "claude-x", "stop_reason": "max_tokens",
      "usage": {"input_tokens": 10, "output_tokens": 5}},
     {tracing.RESPONSE_ID: "msg_1", tracing.RESPONSE_MODEL: "claude-x",
      tracing.FINISH_REASONS: ("max_tokens",), tracing.INPUT_TOKENS: 10,
      tracing.OUTPUT_TOKENS: 5}),
    # Anthropic's input_tokens leaves the cached ones out; the conventions count them in.
    ({"usage": {"input_tokens": 10, "output_tokens": 1, "cache_read_input_tokens": 100,
                "cache_creation_input_tokens": 20}},
     {tracing.INPUT_TOKENS: 130, tracing.OUTPUT_TOKENS: 1, tracing.CACHE_READ_TOKENS: 100,
      tracing.CACHE_CREATION_TOKENS: 20}),
    # What is not a count or a string is left out, never an attribute of the wrong type.
    ({"id": 7, "stop_reason": None, "usage": {"input_tokens": True, "output_tokens": -1}}, {}),
    ({"usage": "none"}, {}),
    ({}, {}),
])
def test_an_answer_becomes_these_attributes(message: dict[str, Any],
                                            attributes: dict[str, Any]) -> None:
    assert tracing.response_attributes(message) == attributes


def _spans() -> tuple[tracing.Tracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return tracing.Tracing(provider, "https://api.anthropic.com"), exporter


def _request() -> Any:
    """What Tracing.request reads of an aiohttp request."""
    return SimpleNamespace(method="POST", headers={})


@pytest.mark.parametrize(("params", "expected"), [
    ({"model": "claude-x", "max_tokens": 100, "temperature": 0.5, "top_p": 0.9, "top_k": 5},
     {tracing.REQUEST_MODEL: "claude-x", tracing.REQUEST_MAX_TOKENS: 100,
      tracing.REQUEST_TEMPERATURE: 0.5, tracing.REQUEST_TOP_P: 0.9, tracing.REQUEST_TOP_K: 5}),
    # max_tokens may be any JSON integer; one past 64 bits is no attribute.
    ({"model": "claude-x", "max_tokens": 2**70}, {tracing.REQUEST_MODEL: "claude-x"}),
    ({"model": "claude-x", "max_tokens": True}, {tracing.REQUEST_MODEL: "claude-x"}),
])
def test_the_request_becomes_these_attributes(params: dict[str, Any],
                                              expected: dict[str, Any]) -> None:
    traced, exporter = _spans()
    trace = traced.request(_request())
    trace.params(params, stream=False)
    trace.attempt().answered({})
    trace.end(200, None, None, None)
    (client,) = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.CLIENT]
    common = {tracing.OPERATION: "chat", tracing.PROVIDER: "anthropic",
              tracing.REQUEST_STREAM: False}
    assert {k: v for k, v in (client.attributes or {}).items()
            if k.startswith("gen_ai.")} == {**common, **expected}
    assert client.attributes[tracing.SERVER_ADDRESS] == "api.anthropic.com"
    assert client.attributes[tracing.SERVER_PORT] == 443
    assert client.name == f"chat {params['model']}"


def test_a_stream_is_put_together_from_its_events() -> None:
    traced, exporter = _spans()
    trace = traced.request(_request())
    trace.params({"model": "claude-x"}, stream=True)
    attempt = trace.attempt()
    for event in (
        {"type": "message_start", "message": {"id": "msg_2", "model": "claude-x",
                                              "usage": {"input_tokens": 12,
                                                        "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0},
        {"type": "content_block_delta", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
         "usage": {"output_tokens": 40}},
        {"type": "message_stop"},
    ):
        attempt.event(event)
    attempt.end()
    trace.end(200, None, None, None)
    for span in exporter.get_finished_spans():
        attributes = dict(span.attributes or {})
        assert attributes[tracing.RESPONSE_ID] == "msg_2"
        assert attributes[tracing.FINISH_REASONS] == ("end_turn",)
        assert (attributes[tracing.INPUT_TOKENS], attributes[tracing.OUTPUT_TOKENS]) == (12, 40)
        assert attributes[tracing.TIME_TO_FIRST_CHUNK] >= 0


def test_the_prompt_becomes_the_conventions_messages_with_nothing_copied_but_text() -> None:
    params = {"system": [{"type": "text", "text": "be brief"}], "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "t1", "name": "f", "input": {"x": 1}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text",
                                                                      "text": "42"}]},
            {"type": "image", "source": {"type": "base64", "data": "SECRETPIXELS"}}]}]}
    attributes = trace_content.input_attributes(params)
    assert json.loads(attributes[trace_content.SYSTEM_INSTRUCTIONS]) == [
        {"type": "text", "content": "be brief"}]
    assert json.loads(attributes[trace_content.INPUT_MESSAGES]) == [
        {"role": "user", "parts": [{"type": "text", "content": "hi"}]},
        {"role": "assistant", "parts": [{"type": "tool_call", "id": "t1", "name": "f",
                                         "arguments": '{"x":1}'}]},
        {"role": "user", "parts": [
            {"type": "tool_call_response", "id": "t1",
             "response": [{"type": "text", "content": "42"}]},
            {"type": "image"}]}]
    assert trace_content.TRUNCATED not in attributes


def test_a_long_text_is_cut_and_the_json_stays_whole() -> None:
    long = "x" * (trace_content.MAX_TEXT + 10)
    attributes = trace_content.output_attributes([{"type": "text", "text": long}], "max_tokens")
    (message,) = json.loads(attributes[trace_content.OUTPUT_MESSAGES])
    assert message["finish_reason"] == "max_tokens"
    assert message["parts"][0]["content"] == "x" * trace_content.MAX_TEXT + "…"
    assert attributes[trace_content.TRUNCATED] is True


def test_a_streamed_answer_is_put_together_from_its_blocks() -> None:
    streamed = trace_content.StreamedContent()
    for event in (
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text",
                                                                       "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta",
                                                              "text": "Hel"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta",
                                                              "text": "lo"}},
        {"type": "content_block_start", "index": 1,
         "content_block": {"type": "tool_use", "id": "t", "name": "f", "input": {}}},
        {"type": "content_block_delta", "index": 1,
         "delta": {"type": "input_json_delta", "partial_json": '{"a":'}},
        {"type": "content_block_delta", "index": 1,
         "delta": {"type": "input_json_delta", "partial_json": "1}"}},
    ):
        streamed.add(event)
    (message,) = json.loads(trace_content.output_attributes(
        streamed.blocks(), "tool_use")[trace_content.OUTPUT_MESSAGES])
    assert message["parts"] == [{"type": "text", "content": "Hello"},
                                {"type": "tool_call", "id": "t", "name": "f",
                                 "arguments": '{"a":1}'}]
