"""chat_completion on the gateway: Elasticsearch's unified chat body in, OpenAI-style
chunks out (checked with the openai SDK's own models, a second and independent reader of
the shape), Anthropic's Messages API behind (the emulator), and Elasticsearch's verdicts
for bodies it refuses."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from gateway_support import (
    API_KEY,
    MODEL,
    SEED_BODY,
    RunningEmulator,
    RunningGateway,
    metric,
    sse_events,
    text_of,
    tool_calls_of,
)
from openai.types.chat import ChatCompletion, ChatCompletionChunk

CHAT_ID = "anthropic_chat"
STREAM = f"/_inference/chat_completion/{CHAT_ID}/_stream"
WHOLE = f"/_inference/chat_completion/{CHAT_ID}"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
USER = {"role": "user", "content": "Hello"}


@pytest.fixture
async def chat(gateway: RunningGateway) -> RunningGateway:
    await gateway.put(CHAT_ID, SEED_BODY, task_type="chat_completion")
    return gateway


def chunks_of(text: str) -> list[ChatCompletionChunk]:
    """Every ``event: message`` before ``[DONE]``, parsed by the openai SDK's model."""
    events = sse_events(text)
    assert events[-1] == ("message", "[DONE]"), events[-3:]
    return [ChatCompletionChunk.model_validate(json.loads(data)) for _, data in events[:-1]]


async def test_a_stream_is_openai_chunks_ending_with_done(chat: RunningGateway,
                                                          emulator: RunningEmulator) -> None:
    status, headers, text = await chat.call("POST", STREAM, {"messages": [USER]})

    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    chunks = chunks_of(text)
    assert text_of(chunks) == "Hello from the Anthropic emulator. You said: Hello"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert {c.id for c in chunks} == {chunks[0].id} and chunks[0].id.startswith("msg_")
    assert {c.model for c in chunks} == {MODEL}
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop"
    assert last.usage is not None and last.usage.prompt_tokens == 1
    assert last.usage.completion_tokens == 8 and last.usage.total_tokens == 9
    sent = emulator.requests()[-1].body
    assert sent == {"model": MODEL, "messages": [USER], "max_tokens": 1024, "stream": True}


async def test_the_whole_answer_is_an_openai_chat_completion(chat: RunningGateway) -> None:
    status, _, body = await chat.call("POST", WHOLE, {"messages": [USER],
                                                      "max_completion_tokens": 3})

    assert status == 200, body
    completion = ChatCompletion.model_validate(body)
    assert completion.object == "chat.completion" and completion.model == MODEL
    assert completion.choices[0].message.content == "Hello from the"
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens == 3


