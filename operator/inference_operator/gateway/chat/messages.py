"""A chat request as Messages API parameters, as Elasticsearch's Anthropic request entity
(AnthropicUnifiedChatCompletionRequestEntity, AnthropicToolUtils) builds them: system
messages become ``system``, tool calls ``tool_use`` blocks, tool messages ``tool_result``
blocks, ``stop`` ``stop_sequences``; request values first, then the endpoint's settings.
Refusals carry Elasticsearch's messages (400 ``status_exception``)."""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from inference_operator import jsoncodec
from inference_operator.gateway import validation
from inference_operator.gateway.chat.request import ChatRequest, Message, Tool
from inference_operator.gateway.endpoints import Endpoint
from inference_operator.gateway.errors import ESError

_API = "for the Anthropic chat completion API"
_TOOL_CHOICES = {"auto": {"type": "auto"}, "none": {"type": "none"}, "required": {"type": "any"}}
_DATA_URI = re.compile(r"data:(?P<type>[^;,]+)(?:;[^,]*)?;base64,(?P<data>.*)", re.DOTALL)
_IMAGE_TYPES = {"image/jpg": "image/jpeg"}  # Elasticsearch's normalisation


def message_params(endpoint: Endpoint, chat: ChatRequest) -> dict[str, Any]:
    settings = endpoint.settings
    system = [message for message in chat.messages if message.role == "system"]
    params: dict[str, Any] = {
        # The request's model wins, as Elasticsearch's OpenAI-style services let it.
        "model": chat.model or endpoint.model_id,
        "messages": _conversation([m for m in chat.messages if m.role != "system"]),
        "max_tokens": chat.max_completion_tokens or settings["max_tokens"],
    }
    if system:
        params["system"] = [block for message in system
                            for block in _blocks(message.content, "system")]
    if chat.stop:
        params["stop_sequences"] = list(chat.stop)
    for name, value in (("temperature", chat.temperature), ("top_p", chat.top_p)):
        if value is not None:
            params[name] = value
        elif name in settings:
            params[name] = settings[name]
    if "top_k" in settings:
        params["top_k"] = settings["top_k"]
    choice = _tool_choice(chat)
    if chat.tools:
        params["tools"] = [_tool(tool) for tool in chat.tools]
        if choice is not None:
            params["tool_choice"] = choice
    return params


def _conversation(messages: list[Message]) -> list[dict[str, Any]]:
    turns: list[dict[str, Any]] = []
    # The content of the last turn while it holds tool results only: known as it is built,
    # not found by looking the turn over again per message (quadratic in tool messages).
    results: list[dict[str, Any]] | None = None
    for message in messages:
        if message.role == "tool":
            # Parallel tool calls are answered by consecutive tool messages; Anthropic wants
            # their results in one user turn, right after the assistant's tool_use turn.
            if results is None:
                results = []
                turns.append({"role": "user", "content": results})
            results.append(_tool_result(message))
            continue
        results = None
        if message.role == "assistant" and message.tool_calls:
            blocks = [block for block in _blocks(message.content, "assistant")
                      if block.get("text") != ""]
            blocks += [{"type": "tool_use", "id": call.id, "name": call.name,
                        "input": _arguments(call.arguments, call.id)}
                       for call in message.tool_calls]
            turns.append({"role": "assistant", "content": blocks})
        elif message.role in ("user", "assistant"):
            content = message.content
            turns.append({"role": message.role,
                          "content": content if isinstance(content, str) and content
                          else _blocks(content, message.role)})
        else:
            raise _refused(f"Unsupported role [{message.role}] {_API}.")
    return turns


def _tool_result(message: Message) -> dict[str, Any]:
    if not message.tool_call_id:
        raise _refused(f"Field [tool_call_id] is required in a tool message {_API}.")
    result: dict[str, Any] = {"type": "tool_result", "tool_use_id": message.tool_call_id}
    if message.content is not None:
        result["content"] = _blocks(message.content, "tool")
    return result


