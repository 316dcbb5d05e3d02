"""The one mapping of upstream failures (``AnthropicError``, anthropic/errors.py, mapped by
gateway/upstream_failures.py) to what the client gets, the metric label and the retry
verdict; no server involved."""

from __future__ import annotations

import asyncio

import pytest

from inference_operator.anthropic.errors import (
    AnthropicError,
    ConnectionFailed,
    ConnectionLost,
    MalformedReply,
    StatusError,
)
from inference_operator.gateway.retry import NOT_RETRIED, RetryPolicy, Verdict, run_with_retries
from inference_operator.gateway.upstream_failures import es_error, verdict

KEY = "test-key-9f2c"
FOR = "for request from inference entity id [ep]"


def anthropic_error(error_type: str, message: str | None = None) -> dict[str, object]:
    error = {"type": error_type} if message is None else {"type": error_type, "message": message}
    return {"type": "error", "error": error}


RATE_LIMITED = ("Received a rate limit status code. Token limit [unknown], remaining tokens "
                "[unknown], tokens reset [unknown]. Request limit [50], remaining requests "
                "[unknown], request reset [unknown]. Retry after [2]")

# (failure, client status, reason, client headers, metric label, retry verdict)
CASES = [
    (StatusError(401, {}, anthropic_error("authentication_error", "invalid x-api-key")), 401,
     f"Received an authentication error status code {FOR} status [401]. "
     "Error message: [invalid x-api-key]", {}, "401", NOT_RETRIED),
    (StatusError(403, {}, anthropic_error("permission_error")), 403,
     f"Received a permission denied error status code {FOR} status [403]", {}, "403",
     NOT_RETRIED),
    (StatusError(400, {}, anthropic_error("invalid_request_error", "max_tokens: too big")), 400,
     f"Received an unsuccessful status code {FOR} status [400]. "
     "Error message: [max_tokens: too big]", {}, "400", NOT_RETRIED),
    (StatusError(404, {}, "not JSON at all"), 404,
     f"Received an unsuccessful status code {FOR} status [404]", {}, "404", NOT_RETRIED),
    (StatusError(429, {"retry-after": "2", "anthropic-ratelimit-requests-limit": "50"},
                 anthropic_error("rate_limit_error", "slow down")), 429,
     f"{RATE_LIMITED} {FOR} status [429]. Error message: [slow down]", {"Retry-After": "2"},
     "429", Verdict(True, 2.0)),
    # retry-after-ms wins; the client's Retry-After is whole seconds, at least 1.
    (StatusError(429, {"retry-after-ms": "300", "retry-after": "2",
                       "anthropic-ratelimit-requests-limit": "50"}, ""), 429,
     f"{RATE_LIMITED} {FOR} status [429]", {"Retry-After": "1"}, "429", Verdict(True, 0.3)),
    # The monthly spend limit: no wait cures it, so no Retry-After and no retry, with or
    # without Anthropic's x-should-retry: false.
    *((StatusError(429, headers, {"type": "error", "error": {
        "type": "rate_limit_error", "message": "monthly limit",
        "details": {"error_code": "enforced_spend_limit_reached"}}}), 429,
       "Received a spend limit status code (the organization's monthly spend limit is "
       f"reached; not retried) {FOR} status [429]. Error message: [monthly limit]", {}, "429",
       NOT_RETRIED) for headers in ({}, {"x-should-retry": "false"})),
    # Anthropic's x-should-retry decides first, as in the SDK.
    (StatusError(529, {"x-should-retry": "false", "retry-after": "3"},
                 anthropic_error("overloaded_error", "Overloaded")), 502,
     f"Received an Anthropic server is temporarily overloaded status code {FOR} "
     "status [529]. Error message: [Overloaded]", {}, "529", NOT_RETRIED),
    (StatusError(409, {"x-should-retry": "true"}, anthropic_error("conflict", "again")), 409,
     f"Received an unsuccessful status code {FOR} status [409]. Error message: [again]", {},
     "409", Verdict(True)),
    (StatusError(307, {"location": "https://elsewhere"}, ""), 502,
     f"Received a redirect status code {FOR} status [307]", {}, "307", NOT_RETRIED),
    (StatusError(500, {}, anthropic_error("api_error", "boom")), 502,
     f"Received a server error status code {FOR} status [500]. Error message: [boom]", {},
     "500", Verdict(True)),
    (StatusError(503, {}, ""), 502,
     f"Received a server error status code {FOR} status [503]", {}, "503", NOT_RETRIED),
    (StatusError(529, {"retry-after": "3"}, anthropic_error("overloaded_error", "Overloaded")),
     502, f"Received an Anthropic server is temporarily overloaded status code {FOR} "
     "status [529]. Error message: [Overloaded]", {}, "529", Verdict(True, 3.0)),
    # An ``event: error`` inside a 200 stream: the status comes from the error type.
    (StatusError(200, {}, anthropic_error("overloaded_error", "Overloaded")), 502,
     f"Received an Anthropic server is temporarily overloaded status code {FOR} "
     "status [529]. Error message: [Overloaded]", {}, "529", Verdict(True)),
    (StatusError(200, {}, anthropic_error("invalid_request_error", "no")), 400,
     f"Received an unsuccessful status code {FOR} status [400]. Error message: [no]", {},
     "400", NOT_RETRIED),
    (StatusError(200, {}, anthropic_error("something_new")), 502,
     f"Received a server error status code {FOR} status [500]", {}, "500", Verdict(True)),
    (ConnectionFailed("ClientConnectorError"), 502,
     f"Failed to reach the upstream service {FOR}: [ClientConnectorError]", {},
     "connection_error", Verdict(True)),
    (ConnectionLost("ClientPayloadError"), 502,
     f"Lost the upstream response {FOR}: [ClientPayloadError]", {}, "stream_error",
     NOT_RETRIED),
    (MalformedReply("the answer is not JSON"), 502,
     f"Received an invalid response {FOR}: [the answer is not JSON]", {}, "malformed",
     NOT_RETRIED),
]


