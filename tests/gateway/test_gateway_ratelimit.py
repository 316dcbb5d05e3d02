"""The rate limiter: capacity-1 token buckets shared per (key, model, rpm), a FIFO queue
with a capacity, and the request timeout covering the wait."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest
from gateway_support import API_KEY, GatewayFactory, RunningEmulator, seed_body

from inference_operator.emulator.limits import OrgLimits
from inference_operator.gateway.ratelimit import Limiter, QueueFull
from inference_operator.gateway.timeunits import parse_time_value

COMPLETION = "/_inference/completion/anthropic_completion"


class FakeClock:
    """Virtual time: sleeping advances it at once, so spacing is exact and instant."""

    def __init__(self) -> None:
        self.t = 1000.0

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0)  # let the waiters granted so far see the current time
        self.t += seconds


async def grant_times(limiter: Limiter, rpm: int, count: int) -> list[float]:
    bucket = limiter.bucket("k", "m", rpm)
    times: list[float] = []

    async def one() -> None:
        await bucket.acquire()
        times.append(limiter.clock.now())

    await asyncio.gather(*(one() for _ in range(count)))
    return times


async def test_spacing_is_exact_with_a_virtual_clock() -> None:
    limiter = Limiter(FakeClock())
    times = await grant_times(limiter, rpm=50, count=30)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert times[0] == 1000.0  # the bucket starts full
    assert all(gap == pytest.approx(1.2, rel=0.02) for gap in gaps)


async def test_fifo_priority_and_timed_out_waiters_use_no_token() -> None:
    clock = FakeClock()
    bucket = Limiter(clock).bucket("k", "m", 60)
    order: list[str] = []

    async def take(name: str, priority: bool = False) -> None:
        await bucket.acquire(priority=priority)
        order.append(f"{name}@{clock.now() - 1000:.0f}")

    await take("first")
    tasks = [asyncio.create_task(take(n)) for n in ("a", "b", "c")]
    await asyncio.sleep(0)
    tasks[1].cancel()  # "b" gives up while queued
    tasks.append(asyncio.create_task(take("retry", priority=True)))
    await asyncio.gather(*tasks, return_exceptions=True)
    assert order == ["first@0", "retry@1", "a@2", "c@3"]


async def test_groups_are_shared_by_key_model_and_rpm() -> None:
    limiter = Limiter(FakeClock())
    assert limiter.bucket("k", "m", 50) is limiter.bucket("k", "m", 50)
    assert limiter.bucket("k", "m", 50) is not limiter.bucket("k", "m", 60)
    assert limiter.bucket("k", "m", 50) is not limiter.bucket("k2", "m", 50)
    assert limiter.bucket("k", "m", 50) is not limiter.bucket("k", "m2", 50)
    assert "k" not in limiter.bucket("k", "m", 50).name


async def test_queue_capacity() -> None:
    bucket = Limiter(FakeClock(), queue_capacity=2).bucket("k", "m", 1)
    await bucket.acquire()
    waiting = [asyncio.create_task(bucket.acquire()) for _ in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(QueueFull) as full:
        await bucket.acquire()
    assert full.value.retry_after == 60
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
    assert bucket.queued() == 0


async def test_measured_spacing_upstream_within_two_percent(
        make_gateway: GatewayFactory, emulator: RunningEmulator) -> None:
    """Real time, seen by the upstream: 21 requests at 600 rpm span 2 s within 2%."""
    gateway = await make_gateway()
    await gateway.put(body=seed_body(requests_per_minute=600))
    results = await asyncio.gather(*(
        gateway.call("POST", COMPLETION, {"input": str(i)}) for i in range(21)))
    assert [status for status, _, _ in results] == [200] * 21
    arrivals = sorted(e.received_at for e in emulator.requests())
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert (arrivals[-1] - arrivals[0]) / 20 == pytest.approx(0.1, rel=0.02)
    assert min(gaps) > 0.05  # never a burst


async def test_endpoints_sharing_key_model_and_rpm_share_a_bucket(
        make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway()
    for inference_id in ("one", "two"):
        await gateway.put(inference_id, body=seed_body(requests_per_minute=60))
    started = time.monotonic()
    results = await asyncio.gather(
        gateway.call("POST", "/_inference/one", {"input": "x"}),
        gateway.call("POST", "/_inference/two", {"input": "x"}))
    assert [r[0] for r in results] == [200, 200]
    assert time.monotonic() - started >= 0.95  # the second waited for the shared token


async def test_queue_full_is_429_with_retry_after(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway(queue_capacity=2)
    await gateway.put(body=seed_body(requests_per_minute=1))
    assert (await gateway.call("POST", COMPLETION, {"input": "x"}))[0] == 200
    # No timeout: they wait their turns (minutes away at 1 rpm).
    queued = [asyncio.create_task(gateway.call("POST", COMPLETION + "?timeout=-1",
                                               {"input": "x"})) for _ in range(2)]
    await asyncio.sleep(0.2)
    status, headers, payload = await gateway.call("POST", COMPLETION + "?timeout=-1",
                                                  {"input": "x"})
    assert status == 429 and headers["Retry-After"] == "60"
    assert payload["error"]["type"] == "es_rejected_execution_exception"
    assert payload["error"]["reason"].startswith(
        "Failed to execute task for inference id [anthropic_completion] because the request "
        "service [claude-sonnet-4-5/1rpm#")
    assert payload["error"]["reason"].endswith("] queue is full")
    assert API_KEY not in str(payload)
    for task in queued:
        task.cancel()
    await asyncio.gather(*queued, return_exceptions=True)


async def test_a_request_whose_turn_comes_after_its_timeout_is_refused_at_once(
        make_gateway: GatewayFactory, emulator: RunningEmulator) -> None:
    gateway = await make_gateway()
    await gateway.put(body=seed_body(requests_per_minute=1))
    assert (await gateway.call("POST", COMPLETION, {"input": "x"}))[0] == 200
    started = time.monotonic()
    status, headers, payload = await gateway.call("POST", COMPLETION + "?timeout=2s",
                                                  {"input": "x"})
    assert time.monotonic() - started < 2  # not after waiting out its timeout
    assert status == 429
    assert 55 <= int(headers["Retry-After"]) <= 60  # when the next token is there
    reason = payload["error"]["reason"]
    assert reason.startswith(
        "Failed to execute task for inference id [anthropic_completion] because the request "
        "service [claude-sonnet-4-5/1rpm#"), reason
    assert reason.endswith("] cannot admit it within its timeout [2s]: its turn comes in "
                           f"{headers['Retry-After']}s"), reason
    assert payload["error"]["type"] == "es_rejected_execution_exception"
    assert len(emulator.requests()) == 1  # the refused request never went upstream


async def test_a_request_waiting_for_the_organisation_budget_past_its_timeout_gets_408(
        make_gateway: GatewayFactory, emulator: RunningEmulator) -> None:
    emulator.state.set_limits(OrgLimits(output_tokens_per_minute=100))  # 1 token in 0.6 s
    gateway = await make_gateway()
    body = seed_body(requests_per_minute=100_000)
    body["task_settings"]["max_tokens"] = 100  # the whole minute's worth
    await gateway.put("whole-minute", body)
    path = "/_inference/completion/whole-minute"
    assert (await gateway.call("POST", path, {"input": "x"}))[0] == 200  # learns the limits
    started = time.monotonic()
    status, _, payload = await gateway.call("POST", path + "?timeout=300ms", {"input": "x"})
    assert time.monotonic() - started < 5
    assert status == 408
    reason = "Request timed out after [300ms]"
    assert payload == {"error": {"root_cause": [{"type": "status_exception", "reason": reason}],
                                 "type": "status_exception", "reason": reason}, "status": 408}
    assert len(emulator.requests()) == 1  # the timed-out request never went upstream
    _, _, metrics = await gateway.call("GET", "/metrics")
    assert 'inference_gateway_queued_requests{inference_id="whole-minute"} 0.0' in metrics


async def test_timeout_covers_the_upstream_call(make_gateway: GatewayFactory,
                                                emulator: RunningEmulator) -> None:
    gateway = await make_gateway()
    await gateway.put()
    emulator.latency(first_token=5.0)
    status, _, payload = await gateway.call("POST", COMPLETION + "?timeout=1s", {"input": "x"})
    assert status == 408 and payload["error"]["reason"] == "Request timed out after [1s]"


@pytest.mark.parametrize(("text", "seconds"), [
    (None, 30.0), ("30s", 30.0), ("500ms", 0.5), ("2m", 120.0), ("1h", 3600.0), ("1d", 86400.0),
    ("100micros", 1e-4), ("-1", None), ("0", 0.0),
])
def test_time_units(text, seconds) -> None:
    value = parse_time_value(text)
    assert value.seconds == (pytest.approx(seconds) if seconds else seconds)
    assert value.text == (text or "30s")