async def test_a_system_prompt_and_settings_reach_anthropic_as_its_fields(
        chat: RunningGateway, emulator: RunningEmulator) -> None:
    body = {"messages": [{"role": "system", "content": "Be brief."},
                         {"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
            "temperature": 0.5, "stop": ["END"], "max_completion_tokens": 50,
            "model": "claude-haiku-4-5"}

    status, _, text = await chat.call("POST", STREAM, body)

    assert status == 200
    assert {c.model for c in chunks_of(text)} == {"claude-haiku-4-5"}
    assert emulator.requests()[-1].body == {
        "model": "claude-haiku-4-5", "max_tokens": 50, "stream": True,
        "system": [{"type": "text", "text": "Be brief."}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
        "stop_sequences": ["END"], "temperature": 0.5}


async def test_a_three_turn_conversation_with_a_tool_round_trip(
        chat: RunningGateway, emulator: RunningEmulator) -> None:
    system = {"role": "system", "content": "You answer weather questions."}
    ask = {"role": "user", "content": "Use get_weather for Paris"}

    # Turn 1: the model calls the tool.
    status, _, text = await chat.call("POST", STREAM, {
        "messages": [system, ask], "tools": [WEATHER], "tool_choice": "auto"})
    assert status == 200
    chunks = chunks_of(text)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    [call] = tool_calls_of(chunks)
    assert call["name"] == "get_weather" and call["id"].startswith("toolu_")
    arguments = json.loads(call["arguments"])
    assert arguments == {"city": "Use get_weather for Paris"}
    said = text_of(chunks)

    # Turn 2: the caller runs it and sends the result back; the conversation goes on.
    assistant = {"role": "assistant", "content": said, "tool_calls": [{
        "id": call["id"], "type": "function",
        "function": {"name": "get_weather", "arguments": call["arguments"]}}]}
    result = {"role": "tool", "tool_call_id": call["id"], "content": "18C and sunny"}
    status, _, text = await chat.call("POST", STREAM, {
        "messages": [system, ask, assistant, result], "tools": [WEATHER]})
    assert status == 200
    answer = text_of(chunks_of(text))
    assert answer == "Hello from the Anthropic emulator. The tool said: 18C and sunny"

    # Turn 3: a plain follow-up over the whole history.
    status, _, text = await chat.call("POST", STREAM, {
        "messages": [system, ask, assistant, result,
                     {"role": "assistant", "content": answer},
                     {"role": "user", "content": "Thanks"}], "tools": [WEATHER]})
    assert status == 200
    assert text_of(chunks_of(text)).endswith("You said: Thanks")

    sent = emulator.requests()[-1].body
    assert sent["system"] == [{"type": "text", "text": "You answer weather questions."}]
    assert sent["messages"][1:3] == [
        {"role": "assistant", "content": [
            {"type": "text", "text": said},
            {"type": "tool_use", "id": call["id"], "name": "get_weather", "input": arguments}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call["id"],
                                      "content": [{"type": "text", "text": "18C and sunny"}]}]},
    ]
    assert sent["tools"] == [{"name": "get_weather", "description": "The weather in a city.",
                              "input_schema": WEATHER["function"]["parameters"]}]


@pytest.mark.parametrize(("choice", "sent"), [
    ("required", {"type": "any"}),
    ("none", {"type": "none"}),
    ({"type": "function", "function": {"name": "get_weather"}},
     {"type": "tool", "name": "get_weather"}),
])
async def test_tool_choice_becomes_anthropics(chat: RunningGateway, emulator: RunningEmulator,
                                              choice: Any, sent: dict[str, str]) -> None:
    status, _, text = await chat.call("POST", WHOLE, {
        "messages": [USER], "tools": [WEATHER], "tool_choice": choice})

    assert status == 200, text
    assert emulator.requests()[-1].body["tool_choice"] == sent
    completion = ChatCompletion.model_validate(text)
    called = completion.choices[0].message.tool_calls
    assert (called is None) == (choice == "none")


async def test_the_whole_answer_holds_the_tool_call(chat: RunningGateway) -> None:
    status, _, body = await chat.call("POST", WHOLE, {
        "messages": [{"role": "user", "content": "get_weather in Oslo"}], "tools": [WEATHER]})

    assert status == 200, body
    choice = ChatCompletion.model_validate(body).choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls or []
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "get_weather in Oslo"}


# (id, body, status, Elasticsearch's error type, message, the field at fault)
_MSGS = [USER]
INVALID = [
    ("empty-object", {}, 400, "action_request_validation_exception",
     "Validation Failed: 1: Field [messages] cannot be null;", "messages"),
    ("messages-null", {"messages": None}, 400, "action_request_validation_exception",
     "Validation Failed: 1: Field [messages] cannot be null;", "messages"),
    ("messages-empty", {"messages": []}, 400, "action_request_validation_exception",
     "Validation Failed: 1: Field [messages] cannot be an empty array;", "messages"),
    ("messages-string", {"messages": "Hello"}, 400, "x_content_parse_exception",
     "[UnifiedCompletionRequestBody] failed to parse field [messages]: expected an array of "
     "message objects", "messages"),
    ("completion-body", {"input": "Hello"}, 400, "x_content_parse_exception",
     "[UnifiedCompletionRequestBody] unknown field [input]", "input"),
    ("unknown-field", {"messages": _MSGS, "n": 2}, 400, "x_content_parse_exception",
     "[UnifiedCompletionRequestBody] unknown field [n]", "n"),
    ("message-not-object", {"messages": ["Hello"]}, 400, "x_content_parse_exception",
     "[UnifiedCompletionRequestBody] failed to parse field [messages]: expected an object",
     "messages.0"),
    ("role-missing", {"messages": [{"content": "Hello"}]}, 400, "x_content_parse_exception",
     "[Message] failed to parse field [role]: Required [role]", "messages.0.role"),
    ("role-number", {"messages": [{"role": 1, "content": "x"}]}, 400,
     "x_content_parse_exception", "[Message] failed to parse field [role]: expected a string",
     "messages.0.role"),
    ("message-unknown-field", {"messages": [{**USER, "name": "bob"}]}, 400,
     "x_content_parse_exception", "[Message] unknown field [name]", "messages.0.name"),
    ("content-number", {"messages": [{"role": "user", "content": 42}]}, 400,
     "x_content_parse_exception", "Expected an array start token or a value string token but "
     "found token [VALUE_NUMBER]", "messages.0.content"),
    ("part-without-type", {"messages": [{"role": "user", "content": [{"text": "x"}]}]}, 400,
     "status_exception", "Field [type] in object [content] is required but was not found",
     "messages.0.content.0.type"),
    ("part-unknown-type", {"messages": [{"role": "user", "content": [
        {"type": "audio", "audio": "x"}]}]}, 400, "status_exception",
     "Unrecognized type [audio] in object [content], must be one of [text, image_url, file]",
     "messages.0.content.0.type"),
    ("part-without-text", {"messages": [{"role": "user", "content": [{"type": "text"}]}]}, 400,
     "status_exception", "Field [text] in object [content] is required but was not found",
     "messages.0.content.0.text"),
    ("part-text-number", {"messages": [{"role": "user", "content": [
        {"type": "text", "text": 7}]}]}, 400, "status_exception",
     "Field [text] in object [content] is not of the expected type. Expected [String] but was "
     "[Integer]", "messages.0.content.0.text"),
    ("part-extra-field", {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "x", "cache": True}]}]}, 400, "status_exception",
     "[content] contains unknown fields [cache]", "messages.0.content.0"),
    ("role-developer", {"messages": [{"role": "developer", "content": "x"}]}, 400,
     "status_exception", "Unsupported role [developer] for the Anthropic chat completion API.",
     None),
    ("tool-without-call-id", {"messages": [USER, {"role": "tool", "content": "18C"}]}, 400,
     "status_exception", "Field [tool_call_id] is required in a tool message for the "
     "Anthropic chat completion API.", None),
    ("tool-call-arguments-not-json", {"messages": [USER, {"role": "assistant", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]}]},
     400, "status_exception", "Field [arguments] of tool call [c1] must be a JSON object for "
     "the Anthropic chat completion API.", None),
    ("tool-call-without-id", {"messages": [USER, {"role": "assistant", "tool_calls": [
        {"type": "function", "function": {"name": "f", "arguments": "{}"}}]}]}, 400,
     "x_content_parse_exception", "[ToolCall] failed to parse field [id]: Required [id]",
     "messages.1.tool_calls.0.id"),
    ("tool-choice-unknown", {"messages": _MSGS, "tools": [WEATHER], "tool_choice": "banana"},
     400, "status_exception",
     "Unsupported tool_choice value [banana] for the Anthropic chat completion API.", None),
    ("tool-choice-number", {"messages": _MSGS, "tool_choice": 1}, 400,
     "x_content_parse_exception", "Unsupported token [VALUE_NUMBER]", "tool_choice"),
    ("tool-choice-without-function", {"messages": _MSGS, "tool_choice": {"type": "function"}},
     400, "x_content_parse_exception",
     "[ToolChoiceObject] failed to parse field [function]: Required [function]",
     "tool_choice.function"),
    ("tool-without-function", {"messages": _MSGS, "tools": [{"type": "function"}]}, 400,
     "x_content_parse_exception", "[Tool] failed to parse field [function]: Required "
     "[function]", "tools.0.function"),
    ("tool-without-name", {"messages": _MSGS, "tools": [
        {"type": "function", "function": {"description": "x"}}]}, 400,
     "x_content_parse_exception",
     "[tool_function_field] failed to parse field [name]: Required [name]",
     "tools.0.function.name"),
    ("tool-strict", {"messages": _MSGS, "tools": [
        {"type": "function", "function": {"name": "f", "strict": True}}]}, 400,
     "status_exception", "The [strict] field in tool function definitions is not supported by "
     "the Anthropic chat completion API.", None),
    ("max-completion-tokens-zero", {"messages": _MSGS, "max_completion_tokens": 0}, 400,
     "action_request_validation_exception", "Validation Failed: 1: [max_completion_tokens] "
     "Invalid value [0]. [max_completion_tokens] must be a positive integer;",
     "max_completion_tokens"),
    ("temperature-word", {"messages": _MSGS, "temperature": "hot"}, 400,
     "x_content_parse_exception",
     "[UnifiedCompletionRequestBody] failed to parse field [temperature]: expected a number",
     "temperature"),
    ("stop-string", {"messages": _MSGS, "stop": "END"}, 400, "x_content_parse_exception",
     "[UnifiedCompletionRequestBody] failed to parse field [stop]: expected an array of "
     "strings", "stop"),
    ("image-ftp-url", {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "ftp://example.com/cat.png"}}]}]}, 400,
     "status_exception", "Image URLs must be HTTP(S) URLs or base64 data URIs with the format "
     "[data:{MIME-type};base64,...] for the Anthropic chat completion API.", None),
    ("file-not-pdf", {"messages": [{"role": "user", "content": [
        {"type": "file", "file": {"file_data": "data:image/png;base64,AAAA"}}]}]}, 400,
     "status_exception", "Unsupported file media type [image/png] for the Anthropic chat "
     "completion API; supported types are [application/pdf, text/plain].", None),
]


