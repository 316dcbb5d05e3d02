"""The emulator enforcing an organisation's limits over HTTP, as the official SDK sees them:
the headers on every answer, 429s it raises as RateLimitError with retry-after, the spend
limit it does not retry, the reservation refunded after a stream, the control API and the
command line."""

from __future__ import annotations

import aiohttp
import anthropic
import pytest
from gateway_support import RunningEmulator
from test_emulator_wire import MESSAGES, sdk

from inference_operator.anthropic.errors import SPEND_LIMIT_CODE
from inference_operator.cli import emulator as emulator_cli
from inference_operator.cli.main import build_parser
from inference_operator.emulator.limits import OrgLimits

MODEL = "claude-sonnet-4-5"


def limit(emulator: RunningEmulator, **limits) -> None:
    emulator.state.set_limits(OrgLimits(round_remaining=False, **limits))


async def remaining(emulator: RunningEmulator, header: str) -> int:
    async with aiohttp.ClientSession() as session, session.get(
            f"{emulator.url}/_emulator/limits") as answer:
        return (await answer.json())["classes"]["sonnet-4"][header]["remaining"]


async def test_answers_carry_the_limits_and_a_429_says_when_to_retry(emulator):
    limit(emulator, requests_per_minute=2, output_tokens_per_minute=1000)
    async with sdk(emulator) as client:
        raw = await client.messages.with_raw_response.create(
            model=MODEL, max_tokens=300, messages=MESSAGES)
        assert (await raw.parse()).content[0].text.startswith("Hello from the Anthropic emulator")
        assert raw.headers["anthropic-ratelimit-requests-limit"] == "2"
        assert raw.headers["anthropic-ratelimit-requests-remaining"] == "1"
        assert raw.headers["anthropic-ratelimit-output-tokens-remaining"] == "700"
        await client.messages.create(model=MODEL, max_tokens=300, messages=MESSAGES)
        with pytest.raises(anthropic.RateLimitError) as raised:
            await client.messages.create(model=MODEL, max_tokens=300, messages=MESSAGES)
    error = raised.value
    assert error.status_code == 429
    assert error.body["error"]["type"] == "rate_limit_error"
    assert "2 requests per minute (model: claude-sonnet-4-5)" in error.body["error"]["message"]
    assert error.response.headers["retry-after"] == "30"  # one request back at 2 a minute
    assert error.response.headers["request-id"] == error.body["request_id"]
    assert [r.outcome for r in emulator.requests()] == ["200", "200", "429"]


async def test_the_unused_reservation_of_a_stream_is_refunded_when_it_ends(emulator):
    limit(emulator, output_tokens_per_minute=60)  # one token a second comes back
    async with sdk(emulator) as client, client.messages.stream(
            model=MODEL, max_tokens=50, messages=MESSAGES) as stream:
        assert stream.response.headers["anthropic-ratelimit-output-tokens-remaining"] == "10"
        message = await stream.get_final_message()
    assert message.usage.output_tokens == 11
    # 60 - 50 reserved + the 39 not generated (plus a token or so refilled meanwhile).
    assert 49 <= await remaining(emulator, "output-tokens") < 55


async def test_a_failed_answer_gives_back_its_whole_reservation(emulator):
    limit(emulator, output_tokens_per_minute=60)
    emulator.fail({"kind": "error", "status": 529})
    async with sdk(emulator) as client:
        with pytest.raises(anthropic.OverloadedError) as raised:
            await client.messages.create(model=MODEL, max_tokens=50, messages=MESSAGES)
    # Its answer still says what was left once it was let in.
    assert raised.value.response.headers["anthropic-ratelimit-output-tokens-remaining"] == "10"
    assert await remaining(emulator, "output-tokens") >= 59


async def test_the_spend_limit_is_not_retried_by_the_sdk(emulator):
    limit(emulator, spend_limit_reached=True)
    async with anthropic.AsyncAnthropic(base_url=emulator.url, api_key="k", max_retries=2,
                                        http_client=anthropic.DefaultAioHttpClient()) as client:
        with pytest.raises(anthropic.RateLimitError) as raised:
            await client.messages.create(model=MODEL, max_tokens=5, messages=MESSAGES)
    assert raised.value.body["error"]["details"] == {"error_code": SPEND_LIMIT_CODE}
    assert "retry-after" not in raised.value.response.headers
    assert len(emulator.requests()) == 1


async def test_the_control_api_sets_reads_refills_and_clears_the_limits(emulator):
    url = f"{emulator.url}/_emulator/limits"
    async with aiohttp.ClientSession() as session:
        async with session.put(url, json={"requests_per_minute": 0}) as answer:
            assert answer.status == 400
            assert "requests_per_minute" in (await answer.json())["error"]
        async with session.put(url, json={"requests_per_minute": 1}) as answer:
            assert (await answer.json())["limits"]["requests_per_minute"] == 1
        request = {"model": MODEL, "max_tokens": 5, "messages": MESSAGES}
        statuses = []
        for _ in range(2):
            async with session.post(f"{emulator.url}/v1/messages", headers={"x-api-key": "k"},
                                    json=request) as answer:
                statuses.append(answer.status)
        assert statuses == [200, 429]
        async with session.get(url) as answer:
            assert (await answer.json())["classes"] == {"sonnet-4": {
                "requests": {"limit": 1, "remaining": 0}}}
        async with session.post(f"{emulator.url}/_emulator/reset"):
            pass
        async with session.get(url) as answer:  # the same limits, full again
            assert (await answer.json())["classes"] == {}
        async with session.delete(url) as answer:
            assert (await answer.json()) == {"limits": None, "classes": {}}
        async with session.post(f"{emulator.url}/v1/messages", headers={"x-api-key": "k"},
                                json=request) as answer:
            assert answer.status == 200
            assert not any(name.startswith("anthropic-ratelimit") for name in answer.headers)


def test_the_command_line_turns_the_limits_on():
    def parsed(*argv: str, environ: dict[str, str] | None = None):
        return emulator_cli.emulator(build_parser(environ=environ or {}).parse_args(
            ["emulator", *argv]))

    assert parsed().limits is None
    limits = parsed("--org-output-tokens-per-minute", "3000", "--org-other-user-share", "0.2",
                    environ={"INFERENCE_OPERATOR_ORG_REQUESTS_PER_MINUTE": "50"}).limits
    assert limits == OrgLimits(requests_per_minute=50, output_tokens_per_minute=3000,
                               other_user_share=0.2)
    assert parsed("--org-spend-limit-reached").limits == OrgLimits(spend_limit_reached=True)
