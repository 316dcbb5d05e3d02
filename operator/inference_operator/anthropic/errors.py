"""A call to Anthropic that failed, in Anthropic's terms only: the status and error type
it answered, or how the connection failed, with whether the SDK would retry it and after
how long. What a caller makes of one (its own error, its metrics) is the caller's."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from typing import Any

# What the SDK retries, of what Anthropic answers.
RETRYABLE_STATUSES = frozenset({429, 500, 529})
# A 429 that no wait cures: the organisation's monthly spend limit (error.details.error_code).
SPEND_LIMIT_CODE = "enforced_spend_limit_reached"
# Status an error inside a 200 stream stands for, by Anthropic error type (as
# Elasticsearch's AnthropicStreamingProcessor reads it); anything else is a server error.
_STREAM_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "overloaded_error": 529,
}


class AnthropicError(Exception):
    """``label``: the failure in one word, the status or the kind (for metrics and
    logs); ``retryable`` and ``retry_after`` (seconds, Anthropic's hint): whether another
    attempt may succeed, and when."""

    def __init__(self, label: str, cause: str, *, retryable: bool = False,
                 retry_after: float | None = None) -> None:
        super().__init__(f"{label}: {cause}")
        self.label = label
        self.cause = cause
        self.retryable = retryable
        self.retry_after = retry_after


class StatusError(AnthropicError):
    """An error answer: a non-2xx status, or an ``event: error`` inside a 200 stream."""

    def __init__(self, status: int, headers: Mapping[str, str], body: Any) -> None:
        self.status = status  # as received
        self.headers = headers
        self.body = body
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict):  # read as leniently as the SDK does
            error = {}
        self.error_type = str(error.get("type", ""))
        self.message = str(error.get("message", ""))
        details = error.get("details")
        self.spend_limit = (isinstance(details, dict)
                            and details.get("error_code") == SPEND_LIMIT_CODE)
        # An in-stream error: the status its type stands for.
        self.failure_status = (status if status >= 300
                               else _STREAM_ERROR_STATUS.get(self.error_type, 500))
        hint = retry_after(headers)
        retryable = self.failure_status in RETRYABLE_STATUSES and not self.spend_limit
        # Anthropic's own word on it comes first, as the SDK reads it.
        should_retry = headers.get("x-should-retry")
        if should_retry in ("true", "false"):
            retryable = should_retry == "true"
        super().__init__(str(self.failure_status), self.message, retryable=retryable,
                         retry_after=hint if retryable else None)


class ConnectionFailed(AnthropicError):
    """No answer: the connection failed, dropped or timed out before the answer was read."""

    def __init__(self, cause: str) -> None:
        super().__init__("connection_error", cause, retryable=True)


class ConnectionLost(AnthropicError):
    """The connection failed while a stream was being read: too late to retry."""

    def __init__(self, cause: str) -> None:
        super().__init__("stream_error", cause)


class NoConnection(AnthropicError):
    """No connection came free within ``wait`` seconds (this key's share of the pool, or
    the whole pool, is in use). Not for retrying at once: a retry would only wait again."""

    def __init__(self, cause: str, wait: float) -> None:
        super().__init__("no_connection", cause)
        self.wait = wait


class MalformedReply(AnthropicError):
    """A 200 whose body is not what the Messages API sends: not a JSON object, an event
    that is not one, or a stream that ended without its ``message_stop``."""

    def __init__(self, what: str) -> None:
        super().__init__("malformed", what)


def retry_after(headers: Mapping[str, str]) -> float | None:
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
