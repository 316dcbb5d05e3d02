"""Anthropic through the official SDK: clients, request parameters, and the mapping of
SDK failures to retry verdicts and Elasticsearch errors.

One aiohttp transport (``DefaultAioHttpClient``, ~2x the throughput of the default at
concurrency 50) is shared by every endpoint's client; SDK retries are off because the
gateway runs its own capped policy (the SDK follows ``retry-after`` without a cap)."""

from __future__ import annotations

import email.utils
import time
from typing import Any

import anthropic

from inference_operator.gateway.errors import ESError
from inference_operator.gateway.retry import Verdict

RETRYABLE_STATUSES = frozenset({429, 500, 529})
# Status for an error that arrives inside a 200 stream, by Anthropic error type
# (Elasticsearch's AnthropicStreamingProcessor); anything else is an upstream failure.
_STREAM_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "overloaded_error": 529,
}
_STATUS_WORDS = {
    401: "an authentication error",
    403: "a permission denied error",
    529: "an Anthropic server is temporarily overloaded",
}


class Upstream:
    def __init__(self, base_url: str, connect_timeout: float = 5.0) -> None:
        self.base_url = base_url
        self._connect_timeout = connect_timeout
        self._base: anthropic.AsyncAnthropic | None = None

    async def start(self) -> None:
        # The aiohttp session must be created inside the running loop.
        self._base = anthropic.AsyncAnthropic(
            base_url=self.base_url,
            api_key="unset",  # every endpoint gets a copy carrying its own key
            max_retries=0,
            http_client=anthropic.DefaultAioHttpClient(),
            # The request's own deadline (?timeout=) bounds the call; the SDK's read
            # timeout only has to outlast long streams.
            timeout=anthropic.Timeout(600.0, connect=self._connect_timeout),
        )

    async def close(self) -> None:
        if self._base is not None:
            await self._base.close()

    def client(self, api_key: str) -> anthropic.AsyncAnthropic:
        if self._base is None:
            raise RuntimeError("Upstream.start() has not run")
        return self._base.with_options(api_key=api_key)


def judge(error: Exception) -> Verdict:
    if isinstance(error, anthropic.APIConnectionError):  # includes APITimeoutError
        return Verdict(True)
    if isinstance(error, anthropic.APIStatusError) and error.status_code in RETRYABLE_STATUSES:
        return Verdict(True, retry_after(error.response.headers))
    return Verdict(False)


def retry_after(headers: Any) -> float | None:
    """``retry-after-ms``, then ``retry-after`` in seconds or as an HTTP date."""
    try:
        if (ms := headers.get("retry-after-ms")) is not None:
            return max(0.0, float(ms) / 1000)
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            when = email.utils.parsedate_to_datetime(value)
            return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def to_es_error(error: Exception, inference_id: str, api_key: str) -> ESError:
    """Upstream 4xx keep their status; 5xx and 529 become 502 (Elasticsearch says 400)."""
    if isinstance(error, ESError):
        return error
    if isinstance(error, anthropic.APIStatusError):
        status, message = _status_of(error)
        what = _STATUS_WORDS.get(status, "a server error" if status >= 500
                                 else "an unsuccessful")
        prefix = f"Received {what} status code"
        if status == 429:
            prefix = _rate_limit_prefix(error.response.headers)
        reason = (f"{prefix} for request from inference entity id [{inference_id}] "
                  f"status [{status}]")
        if message:
            reason += f". Error message: [{message}]"
        headers = {}
        if status == 429 and (hint := retry_after(error.response.headers)) is not None:
            headers["Retry-After"] = str(max(1, round(hint)))
        return ESError(status if status < 500 else 502, "status_exception",
                       _scrub(reason, api_key), headers)
    if isinstance(error, anthropic.APIConnectionError):
        cause = type(error.__cause__ or error).__name__
        return ESError(502, "status_exception",
                       f"Failed to reach the upstream service for request from inference entity "
                       f"id [{inference_id}]: [{cause}]")
    return ESError(502, "status_exception",
                   f"Lost the upstream response for inference entity id [{inference_id}]: "
                   f"[{type(error).__name__}]")


def status_label(error: Exception) -> str:
    """A short label for metrics: the upstream status or the kind of failure."""
    if isinstance(error, anthropic.APIStatusError):
        return str(_status_of(error)[0])
    if isinstance(error, anthropic.APIConnectionError):
        return "connection_error"
    return "stream_error"


def _status_of(error: anthropic.APIStatusError) -> tuple[int, str]:
    body = error.body if isinstance(error.body, dict) else {}
    detail = body.get("error") if isinstance(body.get("error"), dict) else {}
    error_type = str(detail.get("type", ""))
    message = str(detail.get("message", ""))
    status = error.status_code
    if status < 400:  # an ``event: error`` inside a 200 stream
        status = _STREAM_ERROR_STATUS.get(error_type, 500)
    return status, message


def _rate_limit_prefix(headers: Any) -> str:
    def h(name: str) -> str:
        return headers.get(name) or "unknown"

    return (
        "Received a rate limit status code. "
        f"Token limit [{h('anthropic-ratelimit-tokens-limit')}], "
        f"remaining tokens [{h('anthropic-ratelimit-tokens-remaining')}], "
        f"tokens reset [{h('anthropic-ratelimit-tokens-reset')}]. "
        f"Request limit [{h('anthropic-ratelimit-requests-limit')}], "
        f"remaining requests [{h('anthropic-ratelimit-requests-remaining')}], "
        f"request reset [{h('anthropic-ratelimit-requests-reset')}]. "
        f"Retry after [{h('retry-after')}]"
    )


def _scrub(text: str, api_key: str) -> str:
    # Upstream messages are not ours: make sure none of them can carry the key out.
    return text.replace(api_key, "<redacted>") if api_key else text
