"""Anthropic's answer as OpenAI-style chat completion objects: a stream's events as
``chat.completion.chunk`` objects, one per event that carries something, and a whole
Message as one ``chat.completion``.

The shape is Elasticsearch's ChatCompletionChunk (no wrapper, ``delta``, ``choices``,
``usage``), with its Anthropic quirks left out where OpenAI-style parsers trip on them
(docs/gateway.md, "Chat completion"): ``id``, ``model``, ``created`` and ``object`` on
every chunk instead of null after the first; ``finish_reason`` in OpenAI's words instead
of Anthropic's raw ``stop_reason``; one choice (index 0) whose tool calls are numbered,
instead of a choice per content block; the usage once, whole, in the last chunk."""

from __future__ import annotations

import json
import time
from typing import Any

from inference_operator.anthropic.replies import object_at

# Anthropic's stop_reason in OpenAI's finish_reason words; others pass as they are.
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def finish_reason(stop_reason: Any) -> str | None:
    if not isinstance(stop_reason, str):
        return None
    return FINISH_REASONS.get(stop_reason, stop_reason)


class ChunkStream:
    """One stream's translation: :meth:`chunk` per Anthropic event, None for the events
    that carry nothing for the caller (ping, block stops, message_stop)."""

    def __init__(self) -> None:
        self._head: dict[str, Any] = {"id": None, "created": int(time.time()), "model": None,
                                      "object": "chat.completion.chunk"}
        self._input_tokens = 0
        self._tool_calls: dict[Any, int] = {}  # content block index -> tool call index

    def chunk(self, event: dict[str, Any]) -> dict[str, Any] | None:
        kind = event.get("type")
        if kind == "content_block_delta":  # per delta, the hot path: handled first
            delta = object_at(event, "delta")
            if delta.get("type") == "text_delta":
                text = delta.get("text")
                return self._choice({"content": text}) if text else None
            if delta.get("type") == "input_json_delta":
                call = self._tool_calls.get(event.get("index"))
                partial = delta.get("partial_json")
                if call is None or not partial:
                    return None
                return self._choice({"tool_calls": [
                    {"index": call, "function": {"arguments": partial}}]})
            return None
        if kind == "content_block_start":
            return self._block_start(event)
        if kind == "message_start":
            message = object_at(event, "message")
            self._head["id"] = message.get("id")
            self._head["model"] = message.get("model")
            self._input_tokens = _count(object_at(message, "usage").get("input_tokens"))
            return self._choice({"role": "assistant"})
        if kind == "message_delta":
            output = _count(object_at(event, "usage").get("output_tokens"))
            reason = finish_reason(object_at(event, "delta").get("stop_reason"))
            return {**self._head,
                    "choices": [{"delta": {}, "finish_reason": reason, "index": 0}],
                    "usage": usage(self._input_tokens, output)}
        return None

    def _block_start(self, event: dict[str, Any]) -> dict[str, Any] | None:
        block = object_at(event, "content_block")
        if block.get("type") == "text":
            text = block.get("text")
            return self._choice({"content": text}) if text else None
        if block.get("type") != "tool_use":
            return None
        call = self._tool_calls[event.get("index")] = len(self._tool_calls)
        # Anthropic starts a tool_use with "input": {} and streams the input after it;
        # arguments start empty so the caller's concatenation is the JSON (Elasticsearch
        # starts them with "{}", which then makes "{}{...}").
        given = block.get("input")
        arguments = json.dumps(given) if isinstance(given, dict) and given else ""
        return self._choice({"tool_calls": [{
            "index": call, "id": block.get("id"), "type": "function",
            "function": {"name": block.get("name"), "arguments": arguments}}]})

    def _choice(self, delta: dict[str, Any]) -> dict[str, Any]:
        return {**self._head, "choices": [{"delta": delta, "index": 0}]}


def completion(message: dict[str, Any]) -> dict[str, Any]:
    """A whole Message as a ``chat.completion``."""
    content = message.get("content")
    blocks = [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []
    texts = [b["text"] for b in blocks
             if b.get("type") == "text" and isinstance(b.get("text"), str)]
    calls = [{"id": b.get("id"), "type": "function", "function": {
                  "name": b.get("name"), "arguments": json.dumps(b.get("input") or {})}}
             for b in blocks if b.get("type") == "tool_use"]
    reply: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        reply["tool_calls"] = calls
    reported = object_at(message, "usage")
    return {
        "id": message.get("id"),
        "choices": [{"finish_reason": finish_reason(message.get("stop_reason")), "index": 0,
                     "message": reply}],
        "created": int(time.time()),
        "model": message.get("model"),
        "object": "chat.completion",
        "usage": usage(_count(reported.get("input_tokens")),
                       _count(reported.get("output_tokens"))),
    }


def usage(input_tokens: int, output_tokens: int) -> dict[str, int]:
    return {"completion_tokens": output_tokens, "prompt_tokens": input_tokens,
            "total_tokens": input_tokens + output_tokens}


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
