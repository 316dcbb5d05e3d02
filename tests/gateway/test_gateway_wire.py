"""The gateway's own Messages API client against the official SDK: the same request on
the wire and the same reading of the same replies (the gateway left the SDK for speed and
memory, docs/benchmarks.md; these tests keep it honest when either side changes)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import pytest
from gateway_support import RunningEmulator

from inference_operator.gateway import jsoncodec, upstream
from inference_operator.gateway.upstream import StatusError, Upstream

MESSAGES = [{"role": "user", "content": "what is the answer"}]
PARAMS: dict[str, Any] = {"model": "claude-x", "max_tokens": 5, "messages": MESSAGES}


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


async def test_same_request_on_the_wire(ours: upstream.Client, sdk: anthropic.AsyncAnthropic,
                                        emulator: RunningEmulator) -> None:
    sampling = {"temperature": 0.5, "top_k": 3}
    await sdk.messages.create(**PARAMS, extra_body=sampling)
    await ours.create({**PARAMS, **sampling})
    theirs, mine = emulator.requests()
    assert mine.body == theirs.body
    assert (mine.auth, mine.path, mine.method) == (theirs.auth, theirs.path, theirs.method)
    for header in ("anthropic-version", "content-type", "accept"):
        assert mine.headers[header] == theirs.headers[header], header


async def test_same_reading_of_a_message(ours: upstream.Client,
                                         sdk: anthropic.AsyncAnthropic) -> None:
    theirs = await sdk.messages.create(**PARAMS)
    mine = await ours.create(PARAMS)
    assert [b["text"] for b in mine["content"]] == [b.text for b in theirs.content]
    assert mine["usage"] == theirs.usage.model_dump(include={"input_tokens", "output_tokens"})


async def test_same_reading_of_a_stream(ours: upstream.Client,
                                        sdk: anthropic.AsyncAnthropic) -> None:
    theirs = [event.to_dict() async for event in
              await sdk.messages.create(**PARAMS, stream=True)]
    stream = await ours.stream(PARAMS)
    mine = [event async for event in stream.events()]
    stream.close()
    assert _without_ids(mine) == _without_ids(theirs)  # ``ping`` skipped by both


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
        await ours.create(PARAMS)
    assert mine.value.status == theirs.value.status_code
    assert _without_ids(mine.value.body) == _without_ids(theirs.value.body)
    assert upstream.retry_after(mine.value.headers) == (2.0 if "retry_after" in fault else None)


async def test_same_error_inside_a_stream(ours: upstream.Client,
                                          sdk: anthropic.AsyncAnthropic,
                                          emulator: RunningEmulator) -> None:
    fault = {"kind": "stream_error", "after": 1, "error_type": "overloaded_error"}
    emulator.fail(fault, fault)
    with pytest.raises(anthropic.APIStatusError) as theirs:
        async for _ in await sdk.messages.create(**PARAMS, stream=True):
            pass
    stream = await ours.stream(PARAMS)
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
    events = [event async for event in upstream._server_sent_events(_Chunks(raw, size))]
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