def _blocks(content: str | list[dict[str, Any]] | None, role: str) -> list[dict[str, Any]]:
    """Content blocks; empty content is one empty text block, as Elasticsearch sends it."""
    if not content:
        return [{"type": "text", "text": ""}]
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    blocks = []
    for part in content:
        kind = part["type"].strip().lower()
        if kind == "text":
            blocks.append({"type": "text", "text": part["text"]})
        elif role == "system":
            raise _refused(f"Unsupported content type [{kind}] in a system message {_API}.")
        elif kind == "image_url":
            blocks.append(_image(part["image_url"]))
        else:
            blocks.append(_document(part["file"]))
    return blocks


def _image(image: dict[str, Any]) -> dict[str, Any]:
    url = image.get("url")
    if isinstance(url, str):
        if url.startswith(("http://", "https://")):
            return {"type": "image", "source": {"type": "url", "url": url}}
        if match := _DATA_URI.fullmatch(url):
            media_type = match["type"].lower()
            return {"type": "image", "source": {
                "type": "base64", "media_type": _IMAGE_TYPES.get(media_type, media_type),
                "data": match["data"]}}
    raise _refused("Image URLs must be HTTP(S) URLs or base64 data URIs with the format "
                   f"[data:{{MIME-type}};base64,...] {_API}.")


def _document(file: dict[str, Any]) -> dict[str, Any]:
    data = file.get("file_data")
    if not isinstance(data, str):
        raise _refused(f"File content requires [file_data] {_API}.")
    match = _DATA_URI.fullmatch(data)
    if match is None:
        raise _refused("File data must be a base64 data URI with the format "
                       f"[data:{{MIME-type}};base64,...] {_API}.")
    media_type = match["type"].lower()
    if media_type == "application/pdf":
        source = {"type": "base64", "media_type": media_type, "data": match["data"]}
    elif media_type == "text/plain":
        try:
            text = base64.b64decode(match["data"], validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise _refused("Invalid base64 payload in the file data URI.") from None
        source = {"type": "text", "media_type": media_type, "data": text}
    else:
        raise _refused(f"Unsupported file media type [{media_type}] {_API}; supported types "
                       "are [application/pdf, text/plain].")
    document = {"type": "document", "source": source}
    if isinstance(file.get("filename"), str):
        document["title"] = file["filename"]
    return document


def _arguments(arguments: str, call_id: str) -> dict[str, Any]:
    """A tool call's JSON arguments as the tool_use ``input`` object."""
    if not arguments.strip():
        return {}
    if jsoncodec.too_deep(arguments, validation.MAX_NESTING_DEPTH):
        raise _refused(f"Field [arguments] of tool call [{call_id}] nests deeper than "
                       f"[{validation.MAX_NESTING_DEPTH}] levels {_API}.")
    try:
        value = json.loads(arguments)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise _refused(f"Field [arguments] of tool call [{call_id}] must be a JSON object "
                       f"{_API}.")
    return value


def _tool(tool: Tool) -> dict[str, Any]:
    if tool.strict:
        # Refused, not dropped: a caller asking for schema-exact arguments must not get
        # unchecked ones without knowing (docs/gateway.md, "Chat completion").
        raise _refused("The [strict] field in tool function definitions is not supported by "
                       "the Anthropic chat completion API.")
    schema = {**(tool.parameters or {}), "type": "object"}
    schema.setdefault("properties", {})
    described = {"description": tool.description} if tool.description is not None else {}
    return {"name": tool.name, **described, "input_schema": schema}


def _tool_choice(chat: ChatRequest) -> dict[str, Any] | None:
    if chat.tool_choice_function is not None:
        return {"type": "tool", "name": chat.tool_choice_function}
    if chat.tool_choice is None:
        return None
    choice = _TOOL_CHOICES.get(chat.tool_choice)
    if choice is None:
        raise _refused(f"Unsupported tool_choice value [{chat.tool_choice}] {_API}.")
    return choice


def _refused(reason: str) -> ESError:
    return ESError(400, "status_exception", reason)
