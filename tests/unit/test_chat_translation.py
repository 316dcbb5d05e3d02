"""The chat path's translations, both ways, table-driven: a unified chat body into
Messages API parameters (gateway/chat/messages.py), Anthropic's events and Messages into
OpenAI-style chunks and completions (gateway/chat/chunks.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import SecretStr

from inference_operator.api.settings import TaskSettings
from inference_operator.gateway.chat import chunks, messages, request
from inference_operator.gateway.endpoints import Endpoint
from inference_operator.gateway.errors import ESError

USER = {"role": "user", "content": "Hi"}


def endpoint(**settings: Any) -> Endpoint:
    # The client and the bucket take no part in building parameters.
    return Endpoint(inference_id="chat", task_type="chat_completion", model_id="claude-x",
                    requests_per_minute=50,
                    task_settings=TaskSettings(**{"max_tokens": 100, **settings}),
                    api_key=SecretStr("k"), client=None, bucket=None,  # type: ignore[arg-type]
                    budget=None)  # type: ignore[arg-type]


def params(body: dict[str, Any], **settings: Any) -> dict[str, Any]:
    return messages.message_params(endpoint(**settings),
                                   request.parse(json.dumps(body).encode()))


CALL = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
CALL2 = {"id": "c2", "type": "function", "function": {"name": "g", "arguments": ""}}

# (id, body, task settings, what the Messages API call must hold)
TRANSLATIONS = [
    ("defaults", {"messages": [USER]}, {},
     {"model": "claude-x", "max_tokens": 100, "messages": [USER]}),
    ("request-values-win", {"messages": [USER], "temperature": 0.1, "top_p": 0.2,
                            "max_completion_tokens": 5, "model": "claude-y"},
     {"temperature": 0.9, "top_p": 0.8, "top_k": 3},
     {"model": "claude-y", "max_tokens": 5, "messages": [USER], "temperature": 0.1,
      "top_p": 0.2, "top_k": 3}),
    ("endpoint-settings-fill-in", {"messages": [USER]}, {"temperature": 0.9},
     {"model": "claude-x", "max_tokens": 100, "messages": [USER], "temperature": 0.9}),
    ("several-system-messages", {"messages": [
        {"role": "system", "content": "A"}, USER,
        {"role": "system", "content": [{"type": "text", "text": "B"}]}]}, {},
     {"model": "claude-x", "max_tokens": 100, "messages": [USER],
      "system": [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}]}),
    ("parallel-tool-results-share-a-turn", {"messages": [
        USER, {"role": "assistant", "content": None, "tool_calls": [CALL, CALL2]},
        {"role": "tool", "tool_call_id": "c1", "content": "one"},
        {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "two"}]}]},
     {}, {"model": "claude-x", "max_tokens": 100, "messages": [
         USER,
         {"role": "assistant", "content": [
             {"type": "tool_use", "id": "c1", "name": "f", "input": {"a": 1}},
             {"type": "tool_use", "id": "c2", "name": "g", "input": {}}]},
         {"role": "user", "content": [
             {"type": "tool_result", "tool_use_id": "c1",
              "content": [{"type": "text", "text": "one"}]},
             {"type": "tool_result", "tool_use_id": "c2",
              "content": [{"type": "text", "text": "two"}]}]}]}),
    ("tool-choice-without-tools-is-not-sent", {"messages": [USER], "tool_choice": "none"},
     {}, {"model": "claude-x", "max_tokens": 100, "messages": [USER]}),
    ("tools-get-an-object-schema", {"messages": [USER], "stop": ["X"], "tools": [
        {"type": "function", "function": {"name": "f", "strict": False}},
        {"type": "function", "function": {"name": "g", "description": "G", "parameters": {
            "type": "string", "required": ["a"]}}}], "tool_choice": "required"}, {},
     {"model": "claude-x", "max_tokens": 100, "messages": [USER], "stop_sequences": ["X"],
      "tools": [{"name": "f", "input_schema": {"type": "object", "properties": {}}},
                {"name": "g", "description": "G", "input_schema": {
                    "type": "object", "required": ["a"], "properties": {}}}],
      "tool_choice": {"type": "any"}}),
    ("images-and-documents", {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/jpg;base64,AAAA"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
        {"type": "file", "file": {"file_data": "data:text/plain;base64,aGVsbG8=",
                                  "filename": "a.txt"}},
        {"type": " TEXT ", "text": "what is this?"}]}]}, {},
     {"model": "claude-x", "max_tokens": 100, "messages": [{"role": "user", "content": [
         {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg",
                                      "data": "AAAA"}},
         {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
         {"type": "document", "title": "a.txt",
          "source": {"type": "text", "media_type": "text/plain", "data": "hello"}},
         {"type": "text", "text": "what is this?"}]}]}),
]


@pytest.mark.parametrize(("body", "settings", "expected"), [c[1:] for c in TRANSLATIONS],
                         ids=[c[0] for c in TRANSLATIONS])
def test_a_chat_body_becomes_a_messages_call(body: dict[str, Any], settings: dict[str, Any],
                                             expected: dict[str, Any]) -> None:
    assert params(body, **settings) == expected


def test_a_system_message_holds_text_only() -> None:
    with pytest.raises(ESError) as refused:
        params({"messages": [{"role": "system", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}, USER]})
    assert refused.value.reason == ("Unsupported content type [image_url] in a system message "
                                    "for the Anthropic chat completion API.")


@pytest.mark.parametrize(("stop_reason", "finish_reason"), [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"),
    ("tool_use", "tool_calls"), ("refusal", "content_filter"), ("something_new", "something_new"),
    (None, None),
])
def test_stop_reasons_become_openai_finish_reasons(stop_reason: Any,
                                                   finish_reason: str | None) -> None:
    assert chunks.finish_reason(stop_reason) == finish_reason


def _events() -> list[dict[str, Any]]:
    """A streamed Message: text, then two tool calls (parallel), as Anthropic sends it."""
    def block(index: int, content: dict[str, Any]) -> dict[str, Any]:
        return {"type": "content_block_start", "index": index, "content_block": content}

    def delta(index: int, content: dict[str, Any]) -> dict[str, Any]:
        return {"type": "content_block_delta", "index": index, "delta": content}

    return [
        {"type": "message_start", "message": {"id": "msg_1", "model": "claude-x",
                                              "usage": {"input_tokens": 7}}},
        block(0, {"type": "text", "text": ""}),
        delta(0, {"type": "text_delta", "text": "Calling."}),
        {"type": "content_block_stop", "index": 0},
        block(1, {"type": "tool_use", "id": "t1", "name": "f", "input": {}}),
        delta(1, {"type": "input_json_delta", "partial_json": '{"a":'}),
        delta(1, {"type": "input_json_delta", "partial_json": " 1}"}),
        block(2, {"type": "tool_use", "id": "t2", "name": "g", "input": {}}),
        delta(2, {"type": "input_json_delta", "partial_json": "{}"}),
        delta(9, {"type": "input_json_delta", "partial_json": "lost"}),  # no such block
        {"type": "ping"},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"},
         "usage": {"output_tokens": 12}},
        {"type": "message_stop"},
    ]


def test_a_stream_becomes_openai_chunks_with_numbered_tool_calls() -> None:
    stream = chunks.ChunkStream()
    out = [c for c in map(stream.chunk, _events()) if c is not None]

    parsed = [ChatCompletionChunk.model_validate(c) for c in out]
    assert {(c.id, c.model, c.object) for c in parsed} == {
        ("msg_1", "claude-x", "chat.completion.chunk")}
    deltas = [c.choices[0].delta for c in parsed]
    assert [d.role for d in deltas][:1] == ["assistant"]
    assert "".join(d.content or "" for d in deltas) == "Calling."
    calls = [(t.index, t.id, t.function.name if t.function else None,
              t.function.arguments if t.function else None)
             for d in deltas for t in d.tool_calls or []]
    assert calls == [(0, "t1", "f", ""), (0, None, None, '{"a":'), (0, None, None, " 1}"),
                     (1, "t2", "g", ""), (1, None, None, "{}")]
    assert {c.choices[0].index for c in parsed} == {0}
    last = parsed[-1]
    assert last.choices[0].finish_reason == "tool_calls"
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens,
            last.usage.total_tokens) == (7, 12, 19)
    assert [c.usage for c in parsed[:-1]] == [None] * (len(parsed) - 1)


def test_a_whole_message_becomes_an_openai_chat_completion() -> None:
    message = {"id": "msg_2", "model": "claude-x", "stop_reason": "tool_use",
               "content": [{"type": "text", "text": "Calling "}, {"type": "text", "text": "f."},
                           {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}],
               "usage": {"input_tokens": 3, "output_tokens": 4}}

    completion = ChatCompletion.model_validate(chunks.completion(message))

    choice = completion.choices[0]
    assert choice.message.content == "Calling f." and choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls or []
    assert (call.id, call.function.name, json.loads(call.function.arguments)) == (
        "t1", "f", {"a": 1})
    assert completion.usage is not None and completion.usage.total_tokens == 7
