"""Errors in the Elasticsearch shape:
``{"error":{"root_cause":[…],"type":…,"reason":…},"status":N}``.

Every failure the gateway reports is an :class:`ESError`; a middleware
(``middlewares.elasticsearch_errors``) renders it as JSON or as an SSE ``event: error``.
The ``type`` names follow Elasticsearch's exception classes in snake_case so clients that
branch on them keep working."""

from __future__ import annotations

from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any


@dataclass
class ESError(Exception):
    status: int
    type: str
    reason: str
    headers: dict[str, str] = field(default_factory=dict)
    # Close the connection after the answer: the rest of the request cannot be trusted
    # (a body over the limit, a client that stalled) and reading it would cost more.
    close_connection: bool = False
    # The chat_completion route's OpenAI-shaped rendering (unified_body): the field at
    # fault, and a type other than ``type`` (Elasticsearch's for upstream failures).
    param: str | None = None
    unified_type: str | None = None

    def __str__(self) -> str:
        return f"[{self.status}] {self.type}: {self.reason}"

    def body(self) -> dict[str, Any]:
        cause = {"type": self.type, "reason": self.reason}
        return {"error": {"root_cause": [cause], **cause}, "status": self.status}

    def unified_body(self) -> dict[str, Any]:
        """As Elasticsearch's UnifiedChatCompletionException renders itself on the chat
        path: OpenAI's error object, ``code`` the status's name (``bad_request``), ``param``
        left out when there is none, the status only in the HTTP status line."""
        error = {"code": _STATUS_CODES.get(self.status, "error"), "message": self.reason,
                 "type": self.unified_type or self.type}
        if self.param is not None:
            error["param"] = self.param
        return {"error": error}


# Elasticsearch's RestStatus names, lower-cased (Python 3.13 renamed 413 in HTTPStatus).
_STATUS_CODES = {status.value: status.name.lower() for status in HTTPStatus} | {
    413: "request_entity_too_large"}


def validation_failed(messages: list[str], error_type: str = "validation_exception") -> ESError:
    numbered = "".join(f"{i}: {m};" for i, m in enumerate(messages, start=1))
    return ESError(400, error_type, f"Validation Failed: {numbered}")


def bad_request(reason: str) -> ESError:
    return ESError(400, "status_exception", reason)


def not_found(inference_id: str) -> ESError:
    return ESError(404, "resource_not_found_exception",
                   f"Inference endpoint not found [{inference_id}]")


def already_exists(inference_id: str) -> ESError:
    return ESError(400, "resource_already_exists_exception",
                   f"Inference endpoint [{inference_id}] already exists")


def timed_out(timeout_text: str) -> ESError:
    return ESError(408, "status_exception", f"Request timed out after [{timeout_text}]")


def unauthorized(path: str) -> ESError:
    return ESError(
        401, "security_exception", f"missing authentication credentials for REST request [{path}]",
        headers={"WWW-Authenticate": 'Bearer realm="inference-gateway"'},
    )


# The realm of the public listener's challenges (``WWW-Authenticate``).
REALM = "inference-operator"
BEARER_CHALLENGE = f'Bearer realm="{REALM}"'
API_KEY_CHALLENGE = "ApiKey"  # as Elasticsearch sends it


def unauthenticated(path: str, challenge: str, *, given: bool) -> ESError:
    """No usable credentials: none (``given`` false), or ones that did not authenticate.
    Never quotes them."""
    reason = (f"unable to authenticate with the provided credentials for REST request [{path}]"
              if given else f"missing authentication credentials for REST request [{path}]")
    return ESError(401, "security_exception", reason, headers={"WWW-Authenticate": challenge})


def forbidden(caller: str, inference_id: str, why: str) -> ESError:
    return ESError(403, "security_exception",
                   f"action [invoke] is unauthorized for user [{caller}] on inference endpoint "
                   f"[{inference_id}]: {why}")


def auth_unavailable() -> ESError:
    # 503, not 401 (the credentials may be fine) nor 500 (no bug): the API server that
    # reviews them did not answer; a retry may succeed.
    return ESError(503, "status_exception",
                   "cannot check the caller's credentials now: the Kubernetes API server did "
                   "not answer the review; try again", headers={"Retry-After": "1"})


def reviews_exhausted(retry_after: int) -> ESError:
    # A caller the gateway does not know, while too many such are being checked (the
    # API server is shielded from floods of made-up tokens); as Elasticsearch's 429 when
    # its queues are full, which its clients retry.
    return ESError(429, "es_rejected_execution_exception",
                   "too many new credentials are being checked right now; try again",
                   headers={"Retry-After": str(retry_after)})


def method_not_allowed(path: str, method: str, allowed: list[str], hint: str = "") -> ESError:
    return ESError(
        405, "status_exception",
        f"Incorrect HTTP method for uri [{path}] and method [{method}], "
        f"allowed: [{', '.join(allowed)}]{hint}",
        headers={"Allow": ", ".join(allowed)},
    )


def no_handler(path: str, method: str) -> ESError:
    return ESError(400, "illegal_argument_exception",
                   f"no handler found for uri [{path}] and method [{method}]")


def too_large(limit: int) -> ESError:
    return ESError(413, "content_too_long_exception",
                   f"request body is larger than the limit of [{limit}] bytes",
                   close_connection=True)


def body_timed_out(seconds: float) -> ESError:
    return ESError(408, "status_exception",
                   f"request body not received within [{seconds:g}s]", close_connection=True)


def internal(path: str) -> ESError:
    # Never the exception's text: it could carry anything; the log has the traceback.
    # The connection is closed: a bug may have left the request half read.
    return ESError(500, "exception", f"internal error while handling [{path}]; see the gateway log",
                   close_connection=True)
