"""The gateway's own Messages API client against the official SDK: the same request on
the wire and the same reading of the same replies (the gateway left the SDK for speed and
memory, docs/benchmarks.md; these tests keep it honest when either side changes)."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import pytest
from gateway_support import RunningEmulator

from inference_operator import jsoncodec
from inference_operator.anthropic import client as upstream
from inference_operator.anthropic import stream as message_stream
from inference_operator.anthropic.client import Upstream
from inference_operator.anthropic.errors import StatusError, retry_after

MESSAGES = [{"role": "user", "content": "what is the answer"}]
PARAMS: dict[str, Any] = {"model": "claude-x", "max_tokens": 5, "messages": MESSAGES}
WEATHER = {"name": "get_weather", "description": "The weather in a city.",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                            "required": ["city"]}}
# What the chat path sends: a system prompt as blocks, tools, a tool choice and stops.
CHAT_PARAMS: dict[str, Any] = {
    "model": "claude-x", "max_tokens": 100,
    "system": [{"type": "text", "text": "You answer weather questions."}],
    "messages": [{"role": "user", "content": "get_weather in Oslo"}],
    "tools": [WEATHER], "tool_choice": {"type": "auto"}, "stop_sequences": ["END"]}
# Replies of each stop reason the gateway translates, as (params, stop_reason,
# stop_sequence): the emulator's rules (docs/emulator.md) decide which one comes back.
REPLIES: dict[str, tuple[dict[str, Any], str, str | None]] = {
    "end_turn": ({**PARAMS, "max_tokens": 100}, "end_turn", None),
    "max_tokens": (PARAMS, "max_tokens", None),
    "stop_sequence": ({**PARAMS, "max_tokens": 100, "stop_sequences": ["END", "said"]},
                      "stop_sequence", "said"),
    "tool_use": (CHAT_PARAMS, "tool_use", None),
}


@pytest.fixture
async def ours(emulator: RunningEmulator) -> AsyncIterator[upstream.Client]:
    client = Upstream(emulator.url)
    await client.start()
    yield client.client("k")
    await client.close()


@pytest.fixture
async def sdk(emulator: RunningEmulator) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(base_url=emulator.url, api_key="k", max_retries=0,
                                        http_client=anthropic.DefaultAioHttpClient()) as client:
        yield client


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("params", [PARAMS, CHAT_PARAMS], ids=["plain", "chat"])
async def test_same_request_on_the_wire(ours: upstream.Client, sdk: anthropic.AsyncAnthropic,
                                        emulator: RunningEmulator, params: dict[str, Any],
                                        stream: bool) -> None:
    # The chat fields through the SDK's typed parameters, so that its own serialisation is
    # compared; sampling (no longer typed in the SDK) as extra fields.
    sampling = {"temperature": 0.5, "top_k": 3}
    if stream:
        async for _ in await sdk.messages.create(**params, stream=True, extra_body=sampling):
            pass
        reply = await ours.stream(upstream.encode({**params, **sampling}, stream=True))
        async for _ in reply.events():
            pass
        reply.close()
    else:
        await sdk.messages.create(**params, extra_body=sampling)
        await ours.create(upstream.encode({**params, **sampling}))
    theirs, mine = emulator.requests()
    assert theirs.body == {**params, **sampling, **({"stream": True} if stream else {})}
    assert mine.body == theirs.body
    assert (mine.auth, mine.path, mine.method) == (theirs.auth, theirs.path, theirs.method)
    for header in ("anthropic-version", "content-type", "accept"):
        assert mine.headers[header] == theirs.headers[header], header


@pytest.mark.parametrize("reply", list(REPLIES))
async def test_same_reading_of_a_message(ours: upstream.Client, sdk: anthropic.AsyncAnthropic,
                                         reply: str) -> None:
    params, stop_reason, stop_sequence = REPLIES[reply]
    theirs = await sdk.messages.create(**params)
    mine = await ours.create(upstream.encode(params))
    assert _without_ids(mine) == _without_ids(theirs.to_dict())
    assert (mine["stop_reason"], mine["stop_sequence"]) == (stop_reason, stop_sequence)
    assert [b["type"] for b in mine["content"]] == [b.type for b in theirs.content]
    assert [b["text"] for b in mine["content"] if b["type"] == "text"] == \
        [b.text for b in theirs.content if b.type == "text"]
    assert mine["usage"] == theirs.usage.model_dump(include={"input_tokens", "output_tokens"})


async def test_same_reading_of_a_message_with_a_tool_call(
        ours: upstream.Client, sdk: anthropic.AsyncAnthropic) -> None:
    theirs = await sdk.messages.create(**CHAT_PARAMS)
    mine = await ours.create(upstream.encode(CHAT_PARAMS))
    text, call = mine["content"]
    assert text == {"type": "text", "text": "I will call get_weather."}
    assert call["type"] == "tool_use" and call["name"] == "get_weather"
    assert call["input"] == {"city": "get_weather in Oslo"}
    their_text, their_call = theirs.content
    assert isinstance(their_call, anthropic.types.ToolUseBlock)
    assert their_text.type == "text" and their_text.text == text["text"]
    assert (their_call.name, their_call.input) == (call["name"], call["input"])
    assert their_call.id.startswith("toolu_") and call["id"].startswith("toolu_")


@pytest.mark.parametrize("reply", list(REPLIES))
async def test_same_reading_of_a_stream(ours: upstream.Client, sdk: anthropic.AsyncAnthropic,
                                        reply: str) -> None:
    params, stop_reason, stop_sequence = REPLIES[reply]
    theirs = [event.to_dict() async for event in
              await sdk.messages.create(**params, stream=True)]
    stream = await ours.stream(upstream.encode(params, stream=True))
    mine = [event async for event in stream.events()]
    stream.close()
    assert _without_ids(mine) == _without_ids(theirs)  # ``ping`` skipped by both
    [delta] = [event for event in mine if event["type"] == "message_delta"]
    assert delta["delta"] == {"stop_reason": stop_reason, "stop_sequence": stop_sequence}


async def test_same_reading_of_a_streamed_tool_call(ours: upstream.Client,
                                                    sdk: anthropic.AsyncAnthropic) -> None:
    stream = await ours.stream(upstream.encode(CHAT_PARAMS, stream=True))
    mine = [event async for event in stream.events()]
    stream.close()
    # The text block, then the tool_use block with its input in input_json_delta pieces.
    kinds = [_kind(event) for event in mine]
    assert [kind for kind, _ in itertools.groupby(kinds)] == [
        "message_start", "content_block_start text 0", "content_block_delta text_delta 0",
        "content_block_stop 0", "content_block_start tool_use 1",
        "content_block_delta input_json_delta 1", "content_block_stop 1", "message_delta",
        "message_stop"]
    assert kinds.count("content_block_delta input_json_delta 1") > 1  # really in pieces
    start = mine[kinds.index("content_block_start tool_use 1")]["content_block"]
    assert (start["name"], start["input"]) == ("get_weather", {})
    pieces = "".join(event["delta"]["partial_json"] for event in mine
                     if _kind(event) == "content_block_delta input_json_delta 1")
    # The SDK's stream helper puts the input together from the same events.
    async with sdk.messages.stream(**CHAT_PARAMS) as theirs:
        final = await theirs.get_final_message()
    call = final.content[1]
    assert isinstance(call, anthropic.types.ToolUseBlock)
    assert json.loads(pieces) == call.input == {"city": "get_weather in Oslo"}
    assert final.stop_reason == "tool_use"


def _kind(event: dict[str, Any]) -> str:
    """``type``, then the block's or delta's type and the block index, in one string."""
    inner = event.get("content_block") or event.get("delta") or {}
    words = [event["type"]]
    if event["type"].startswith("content_block"):
        words += [inner["type"]] if "type" in inner else []
        words.append(str(event["index"]))
    return " ".join(words)


@pytest.mark.parametrize("fault", [
    {"kind": "error", "status": 429, "retry_after": "2"},
    {"kind": "error", "status": 529},
    {"kind": "error", "status": 401, "message": "invalid x-api-key"},
])
async def test_same_error_from_a_status(ours: upstream.Client, sdk: anthropic.AsyncAnthropic,
                                        emulator: RunningEmulator, fault) -> None:
    emulator.fail(fault, fault)
    with pytest.raises(anthropic.APIStatusError) as theirs:
        await sdk.messages.create(**PARAMS)
    with pytest.raises(StatusError) as mine:
        await ours.create(upstream.encode(PARAMS))
    assert mine.value.status == theirs.value.status_code
    assert _without_ids(mine.value.body) == _without_ids(theirs.value.body)
    assert retry_after(mine.value.headers) == (2.0 if "retry_after" in fault else None)


async def test_same_error_inside_a_stream(ours: upstream.Client,
                                          sdk: anthropic.AsyncAnthropic,
                                          emulator: RunningEmulator) -> None:
    fault = {"kind": "stream_error", "after": 1, "error_type": "overloaded_error"}
    emulator.fail(fault, fault)
    with pytest.raises(anthropic.APIStatusError) as theirs:
        async for _ in await sdk.messages.create(**PARAMS, stream=True):
            pass
    stream = await ours.stream(upstream.encode(PARAMS, stream=True))
    with pytest.raises(StatusError) as mine:
        async for _ in stream.events():
            pass
    stream.close()
    assert _without_ids(mine.value.body) == _without_ids(theirs.value.body)
    assert mine.value.label == "529"


def _without_ids(value: Any) -> Any:
    """The emulator numbers every message and request; the rest must be equal."""
    if isinstance(value, dict):
        return {k: _without_ids(v) for k, v in value.items() if k not in ("id", "request_id")}
    if isinstance(value, list):
        return [_without_ids(v) for v in value]
    return value


@pytest.mark.parametrize("size", [1, 7, 1000])
async def test_server_sent_events_follow_the_spec(size: int) -> None:
    raw = (b": a comment\r\n"
           b"event: one\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\n"  # data lines join with \n
           b"data: no event line\n\n"  # dispatched without a name
           b"event: two\nid: 7\nretry: 10\ndata:{}\n\n"  # no space after the colon
           b"event: three\n\n"  # a name without data
           b"\n\n"  # blank lines alone dispatch nothing
           b"event: cut\ndata: x")  # the stream ended inside an event: not dispatched
    events = [event async for event in message_stream._server_sent_events(_Chunks(raw, size))]
    assert events == [("one", '{"a":\n1}'), (None, "no event line"), ("two", "{}"),
                      ("three", "")]


class _Chunks:
    """A response body arriving ``size`` bytes at a time (lines split across reads)."""

    def __init__(self, raw: bytes, size: int) -> None:
        self._pieces = [raw[i:i + size] for i in range(0, len(raw), size)]

    async def iter_any(self) -> AsyncIterator[bytes]:
        for piece in self._pieces:
            yield piece


def test_env_proxy_is_honoured_like_the_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY",
                 "NO_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert upstream._env_proxy("https://api.anthropic.com/v1/messages") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert upstream._env_proxy("https://api.anthropic.com/v1/messages") == \
        "http://proxy.internal:3128"
    monkeypatch.setenv("NO_PROXY", "api.anthropic.com")
    assert upstream._env_proxy("https://api.anthropic.com/v1/messages") is None


@pytest.mark.parametrize("raw", [b'{"usage": NaN}', b'{"usage": 1e999}'])
def test_upstream_json_accepts_what_the_standard_library_accepts(raw: bytes) -> None:
    assert repr(jsoncodec.loads(raw)) == repr(json.loads(raw))
