"""Anthropic Messages API wire format: deterministic replies, Message JSON, SSE events
and error bodies, shaped like the real API so the official SDK parses all of them."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from itertools import count
from typing import Any

# Error ``type`` per HTTP status, as the real API sends them.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}

_TOKEN = re.compile(r"\s*\S+")
_ids = count(1)


def next_id(prefix: str) -> str:
    return f"{prefix}_emu{next(_ids):012d}"


def error_body(status: int, message: str, error_type: str | None = None) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": error_type or ERROR_TYPES.get(status, "api_error"), "message": message},
        "request_id": next_id("req"),
    }


def tokens(text: str) -> list[str]:
    """Word-sized tokens with their leading whitespace, like real text deltas."""
    return _TOKEN.findall(text)


def prompt_text(messages: list[dict[str, Any]]) -> str:
    """The text of the last user message (string content or text blocks)."""
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return " ".join(
                block.get("text", "") for block in content
                if isinstance(block, dict) and block.get("type") == "text"
            )
    return ""


@dataclass(frozen=True)
class Reply:
    """One deterministic completion: the same request always gets the same reply."""

    model: str
    input_tokens: int
    deltas: list[str]
    stop_reason: str

    @classmethod
    def for_request(cls, model: str, messages: list[dict[str, Any]], max_tokens: int) -> Reply:
        prompt = prompt_text(messages)
        words = tokens(f"Hello from the Anthropic emulator. You said: {prompt}")
        return cls(
            model=model,
            input_tokens=max(1, len(tokens(prompt))),
            deltas=words[:max_tokens],
            stop_reason="max_tokens" if len(words) > max_tokens else "end_turn",
        )

    @property
    def text(self) -> str:
        return "".join(self.deltas)

    def message(self) -> dict[str, Any]:
        return {
            "id": next_id("msg"),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [{"type": "text", "text": self.text}],
            "stop_reason": self.stop_reason,
            "stop_sequence": None,
            "usage": {"input_tokens": self.input_tokens, "output_tokens": len(self.deltas)},
        }

    def stream_head(self) -> list[bytes]:
        """Everything the real API sends before the first text delta."""
        start = {
            "id": next_id("msg"),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self.input_tokens, "output_tokens": 1},
        }
        return [
            sse("message_start", {"type": "message_start", "message": start}),
            sse("content_block_start", {
                "type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""},
            }),
            sse("ping", {"type": "ping"}),
        ]

    @staticmethod
    def stream_delta(text: str) -> bytes:
        return sse("content_block_delta", {
            "type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": text},
        })

    def stream_tail(self) -> list[bytes]:
        return [
            sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
            sse("message_delta", {
                "type": "message_delta",
                "delta": {"stop_reason": self.stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": len(self.deltas)},
            }),
            sse("message_stop", {"type": "message_stop"}),
        ]


def sse(event: str, data: dict[str, Any]) -> bytes:
    # The SDK drops events without an ``event:`` line, so every event carries one.
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def model_info(model_id: str) -> dict[str, Any]:
    return {
        "type": "model",
        "id": model_id,
        "display_name": model_id.replace("-", " ").title(),
        "created_at": "2025-01-01T00:00:00Z",
    }