def unified_error(status: int, headers: dict[str, str], payload: Any) -> tuple[int, Any]:
    """(status, OpenAI-shaped error) of a JSON answer or of a stream's one error event."""
    if headers.get("Content-Type", "").startswith("text/event-stream"):
        [(name, data)] = sse_events(payload)
        assert name == "error"
        payload = json.loads(data)
    assert set(payload) == {"error"}, payload
    return status, payload["error"]


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
@pytest.mark.parametrize(("body", "status", "error_type", "message", "param"),
                         [case[1:] for case in INVALID], ids=[case[0] for case in INVALID])
async def test_an_invalid_chat_body_gets_elasticsearchs_verdict_in_openais_shape(
        chat: RunningGateway, emulator: RunningEmulator, stream: bool, body: Any,
        status: int, error_type: str, message: str, param: str | None) -> None:
    answer = await chat.call("POST", STREAM if stream else WHOLE, body)

    got_status, error = unified_error(*answer)
    assert got_status == status
    assert error["message"] == message
    assert error["type"] == error_type and error["code"] == "bad_request"
    assert error.get("param") == param
    assert not emulator.requests()  # refused before Anthropic was asked


async def test_unknown_id_and_wrong_task_type_are_openai_shaped(chat: RunningGateway) -> None:
    await chat.put()  # a completion endpoint
    answer = await chat.call("POST", "/_inference/chat_completion/nope", {"messages": [USER]})
    _, error = unified_error(*answer)
    assert answer[0] == 404
    assert error == {"code": "not_found", "message": "Inference endpoint not found [nope]",
                     "type": "resource_not_found_exception"}

    answer = await chat.call("POST", "/_inference/chat_completion/anthropic_completion/_stream",
                             {"messages": [USER]})
    assert unified_error(*answer)[1]["message"] == (
        "Incompatible task_type, the requested type [chat_completion] does not match the "
        "model type [completion]")

    # A completion body on the chat endpoint's id, without a task type in the path, is
    # read as chat (the endpoint's task type decides), as Elasticsearch's proxy does.
    answer = await chat.call("POST", f"/_inference/{CHAT_ID}/_stream", {"input": "x"})
    assert unified_error(*answer)[1]["message"] == (
        "[UnifiedCompletionRequestBody] unknown field [input]")
    status, _, text = await chat.call("POST", f"/_inference/{CHAT_ID}/_stream",
                                      {"messages": [USER]})
    assert status == 200 and text_of(chunks_of(text)).endswith("You said: Hello")


