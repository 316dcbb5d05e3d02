"""The emulator speaks the Anthropic wire format: the official SDK parses all of it."""

from __future__ import annotations

import time

import aiohttp
import anthropic
import pytest
from aiohttp import web
from gateway_support import RunningEmulator

from inference_operator.emulator.app import Emulator, build_app

MESSAGES = [{"role": "user", "content": "what is the answer"}]


def sdk(emulator: RunningEmulator, **options) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=emulator.url, max_retries=0,
                                    http_client=anthropic.DefaultAioHttpClient(),
                                    **{"api_key": "k", **options})


async def test_json_message_is_deterministic(emulator: RunningEmulator) -> None:
    async with sdk(emulator) as client:
        first = await client.messages.create(model="claude-x", max_tokens=100, messages=MESSAGES)
        second = await client.messages.create(model="claude-x", max_tokens=100, messages=MESSAGES)
    text = first.content[0].text
    assert text == "Hello from the Anthropic emulator. You said: what is the answer"
    assert second.content[0].text == first.content[0].text
    assert first.stop_reason == "end_turn"
    assert first.usage.input_tokens == 4 and first.usage.output_tokens == 11
    assert first.model == "claude-x" and first.role == "assistant"


async def test_max_tokens_truncates(emulator: RunningEmulator) -> None:
    async with sdk(emulator) as client:
        message = await client.messages.create(model="claude-x", max_tokens=3, messages=MESSAGES)
    assert message.content[0].text == "Hello from the"
    assert message.stop_reason == "max_tokens"


async def test_stream_has_the_real_event_sequence(emulator: RunningEmulator) -> None:
    async with aiohttp.ClientSession() as session, session.post(
        f"{emulator.url}/v1/messages", headers={"x-api-key": "k"},
        json={"model": "claude-x", "max_tokens": 3, "messages": MESSAGES, "stream": True},
    ) as response:
        body = await response.text()
    assert response.headers["Content-Type"].startswith("text/event-stream")
    events = [line.split(": ", 1)[1] for line in body.splitlines() if line.startswith("event:")]
    assert events == ["message_start", "content_block_start", "ping", "content_block_delta",
                      "content_block_delta", "content_block_delta", "content_block_stop",
                      "message_delta", "message_stop"]


async def test_sdk_stream_helper(emulator: RunningEmulator) -> None:
    async with sdk(emulator) as client, client.messages.stream(
        model="claude-x", max_tokens=100, messages=MESSAGES
    ) as stream:
        deltas = [text async for text in stream.text_stream]
        final = await stream.get_final_message()
    assert deltas[:3] == ["Hello", " from", " the"]
    assert "".join(deltas) == final.content[0].text
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == len(deltas)


async def test_models_api(emulator: RunningEmulator) -> None:
    async with sdk(emulator) as client:
        model = await client.models.retrieve("claude-sonnet-4-5")
        assert model.id == "claude-sonnet-4-5" and model.type == "model"
        with pytest.raises(anthropic.NotFoundError):
            await client.models.retrieve("gpt-4")


