"""The organisation budget end to end: endpoints on one key and model class, against the
emulator enforcing an organisation's limits as Anthropic does. After the first answer
tells the limits, the gateway keeps every request within them (Anthropic refuses none)
while using nearly all of the binding one; a request no minute holds is refused at
once."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from typing import Any

import aiohttp
import pytest
from gateway_support import GatewayFactory, RunningEmulator, RunningGateway, metric, seed_body

from inference_operator.emulator.limits import OrgLimits
from inference_operator.gateway.org_limits import OUTPUT, Ceiling

OUTPUT_PER_MINUTE = 6_000  # 100 a second: the binding limit
MEASURED = 10.0  # seconds
SETTLE = 3.0  # seconds
ENDS_APART = 120  # tokens: the largest max_tokens below
# (endpoint, model, max_tokens): Sonnet 4 and 4.5 share one set of limits.
ENDPOINTS = [("team-a", "claude-sonnet-4-5", 40), ("team-b", "claude-sonnet-4-20250514", 80),
             ("team-c", "claude-sonnet-4-5", 120)]


async def setup(emulator: RunningEmulator, make_gateway: GatewayFactory,
                ceilings: tuple[Ceiling, ...] = (), **limits: Any) -> RunningGateway:
    emulator.state.set_limits(OrgLimits(**{
        "requests_per_minute": 100_000, "input_tokens_per_minute": 10_000_000,
        "output_tokens_per_minute": OUTPUT_PER_MINUTE, **limits}))
    emulator.latency(per_token=0.001)  # streams hold their reservation a while
    gateway = await make_gateway(org_limit_ceilings=ceilings)
    for inference_id, model, max_tokens in ENDPOINTS:
        body = seed_body(requests_per_minute=100_000)
        body["service_settings"]["model_id"] = model
        body["task_settings"]["max_tokens"] = max_tokens
        await gateway.put(inference_id, body)
    return gateway


def output_level(emulator: RunningEmulator) -> float:
    """What the emulator's organisation has left of its output limit now, exactly."""
    assert emulator.state.organisation is not None
    return emulator.state.organisation.buckets("sonnet-4")["output-tokens"].level


async def load(gateway: RunningGateway, session: aiohttp.ClientSession, workers: int,
               statuses: list[int], stop: asyncio.Event) -> None:
    """``workers`` callers, each sending its next request as soon as the last is
    answered, until ``stop``: every endpoint, streamed or not, prompts of 5 to 200 words
    (short ones leave part of max_tokens unused, to be refunded)."""
    rng = random.Random(7)
    requests = itertools.count()

    async def caller() -> None:
        while not stop.is_set():
            n = next(requests)
            inference_id = ENDPOINTS[n % len(ENDPOINTS)][0]
            stream = "/_stream" if n % 2 else ""
            prompt = " ".join(["word"] * rng.randint(5, 200))
            async with session.post(
                    f"{gateway.public}/_inference/completion/{inference_id}{stream}",
                    json={"input": prompt}) as answer:
                await answer.read()
                statuses.append(answer.status)

    await asyncio.gather(*(caller() for _ in range(workers)))


async def drive(emulator: RunningEmulator, gateways: list[RunningGateway],
                workers: int) -> tuple[list[str], list[int], float]:
    """Every gateway loaded by ``workers`` callers: the organisation's minute drained
    first, then ``MEASURED`` seconds. The upstream's outcomes, the callers' statuses, and
    the share of the output limit used meanwhile."""
    for gateway in gateways:  # the first answer of each tells it the limits
        status, _, _ = await gateway.call("POST", "/_inference/completion/team-a",
                                          {"input": "hi"})
        assert status == 200
    statuses: list[int] = []
    stop = asyncio.Event()
    async with aiohttp.ClientSession() as session:
        callers = [asyncio.create_task(load(g, session, workers, statuses, stop))
                   for g in gateways]
        # The bucket starts full (a minute's worth): drained first, then left to settle
        # where the load keeps it (Anthropic's remaining is rounded to the thousand, so
        # the gateways keep a few hundred tokens aside), then measured.
        for _ in range(300):
            if output_level(emulator) < 500:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(SETTLE)
        level, started = output_level(emulator), time.monotonic()
        await asyncio.sleep(MEASURED)
        # Ended where the bucket is as full as at the start (within a request's
        # max_tokens, or 10 s more at most): a fuller or emptier one would count as use.
        for _ in range(100):
            end_level = output_level(emulator)
            if abs(end_level - level) <= ENDS_APART:
                break
            await asyncio.sleep(0.1)
        elapsed = time.monotonic() - started
        # Used: what the level lost, plus what refilled meanwhile (reserved counts).
        used = level - end_level + OUTPUT_PER_MINUTE / 60 * elapsed
        stop.set()
        await asyncio.gather(*callers)
    return ([r.outcome for r in emulator.requests()], statuses,
            used / (OUTPUT_PER_MINUTE / 60 * elapsed))