async def test_upstream_errors_are_events_with_anthropics_type(
        chat: RunningGateway, emulator: RunningEmulator) -> None:
    # Before the stream started: one error event, with the status.
    emulator.fail({"kind": "error", "status": 401, "message": "invalid x-api-key"})
    status, _, text = await chat.call("POST", STREAM, {"messages": [USER]})
    assert status == 401
    [(name, data)] = sse_events(text)
    assert name == "error"
    assert json.loads(data) == {"error": {
        "code": "unauthorized", "type": "anthropic_error",
        "message": "Received an authentication error status code for request from inference "
                   f"entity id [{CHAT_ID}] status [401]. Error message: [invalid x-api-key]"}}

    # Mid-stream: the chunks so far, then the error event, and no [DONE].
    emulator.fail({"kind": "stream_error", "after": 2, "error_type": "overloaded_error",
                   "message": "Overloaded"})
    status, _, text = await chat.call("POST", STREAM, {"messages": [USER]})
    assert status == 200
    events = sse_events(text)
    assert ("message", "[DONE]") not in events
    assert [name for name, _ in events][-1] == "error"
    error = json.loads(events[-1][1])["error"]
    assert error["type"] == "anthropic_error" and "Overloaded" in error["message"]
    assert API_KEY not in text


async def test_tokens_and_requests_are_counted_as_for_completion(
        chat: RunningGateway, emulator: RunningEmulator) -> None:
    await chat.call("POST", STREAM, {"messages": [USER]})
    await chat.call("POST", WHOLE, {"messages": [USER]})

    session, ours = chat.session, f'inference_id="{CHAT_ID}"'
    assert await metric(session, chat.public, "inference_gateway_tokens_total",
                        f'{ours},kind="input"') == 2
    assert await metric(session, chat.public, "inference_gateway_tokens_total",
                        f'{ours},kind="output"') == 16
    for stream in ("true", "false"):
        assert await metric(session, chat.public, "inference_gateway_requests_total",
                            f'{ours},stream="{stream}",status="200"') == 1
    # One stream, one time to its first delta (the whole answer has none).
    assert await metric(session, chat.public,
                        "inference_gateway_time_to_first_delta_seconds_count", ours) == 1
    assert await metric(session, chat.public, "inference_gateway_queue_capacity") == 2000


async def test_a_client_that_goes_away_cancels_the_upstream_call(
        chat: RunningGateway, emulator: RunningEmulator) -> None:
    emulator.latency(per_token=0.5)
    async with chat.session.post(chat.public + STREAM, json={"messages": [USER]}) as response:
        assert response.status == 200
        await response.content.readline()  # the stream has started
    for _ in range(100):
        if emulator.requests()[-1].outcome == "cancelled":
            break
        await asyncio.sleep(0.05)
    assert emulator.requests()[-1].outcome == "cancelled"
