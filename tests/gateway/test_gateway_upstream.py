"""Upstream failures: which are retried, how long the gateway waits, what the client gets."""

from __future__ import annotations

import pytest
from gateway_support import RunningEmulator, RunningGateway, seed_body

from inference_operator.emulator.limits import OrgLimits
from inference_operator.gateway.retry import RetryPolicy

COMPLETION = "/_inference/completion/anthropic_completion"
PREFIX = "for request from inference entity id [anthropic_completion]"


def received(kind: str, status: int, message: str = "Emulated error") -> str:
    """Elasticsearch's reason for an upstream answer it does not retry (any more)."""
    return f"Received {kind} status code {PREFIX} status [{status}]. Error message: [{message}]"


@pytest.fixture
async def fast(gateway: RunningGateway) -> RunningGateway:
    # A high rpm, so the rate limiter never decides when a retry goes out.
    await gateway.put(body=seed_body(requests_per_minute=60_000))
    return gateway


@pytest.mark.parametrize("faults", [
    [{"kind": "error", "status": 429}],
    [{"kind": "error", "status": 529, "count": 2}],
    [{"kind": "error", "status": 500}, {"kind": "error", "status": 529}],
    [{"kind": "drop"}],
])
async def test_retryable_failures_are_retried(fast: RunningGateway, emulator: RunningEmulator,
                                              faults) -> None:
    emulator.fail(*faults)
    status, _, payload = await fast.call("POST", COMPLETION, {"input": "x"})
    assert status == 200, payload
    attempts = emulator.requests()
    assert len(attempts) == 1 + sum(f.get("count", 1) for f in faults)
    # Each of our retries resends the very same request.
    assert all((a.body, a.auth, a.key_index) == (attempts[0].body, attempts[0].auth,
                                                  attempts[0].key_index) for a in attempts)
    _, _, metrics = await fast.call("GET", "/metrics")
    assert "inference_gateway_upstream_retries_total" in metrics


@pytest.mark.parametrize(("status", "outcome", "reason"), [
    (529, 502, received("an Anthropic server is temporarily overloaded", 529)),
    (500, 502, received("a server error", 500)),
])
async def test_at_most_three_attempts(fast: RunningGateway, emulator: RunningEmulator, status,
                                      outcome, reason) -> None:
    emulator.fail({"kind": "error", "status": status, "count": 5})
    got, _, payload = await fast.call("POST", COMPLETION, {"input": "x"})
    assert got == outcome
    assert payload["error"] == {"root_cause": [{"type": "status_exception", "reason": reason}],
                                "type": "status_exception", "reason": reason}
    assert len(emulator.requests()) == 3


async def test_rate_limited_after_retries_keeps_429(fast: RunningGateway,
                                                    emulator: RunningEmulator) -> None:
    emulator.fail({"kind": "error", "status": 429, "retry_after": "0", "count": 3,
                   "headers": {"anthropic-ratelimit-requests-limit": "50"}})
    status, headers, payload = await fast.call("POST", COMPLETION, {"input": "x"})
    assert status == 429
    assert headers["Retry-After"] == "1"
    assert payload["error"]["reason"] == (
        "Received a rate limit status code. Token limit [unknown], remaining tokens [unknown], "
        "tokens reset [unknown]. Request limit [50], remaining requests [unknown], request "
        f"reset [unknown]. Retry after [0] {PREFIX} status [429]. Error message: [Emulated error]")
    assert len(emulator.requests()) == 3


async def test_retry_after_is_honoured(fast: RunningGateway, emulator: RunningEmulator) -> None:
    emulator.fail({"kind": "error", "status": 429, "retry_after": "1"})
    status, _, _ = await fast.call("POST", COMPLETION, {"input": "x"})
    assert status == 200
    first, second = emulator.requests()
    # The configured backoff is ~0.02 s; only the header explains a gap of a second.
    assert second.received_at - first.received_at >= 1.0


async def test_retry_after_beyond_the_deadline_answers_at_once(
        fast: RunningGateway, emulator: RunningEmulator) -> None:
    emulator.fail({"kind": "error", "status": 429, "retry_after": "120"})
    status, headers, _ = await fast.call("POST", COMPLETION + "?timeout=10s", {"input": "x"})
    assert status == 429 and headers["Retry-After"] == "120"
    assert len(emulator.requests()) == 1


@pytest.mark.parametrize(("fault", "status", "reason"), [
    ({"status": 401, "message": "invalid x-api-key"}, 401,
     received("an authentication error", 401, "invalid x-api-key")),
    ({"status": 403}, 403, received("a permission denied error", 403)),
    ({"status": 400, "message": "max_tokens: too big"}, 400,
     received("an unsuccessful", 400, "max_tokens: too big")),
    ({"status": 503}, 502, received("a server error", 503)),
])
async def test_not_retried(fast: RunningGateway, emulator: RunningEmulator, fault, status,
                           reason) -> None:
    emulator.fail({"kind": "error", **fault})
    got, _, payload = await fast.call("POST", COMPLETION, {"input": "x"})
    assert got == status
    assert payload["error"]["reason"] == reason and payload["status"] == status
    assert len(emulator.requests()) == 1


async def test_the_spend_limit_is_answered_at_once_without_retry_after(
        fast: RunningGateway, emulator: RunningEmulator) -> None:
    emulator.state.set_limits(OrgLimits(spend_limit_reached=True))
    status, headers, payload = await fast.call("POST", COMPLETION, {"input": "x"})
    assert status == 429 and "Retry-After" not in headers
    assert payload["error"]["reason"].startswith(
        "Received a spend limit status code (the organization's monthly spend limit is "
        f"reached; not retried) {PREFIX} status [429]. Error message: [You have reached")
    assert len(emulator.requests()) == 1


async def test_x_should_retry_false_is_obeyed(fast: RunningGateway,
                                             emulator: RunningEmulator) -> None:
    emulator.fail({"kind": "error", "status": 529, "headers": {"x-should-retry": "false"}})
    got, _, _ = await fast.call("POST", COMPLETION, {"input": "x"})
    assert got == 502
    assert len(emulator.requests()) == 1


async def test_unknown_model_is_404(gateway: RunningGateway, emulator: RunningEmulator) -> None:
    body = seed_body()
    body["service_settings"]["model_id"] = "gpt-4"
    await gateway.put(body=body)
    status, _, payload = await gateway.call("POST", COMPLETION, {"input": "x"})
    assert status == 404
    assert payload["error"]["reason"].endswith("status [404]. Error message: [model: gpt-4]")


async def test_unreachable_upstream_is_502(make_gateway) -> None:
    gateway = await make_gateway(anthropic_base_url="http://127.0.0.1:9")
    await gateway.put(body=seed_body(requests_per_minute=60_000))
    status, _, payload = await gateway.call("POST", COMPLETION, {"input": "x"})
    assert status == 502
    assert payload["error"]["reason"].startswith(f"Failed to reach the upstream service {PREFIX}")


def test_backoff_is_jittered_exponential_between_1_and_5_seconds() -> None:
    low, high = RetryPolicy(jitter=lambda: 0.0), RetryPolicy(jitter=lambda: 1.0)
    assert [low.backoff(n) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 2.5, 2.5]
    assert [high.backoff(n) for n in (1, 2, 3, 4, 5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
