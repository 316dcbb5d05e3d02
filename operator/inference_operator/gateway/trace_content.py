"""The prompt and the answer as span attributes, only when the user opted in
(``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``, telemetry.py): the GenAI
conventions' ``gen_ai.system_instructions``, ``gen_ai.input.messages`` and
``gen_ai.output.messages``, JSON strings of role and parts. Each text is cut at
``MAX_TEXT`` characters (the JSON stays whole) and the span then says so; images and
documents are named by their type, never copied."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from inference_operator import jsoncodec

SYSTEM_INSTRUCTIONS = "gen_ai.system_instructions"
INPUT_MESSAGES = "gen_ai.input.messages"
OUTPUT_MESSAGES = "gen_ai.output.messages"
TRUNCATED = "inference_gateway.content.truncated"
MAX_TEXT = 16_384  # characters of one text part, or of one tool call's arguments


class _Cut:
    """Texts cut to MAX_TEXT, remembering whether any was."""

    def __init__(self) -> None:
        self.any = False

    def __call__(self, text: str) -> str:
        if len(text) <= MAX_TEXT:
            return text
        self.any = True
        return text[:MAX_TEXT] + "…"


def input_attributes(params: Mapping[str, Any]) -> dict[str, Any]:
    """A Messages API request's system prompt and messages."""
    cut = _Cut()
    attributes: dict[str, Any] = {}
    system = params.get("system")
    if system:
        attributes[SYSTEM_INSTRUCTIONS] = _json(_parts(system, cut))
    attributes[INPUT_MESSAGES] = _json([
        {"role": message.get("role"), "parts": _parts(message.get("content"), cut)}
        for message in params.get("messages") or () if isinstance(message, Mapping)])
    return _flagged(attributes, cut)


def output_attributes(blocks: Any, stop_reason: Any) -> dict[str, Any]:
    """An answer's content blocks as the one output message."""
    cut = _Cut()
    message: dict[str, Any] = {"role": "assistant", "parts": _parts(blocks, cut)}
    if isinstance(stop_reason, str):
        message["finish_reason"] = stop_reason
    return _flagged({OUTPUT_MESSAGES: _json([message])}, cut)


class StreamedContent:
    """A stream's content blocks, put together from their start and delta events."""

    def __init__(self) -> None:
        self._blocks: dict[int, dict[str, Any]] = {}

    def add(self, event: Mapping[str, Any]) -> None:
        index = event.get("index")
        if not isinstance(index, int):
            return
        if event.get("type") == "content_block_start":
            block = event.get("content_block")
            self._blocks[index] = {**block, "partial": ""} if isinstance(block, Mapping) else {}
        elif event.get("type") == "content_block_delta" and index in self._blocks:
            delta = event.get("delta") or {}
            block = self._blocks[index]
            if delta.get("type") == "text_delta":
                block["text"] = block.get("text", "") + str(delta.get("text", ""))
            elif delta.get("type") == "input_json_delta":
                block["partial"] += str(delta.get("partial_json", ""))

    def blocks(self) -> list[dict[str, Any]]:
        out = []
        for _, block in sorted(self._blocks.items()):
            partial = block.pop("partial", "")
            if block.get("type") == "tool_use" and partial:
                block["input"] = partial  # the JSON as streamed, whole or not
            out.append(block)
        return out


def _parts(content: Any, cut: _Cut) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "content": cut(content)}]
    parts = []
    for block in content if isinstance(content, list) else ():
        if not isinstance(block, Mapping):
            continue
        kind = block.get("type")
        if kind == "text":
            parts.append({"type": "text", "content": cut(str(block.get("text", "")))})
        elif kind == "tool_use":
            arguments = block.get("input")
            parts.append({"type": "tool_call", "id": block.get("id"), "name": block.get("name"),
                          "arguments": cut(arguments if isinstance(arguments, str)
                                           else jsoncodec.dumps(arguments).decode())})
        elif kind == "tool_result":
            parts.append({"type": "tool_call_response", "id": block.get("tool_use_id"),
                          "response": _parts(block.get("content"), cut)})
        else:  # an image, a document: named, never copied
            parts.append({"type": str(kind)})
    return parts


def _json(value: Any) -> str:
    return jsoncodec.dumps(value).decode()


def _flagged(attributes: dict[str, Any], cut: _Cut) -> dict[str, Any]:
    if cut.any:
        attributes[TRUNCATED] = True
    return attributes
