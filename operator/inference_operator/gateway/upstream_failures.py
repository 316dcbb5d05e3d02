"""What the gateway makes of a failed call to Anthropic (``AnthropicError``): the retry
verdict, and the Elasticsearch error its caller gets. An upstream 4xx keeps its status;
any other failure is a 502 (Elasticsearch answers 400; we prefer the honest code). The
message is Elasticsearch's: ``{what} for request from inference entity id [id]{detail}``."""

from __future__ import annotations

from collections.abc import Mapping

from inference_operator.anthropic.errors import (
    AnthropicError,
    ConnectionFailed,
    ConnectionLost,
    MalformedReply,
    NoConnection,
    StatusError,
)
from inference_operator.gateway.errors import ESError
from inference_operator.gateway.retry import NOT_RETRIED, Verdict

_STATUS_WORDS = {
    401: "an authentication error",
    403: "a permission denied error",
    529: "an Anthropic server is temporarily overloaded",
}


def verdict(error: AnthropicError) -> Verdict:
    return Verdict(True, error.retry_after) if error.retryable else NOT_RETRIED


def es_error(error: AnthropicError, inference_id: str, api_key: str) -> ESError:
    what, detail, status, headers = _described(error)
    reason = f"{what} for request from inference entity id [{inference_id}]{detail}"
    # Upstream messages are not ours: make sure none of them can carry the key out.
    if api_key:
        reason = reason.replace(api_key, "<redacted>")
    # On the chat path Elasticsearch types every upstream failure "anthropic_error".
    return ESError(status, "status_exception", reason, headers, unified_type="anthropic_error")


def _described(error: AnthropicError) -> tuple[str, str, int, dict[str, str]]:
    """(what, detail, status, headers) of the caller's error."""
    if isinstance(error, StatusError):
        status = error.failure_status
        detail = f" status [{status}]"
        if error.message:
            detail += f". Error message: [{error.message}]"
        headers = ({"Retry-After": str(max(1, round(error.retry_after)))}
                   if status == 429 and error.retry_after is not None else {})
        return (_status_words(error), detail,
                status if 400 <= status < 500 else 502, headers)
    if isinstance(error, NoConnection):
        # The caller may retry a little later: by then a connection may be free.
        return ("No upstream connection came free", f" within [{error.wait:g}s]: "
                f"[{error.cause}]", 503, {"Retry-After": "1"})
    what = {ConnectionFailed: "Failed to reach the upstream service",
            ConnectionLost: "Lost the upstream response",
            MalformedReply: "Received an invalid response"}.get(type(error),
                                                                "The upstream call failed")
    return what, f": [{error.cause}]", 502, {}


def _status_words(error: StatusError) -> str:
    status, headers = error.failure_status, error.headers
    if error.spend_limit:
        return ("Received a spend limit status code (the organization's monthly spend "
                "limit is reached; not retried)")
    if status == 429:
        return _rate_limit_prefix(headers)
    what = _STATUS_WORDS.get(status, "a server error" if status >= 500
                             else "a redirect" if status < 400 else "an unsuccessful")
    return f"Received {what} status code"


def _rate_limit_prefix(headers: Mapping[str, str]) -> str:
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