async def test_endpoints_sharing_a_key_use_its_limit_and_anthropic_refuses_none(
        emulator: RunningEmulator, make_gateway: GatewayFactory) -> None:
    gateway = await setup(emulator, make_gateway)
    outcomes, statuses, used = await drive(emulator, [gateway], 16)
    assert "429" not in outcomes, f"{outcomes.count('429')} upstream 429s of {len(outcomes)}"
    assert set(statuses) == {200}
    assert used >= 0.9, f"{used:.0%} of the output limit used"
    # What the gateway learned, per endpoint (never the key).
    for inference_id, _, _ in ENDPOINTS:
        labels = f'inference_id="{inference_id}",limit="output-tokens"'
        assert await metric(gateway.session, gateway.metrics,
                            "inference_gateway_org_limit_per_minute", labels) == 6_000
        assert 0 <= await metric(gateway.session, gateway.metrics,
                                 "inference_gateway_org_limit_used_ratio", labels) <= 1


async def test_max_tokens_no_minute_holds_is_refused_at_once(
        emulator: RunningEmulator, make_gateway: GatewayFactory) -> None:
    gateway = await setup(emulator, make_gateway, output_tokens_per_minute=100)
    status, _, _ = await gateway.call("POST", "/_inference/completion/team-a",
                                      {"input": "hi"})  # 40 of 100: learns the limits
    assert status == 200
    status, _, payload = await gateway.call(
        "POST", "/_inference/completion/team-a",
        {"input": "hi", "task_settings": {"max_tokens": 101}})
    assert status == 400
    assert payload["error"]["reason"] == (
        "max_tokens [101] is more than the organisation's limit of 100 output tokens per "
        "minute for model class [sonnet-4]: Anthropic would refuse it (inference id [team-a])")
    assert len(emulator.requests()) == 1


async def test_replicas_on_one_key_share_its_limit_and_anthropic_refuses_none(
        emulator: RunningEmulator, make_gateway: GatewayFactory) -> None:
    """Two gateways of a fleet (each told so, as their peers' EndpointSlices would), both
    loaded: each keeps to its share of the organisation's limits, so together they use
    nearly all of the binding one and Anthropic refuses none."""
    gateways = [await setup(emulator, make_gateway), await setup(emulator, make_gateway)]
    for gateway in gateways:
        gateway.server.gateway.sharing.set_replicas(2)
    outcomes, statuses, used = await drive(emulator, gateways, 8)
    assert "429" not in outcomes, f"{outcomes.count('429')} upstream 429s of {len(outcomes)}"
    assert set(statuses) == {200}
    assert used >= 0.9, f"{used:.0%} of the output limit used"


@pytest.mark.parametrize("declared", [False, True], ids=["learned", "declared ahead"])
async def test_a_burst_before_any_answer_keeps_within_a_limit_declared_ahead(
        emulator: RunningEmulator, make_gateway: GatewayFactory, declared: bool) -> None:
    """40 requests at once on a fresh gateway, reserving 4,800 output tokens of an
    organisation allowing 3,000 a minute: learned only, the burst goes unchecked and
    Anthropic refuses part of it; declared ahead (``--org-limit``), none."""
    ceilings = (Ceiling("sonnet-4", OUTPUT, 3_000),) if declared else ()
    gateway = await setup(emulator, make_gateway, ceilings, output_tokens_per_minute=3_000)
    # Each answer holds its reservation half a second: no refund lands inside the burst.
    emulator.latency(first_token=0.5)
    async with aiohttp.ClientSession() as session:
        async def one() -> int:
            async with session.post(f"{gateway.public}/_inference/completion/team-c",
                                    json={"input": "hello"}) as answer:
                await answer.read()
                return answer.status
        statuses = await asyncio.gather(*(one() for _ in range(40)))
    refused = [r.outcome for r in emulator.requests()].count("429")
    if declared:
        assert refused == 0 and set(statuses) == {200}, (refused, statuses)
    else:
        assert refused > 0, "the burst should have outrun a limit nobody declared"
