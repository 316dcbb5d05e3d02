"""The emulator's Messages API beyond one user turn: system prompts, conversations, tool
use and stop sequences, each parsed by the official SDK into its typed models."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import pytest
from anthropic.types import (
    InputJSONDelta,
    RawContentBlockDeltaEvent,
    RawContentBlockStartEvent,
    TextBlock,
    TextDelta,
    ToolUseBlock,
)
from gateway_support import RunningEmulator

MODEL = "claude-x"
GREETING = "Hello from the Anthropic emulator. You said: "
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"},
                       "units": {"type": "string"}},
        "required": ["days", "city"],
    },
}
TIME = {"name": "get_time", "input_schema": {"type": "object", "properties": {}}}
ASK = "What is the weather in Paris? Use get_weather"


def sdk(emulator: RunningEmulator) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=emulator.url, max_retries=0, api_key="k",
                                    http_client=anthropic.DefaultAioHttpClient())


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def tool_use_turn(block: ToolUseBlock) -> dict[str, Any]:
    return {"role": "assistant", "content": [
        {"type": "text", "text": "I will call get_weather."},
        {"type": "tool_use", "id": block.id, "name": block.name, "input": block.input},
    ]}


async def create(emulator: RunningEmulator, **params: Any) -> anthropic.types.Message:
    async with sdk(emulator) as client:
        return await client.messages.create(**{"model": MODEL, "max_tokens": 100, **params})


async def stream_final(emulator: RunningEmulator, **params: Any) -> anthropic.types.Message:
    async with sdk(emulator) as client, client.messages.stream(
        **{"model": MODEL, "max_tokens": 100, **params}
    ) as stream:
        return await stream.get_final_message()


@pytest.mark.parametrize("system", ["You are terse.", [{"type": "text", "text": "Be terse."}]])
async def test_system_is_accepted_and_logged(emulator: RunningEmulator, system: Any) -> None:
    message = await create(emulator, system=system, messages=[user("hi")])
    final = await stream_final(emulator, system=system, messages=[user("hi")])
    for reply in (message, final):
        assert isinstance(reply.content[0], TextBlock)
        assert reply.content[0].text == GREETING + "hi"  # the system prompt changes nothing
    assert [entry.body["system"] for entry in emulator.requests()] == [system, system]


async def test_tool_round_trip(emulator: RunningEmulator) -> None:
    first = await create(emulator, tools=[TIME, WEATHER], messages=[user(ASK)])
    text, call = first.content
    assert isinstance(text, TextBlock) and text.text == "I will call get_weather."
    assert isinstance(call, ToolUseBlock) and call.name == "get_weather"
    assert call.id.startswith("toolu_emu")
    # required keys in schema order: the prompt for strings, its word count for integers
    assert list(call.input.items()) == [("city", ASK), ("days", 8)]
    assert first.stop_reason == "tool_use"
    pieces = -(-len(json.dumps(call.input, separators=(",", ":"))) // 8)
    assert first.usage.output_tokens == 4 + pieces  # 4 text deltas

    result = {"type": "tool_result", "tool_use_id": call.id,
              "content": [{"type": "text", "text": "sunny,"}, {"type": "text", "text": "21C"}]}
    second = await create(emulator, tools=[TIME, WEATHER], messages=[
        user(ASK), tool_use_turn(call), user([result]),
    ])
    assert [type(block) for block in second.content] == [TextBlock]
    assert second.content[0].text == "Hello from the Anthropic emulator. The tool said: sunny, 21C"
    assert second.stop_reason == "end_turn"


async def test_streamed_tool_use_reassembles(emulator: RunningEmulator) -> None:
    final = await stream_final(emulator, tools=[WEATHER], messages=[user(ASK)])
    whole = await create(emulator, tools=[WEATHER], messages=[user(ASK)])
    assert final.stop_reason == "tool_use"
    assert isinstance(final.content[1], ToolUseBlock)
    assert final.content[1].input == whole.content[1].input
    assert final.usage.output_tokens == whole.usage.output_tokens


async def test_streamed_tool_use_events(emulator: RunningEmulator) -> None:
    async with sdk(emulator) as client:
        stream = await client.messages.create(model=MODEL, max_tokens=100, stream=True,
                                              tools=[WEATHER], messages=[user(ASK)])
        events = [event async for event in stream]
    starts = [e for e in events if isinstance(e, RawContentBlockStartEvent)]
    assert [(e.index, type(e.content_block)) for e in starts] == [(0, TextBlock),
                                                                  (1, ToolUseBlock)]
    assert starts[1].content_block.input == {}
    deltas = [e for e in events if isinstance(e, RawContentBlockDeltaEvent)]
    assert {type(e.delta) for e in deltas} == {TextDelta, InputJSONDelta}
    pieces = [e.delta.partial_json for e in deltas if isinstance(e.delta, InputJSONDelta)]
    assert all(len(piece) <= 8 for piece in pieces) and len(pieces) > 1
    assert json.loads("".join(pieces)) == {"city": ASK, "days": 8}
    assert [e.type for e in events] == [
        "message_start", "content_block_start", *["content_block_delta"] * 4,  # the SDK skips ping
        "content_block_stop", "content_block_start", *["content_block_delta"] * len(pieces),
        "content_block_stop", "message_delta", "message_stop",
    ]
    assert [e.delta.type for e in deltas].count("input_json_delta") == len(pieces)


@pytest.mark.parametrize(("text", "choice", "called"), [
    (ASK, None, "get_weather"),
    (ASK, {"type": "auto"}, "get_weather"),
    ("What is the weather?", {"type": "auto"}, None),
    ("call get_weathers or xget_weather", None, None),  # whole words only
    ("What is the weather?", {"type": "any"}, "get_time"),
    (ASK, {"type": "any"}, "get_weather"),
    ("What is the weather?", {"type": "tool", "name": "get_weather"}, "get_weather"),
    (ASK, {"type": "none"}, None),
])
async def test_tool_choice(emulator: RunningEmulator, text: str, choice: Any,
                           called: str | None) -> None:
    params = {"tool_choice": choice} if choice else {}
    message = await create(emulator, tools=[TIME, WEATHER], messages=[user(text)], **params)
    final = await stream_final(emulator, tools=[TIME, WEATHER], messages=[user(text)], **params)
    for reply in (message, final):
        tools = [block.name for block in reply.content if isinstance(block, ToolUseBlock)]
        assert tools == ([called] if called else [])
        assert reply.stop_reason == ("tool_use" if called else "end_turn")
        if not called:
            assert reply.content[0].text == GREETING + text


async def test_tool_input_from_schema(emulator: RunningEmulator) -> None:
    every = {"name": "every", "input_schema": {"type": "object", "properties": {
        "b": {"type": "boolean"}, "n": {"type": "number"}, "a": {"type": "array"},
        "o": {"type": "object"}, "u": {"type": ["string", "null"]}, "s": {"type": "string"},
    }}}  # no "required": every property
    message = await create(emulator, tools=[every], messages=[user("use every tool")])
    assert message.content[1].input == {"b": True, "n": 3, "a": [], "o": {}, "u": None,
                                        "s": "use every tool"}


async def test_max_tokens_cuts_before_the_tool_use(emulator: RunningEmulator) -> None:
    message = await create(emulator, max_tokens=2, tools=[WEATHER], messages=[user(ASK)])
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == "I will" and message.stop_reason == "max_tokens"


@pytest.mark.parametrize(("stops", "text", "matched"), [
    (["emulator"], "Hello from the Anthropic ", "emulator"),
    (["said", "from"], "Hello ", "from"),
    (["the A", "from"], "Hello ", "from"),
    (["Hello"], "", "Hello"),
])
async def test_stop_sequences(emulator: RunningEmulator, stops: list[str], text: str,
                              matched: str) -> None:
    message = await create(emulator, stop_sequences=stops, messages=[user("hi")])
    async with sdk(emulator) as client, client.messages.stream(
        model=MODEL, max_tokens=100, stop_sequences=stops, messages=[user("hi")]
    ) as stream:
        deltas = [delta async for delta in stream.text_stream]
        final = await stream.get_final_message()
    for reply in (message, final):
        assert reply.content[0].text == text
        assert reply.stop_reason == "stop_sequence" and reply.stop_sequence == matched
    assert "".join(deltas) == text and all(deltas)


async def test_stop_sequence_not_reached(emulator: RunningEmulator) -> None:
    message = await create(emulator, stop_sequences=["nowhere"], messages=[user("hi")])
    assert message.stop_reason == "end_turn" and message.stop_sequence is None


async def test_stream_error_counts_json_deltas(emulator: RunningEmulator) -> None:
    emulator.fail({"kind": "stream_error", "after": 6})  # 4 text deltas, then 2 of JSON
    seen = []
    async with sdk(emulator) as client:
        stream = await client.messages.create(model=MODEL, max_tokens=100, stream=True,
                                              tools=[WEATHER], messages=[user(ASK)])
        with pytest.raises(anthropic.APIStatusError):
            async for event in stream:
                if isinstance(event, RawContentBlockDeltaEvent):
                    seen.append(event.delta.type)
    assert seen == ["text_delta"] * 4 + ["input_json_delta"] * 2


TOOL_USE = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}
ANSWERED = [user("hi"), {"role": "assistant", "content": [TOOL_USE]}]


@pytest.mark.parametrize(("params", "message"), [
    ({"system": 5}, "system: Input should be a valid list"),
    ({"system": [{"type": "text"}]}, "system.0.text: Field required"),
    ({"messages": [{"role": "assistant", "content": "hi"}]},
     'messages: first message must use the "user" role'),
    ({"messages": [{"role": "tool", "content": "hi"}]},
     "messages.0.role: Input should be 'user' or 'assistant'"),
    ({"messages": [user([{"type": "tool_result", "tool_use_id": "toolu_9", "content": "x"}])]},
     "messages.0.content.0: unexpected `tool_use_id` found in `tool_result` blocks: toolu_9. "
     "Each `tool_result` block must have a corresponding `tool_use` block in the previous "
     "message."),
    ({"messages": [*ANSWERED, user([{"type": "tool_result", "tool_use_id": "toolu_1"}, {
        "type": "tool_result", "tool_use_id": "toolu_2"}])]},
     "messages.2.content.1: unexpected `tool_use_id` found in `tool_result` blocks: toolu_2. "
     "Each `tool_result` block must have a corresponding `tool_use` block in the previous "
     "message."),
    ({"messages": [*ANSWERED, user("go on")]},
     "messages.1: `tool_use` ids were found without `tool_result` blocks immediately after: "
     "toolu_1. Each `tool_use` block must have a corresponding `tool_result` block in the "
     "next message."),
    ({"messages": [user("hi"), {"role": "assistant", "content": [
        {**TOOL_USE, "input": "x"}]}]},
     "messages.1.content.0.tool_use.input: Input should be a valid dictionary"),
    ({"tools": [{**WEATHER, "name": "get weather"}]},
     "tools.0.custom.name: String should match pattern '^[a-zA-Z0-9_-]{1,64}$'"),
    ({"tools": [{**WEATHER, "input_schema": {"type": "string"}}]},
     "tools.0.custom.input_schema.type: Input should be 'object'"),
    ({"tools": [WEATHER, WEATHER]}, "tools: Tool names must be unique."),
    ({"tools": [WEATHER], "tool_choice": "auto"}, "tool_choice: Input should be an object"),
    ({"tools": [WEATHER], "tool_choice": "none"}, "tool_choice: Input should be an object"),
    ({"tools": [WEATHER], "tool_choice": {"type": "required"}},
     "tool_choice: Input tag 'required' found using 'type' does not match any of the "
     "expected tags: 'auto', 'any', 'tool', 'none'"),
    ({"tools": [WEATHER], "tool_choice": {"type": "tool", "name": "get_time"}},
     "tool_choice.name: Tool 'get_time' not found in tools"),
    ({"tool_choice": {"type": "auto"}}, "tool_choice may only be specified while providing tools."),
    ({"stop_sequences": "END"}, "stop_sequences: Input should be a valid list"),
])
async def test_invalid_requests(emulator: RunningEmulator, params: dict[str, Any],
                                message: str) -> None:
    with pytest.raises(anthropic.BadRequestError) as refused:
        await create(emulator, **{"messages": [user("hi")], **params})
    assert refused.value.body["error"] == {"type": "invalid_request_error", "message": message}
    assert emulator.requests()[-1].outcome == "400"


async def test_prefill_needs_no_tool_result(emulator: RunningEmulator) -> None:
    # A trailing assistant turn (a prefill) has no next message to answer its tool_use.
    message = await create(emulator, messages=ANSWERED, tools=[WEATHER])
    assert message.content[0].text == GREETING + "hi"


async def test_images_and_documents_are_accepted(emulator: RunningEmulator) -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": "iVBORw0KGgo="}}
    document = {"type": "document", "source": {"type": "text", "media_type": "text/plain",
                                               "data": "notes"}}
    message = await create(emulator, messages=[
        user([image, document, {"type": "text", "text": "describe"}]),
        {"role": "assistant", "content": "A picture."},
        user("thanks"),
    ])
    assert message.content[0].text == GREETING + "thanks"