async def test_auth_header_forms_and_refusal() -> None:
    state = Emulator(api_keys=("good-1", "good-2"))
    runner = web.AppRunner(build_app(state), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        bearer = anthropic.AsyncAnthropic(base_url=url, api_key="good-2", max_retries=0)
        header = anthropic.AsyncAnthropic(base_url=url, api_key=None, max_retries=0,
                                          default_headers={"x-api-key": "good-1"})
        wrong = anthropic.AsyncAnthropic(base_url=url, api_key="bad", max_retries=0)
        await bearer.models.retrieve("claude-x")
        await header.models.retrieve("claude-x")
        with pytest.raises(anthropic.AuthenticationError) as refused:
            await wrong.messages.create(model="claude-x", max_tokens=5, messages=MESSAGES)
        assert refused.value.body["error"]["type"] == "authentication_error"
        async with aiohttp.ClientSession() as session, session.get(f"{url}/v1/models/x") as r:
            assert r.status == 401
        log = [(e.auth, e.key_index, e.outcome) for e in state.log]
        assert log[:3] == [("bearer", 1, "200"), ("x-api-key", 0, "200"), ("bearer", None, "401")]
        assert all("good" not in str(e.headers) for e in state.log)
        for client in (bearer, header, wrong):
            await client.close()
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(("fault", "error_class", "error_type"), [
    ({"kind": "error", "status": 429, "retry_after": "7"}, anthropic.RateLimitError,
     "rate_limit_error"),
    ({"kind": "error", "status": 500}, anthropic.InternalServerError, "api_error"),
    ({"kind": "error", "status": 529}, anthropic.OverloadedError, "overloaded_error"),
])
async def test_scripted_errors(emulator: RunningEmulator, fault, error_class, error_type) -> None:
    emulator.fail(fault)
    async with sdk(emulator) as client:
        with pytest.raises(error_class) as raised:
            await client.messages.create(model="claude-x", max_tokens=5, messages=MESSAGES)
        assert raised.value.body["error"]["type"] == error_type
        if "retry_after" in fault:
            assert raised.value.response.headers["retry-after"] == "7"
        # The fault is used up: the next request succeeds.
        await client.messages.create(model="claude-x", max_tokens=5, messages=MESSAGES)


async def test_connection_drop(emulator: RunningEmulator) -> None:
    emulator.fail({"kind": "drop"})
    async with sdk(emulator) as client:
        with pytest.raises(anthropic.APIConnectionError):
            await client.messages.create(model="claude-x", max_tokens=5, messages=MESSAGES)
    assert emulator.requests()[-1].outcome == "dropped"


async def test_mid_stream_error(emulator: RunningEmulator) -> None:
    emulator.fail({"kind": "stream_error", "after": 2})
    seen = []
    async with sdk(emulator) as client:
        stream = await client.messages.create(model="claude-x", max_tokens=50,
                                              messages=MESSAGES, stream=True)
        with pytest.raises(anthropic.APIStatusError) as raised:
            async for event in stream:
                seen.append(event.type)
    assert seen.count("content_block_delta") == 2
    assert raised.value.body["error"]["type"] == "overloaded_error"


async def test_latency_knobs(emulator: RunningEmulator) -> None:
    emulator.latency(first_token=0.2, per_token=0.05)
    async with sdk(emulator) as client:
        started = time.monotonic()
        stream = await client.messages.create(model="claude-x", max_tokens=3,
                                              messages=MESSAGES, stream=True)
        opened = time.monotonic() - started
        async for _ in stream:
            pass
        total = time.monotonic() - started
    assert opened >= 0.2
    assert total >= 0.2 + 2 * 0.05  # three deltas, two gaps


async def test_control_api_and_request_log(emulator: RunningEmulator) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{emulator.url}/_emulator/faults",
                                json=[{"kind": "error", "status": 529, "count": 2}]) as r:
            assert (await r.json()) == {"pending": 2}
        async with session.post(f"{emulator.url}/_emulator/faults", json=[{"kind": "nope"}]) as r:
            assert r.status == 400
        async with session.put(f"{emulator.url}/_emulator/latency",
                               json={"first_token": 0.01}) as r:
            assert (await r.json()) == {"first_token": 0.01, "per_token": 0.0}
        for _ in range(3):
            async with session.post(f"{emulator.url}/v1/messages", headers={"x-api-key": "k"},
                                    json={"model": "claude-x", "max_tokens": 2,
                                          "messages": MESSAGES}):
                pass
        async with session.get(f"{emulator.url}/_emulator/requests") as r:
            log = await r.json()
        assert [e["outcome"] for e in log] == ["529", "529", "200"]
        assert log[0]["body"]["model"] == "claude-x" and log[0]["auth"] == "x-api-key"
        async with session.post(f"{emulator.url}/_emulator/reset") as r:
            assert r.status == 200
        assert not emulator.state.log
