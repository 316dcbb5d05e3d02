"""Reading Anthropic's replies as leniently as the SDK does (it validates none): JSON
objects, and the token usage a Message or a stream event reports."""

from __future__ import annotations

from typing import Any

from inference_operator import jsoncodec
from inference_operator.anthropic.errors import MalformedReply


def object_at(holder: Any, name: str) -> dict[str, Any]:
    """``holder[name]`` if both are JSON objects, else an empty one."""
    value = holder.get(name) if isinstance(holder, dict) else None
    return value if isinstance(value, dict) else {}


def message_usage(message: dict[str, Any]) -> tuple[Any, Any]:
    """(input tokens, output tokens) of a Message, as reported (not checked)."""
    reported = object_at(message, "usage")
    return reported.get("input_tokens"), reported.get("output_tokens")


def event_usage(event: dict[str, Any]) -> tuple[Any, Any] | None:
    """(input tokens, output tokens) a stream event reports, as reported: the input in
    ``message_start``, the output in ``message_delta`` (None for the other); None for an
    event of another type."""
    kind = event.get("type")
    if kind == "message_start":
        return usage_object(event).get("input_tokens"), None
    if kind == "message_delta":
        return None, usage_object(event).get("output_tokens")
    return None


def usage_object(event: dict[str, Any]) -> dict[str, Any]:
    """The whole ``usage`` a stream event carries (``message_start``: input, cache and
    output so far; ``message_delta``: output so far), else an empty one."""
    kind = event.get("type")
    if kind == "message_start":
        return object_at(object_at(event, "message"), "usage")
    return object_at(event, "usage") if kind == "message_delta" else {}


def json_object(raw: bytes | str, what: str) -> dict[str, Any]:
    try:
        value = jsoncodec.loads(raw)
    except ValueError:
        raise MalformedReply(f"{what} is not JSON") from None
    if not isinstance(value, dict):
        raise MalformedReply(f"{what} is not a JSON object")
    return value


def json_or_text(raw: bytes) -> Any:
    try:
        return jsoncodec.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")