@pytest.mark.parametrize(("failure", "status", "reason", "headers", "label", "expected"), CASES,
                         ids=[f"{type(c[0]).__name__}-{c[4]}-{i}" for i, c in enumerate(CASES)])
def test_each_upstream_failure_maps_to_one_answer(failure: AnthropicError, status: int,
                                                  reason: str, headers: dict[str, str],
                                                  label: str, expected: Verdict) -> None:
    error = es_error(failure, "ep", KEY)
    cause = {"type": "status_exception", "reason": reason}
    assert (error.status, error.body(), error.headers) == (
        status, {"error": {"root_cause": [cause], **cause}, "status": status}, headers)
    assert failure.label == label
    assert verdict(failure) == expected


def test_the_key_is_scrubbed_from_upstream_messages() -> None:
    failure = StatusError(401, {}, anthropic_error("authentication_error", f"bad key {KEY}"))
    reason = es_error(failure, "ep", KEY).reason
    assert KEY not in reason and reason.endswith("Error message: [bad key <redacted>]")


@pytest.mark.parametrize(("failure", "attempts"), [
    (ConnectionFailed("ClientConnectorError"), 3),
    (RuntimeError("a bug in the gateway"), 1),  # passed on at once, never judged
])
async def test_only_upstream_errors_are_retried(failure: Exception, attempts: int) -> None:
    made = 0

    async def attempt() -> None:
        nonlocal made
        made += 1
        raise failure

    async def before_retry(error: AnthropicError, delay: float) -> None:
        await asyncio.sleep(0)

    with pytest.raises(type(failure)):
        await run_with_retries(RetryPolicy(initial_delay=0.0, max_delay=0.0), attempt,
                               retry_on=AnthropicError, judge=verdict,
                               before_retry=before_retry, now=lambda: 0.0, deadline=None)
    assert made == attempts
