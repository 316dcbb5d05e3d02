"""JSON Schemas of the chat path for the OpenAPI document (openapi.py): the request body
as request.py and messages.py accept it, the answer as chunks.py writes it, the error as
ESError.unified_body renders it. Written out here, not derived: request.py walks the body
by hand (its docstring says why). The fuzz tests hold the gateway to them both ways:
answers must match, and bodies outside the request schema must be refused."""

from __future__ import annotations

from typing import Any

from inference_operator.gateway.chat.chunks import FINISH_REASONS

_TEXT_PART = {"type": "object", "required": ["type", "text"], "additionalProperties": False,
              "properties": {"type": {"const": "text"}, "text": {"type": "string"}}}
_IMAGE_PART = {"type": "object", "required": ["type", "image_url"],
               "additionalProperties": False, "properties": {
                   "type": {"const": "image_url"},
                   "image_url": {"type": "object", "required": ["url"], "properties": {
                       "url": {"type": "string", "description":
                               "An http(s) URL or a `data:{MIME-type};base64,...` URI."}}}}}
_FILE_PART = {"type": "object", "required": ["type", "file"], "additionalProperties": False,
              "properties": {
                  "type": {"const": "file"},
                  "file": {"type": "object", "required": ["file_data"], "properties": {
                      "file_data": {"type": "string", "description":
                                    "A `data:application/pdf;base64,...` or "
                                    "`data:text/plain;base64,...` URI."},
                      "filename": {"type": "string"}}}}}
_CONTENT = {"anyOf": [{"type": "string"}, {"type": "null"}, {
    "type": "array", "items": {"anyOf": [_TEXT_PART, _IMAGE_PART, _FILE_PART]}}]}
_TOOL_CALL = {"type": "object", "required": ["id", "type", "function"], "properties": {
    "id": {"type": "string"}, "type": {"type": "string"},
    "function": {"type": "object", "required": ["name", "arguments"], "properties": {
        "name": {"type": "string"},
        "arguments": {"type": "string", "description": "A JSON object, as text."}}}}}
_MESSAGE = {"type": "object", "required": ["role"], "additionalProperties": False,
            "properties": {
                "role": {"type": "string", "enum": ["system", "user", "assistant", "tool"]},
                "content": _CONTENT,
                "tool_call_id": {"type": ["string", "null"], "description":
                                 "Required in a `tool` message: the call it answers."},
                "tool_calls": {"type": ["array", "null"], "items": _TOOL_CALL}}}
_TOOL = {"type": "object", "required": ["type", "function"], "properties": {
    "type": {"type": "string"},
    "function": {"type": "object", "required": ["name"], "properties": {
        "name": {"type": "string"},
        "description": {"type": ["string", "null"]},
        "parameters": {"type": ["object", "null"],
                       "description": "A JSON Schema; sent as Anthropic's input_schema."},
        "strict": {"type": ["boolean", "null"], "enum": [False, None],
                   "description": "`true` is refused: Anthropic does not enforce it here."}}}}}
_TOOL_CHOICE = {"anyOf": [
    {"type": "string", "enum": ["auto", "none", "required"]},
    {"type": "null"},
    {"type": "object", "required": ["type", "function"], "properties": {
        "type": {"type": "string"},
        "function": {"type": "object", "required": ["name"],
                     "properties": {"name": {"type": "string"}}}}}]}
_NUMBER = {"type": ["number", "null"]}
_USAGE = {"type": "object", "required": ["completion_tokens", "prompt_tokens", "total_tokens"],
          "properties": {name: {"type": "integer", "minimum": 0}
                         for name in ("completion_tokens", "prompt_tokens", "total_tokens")}}
_FINISH = {"type": ["string", "null"], "examples": sorted(set(FINISH_REASONS.values()))}

SCHEMAS: dict[str, Any] = {
    "ChatCompletionRequest": {
        "type": "object", "required": ["messages"], "additionalProperties": False,
        "description": "Elasticsearch's unified chat completion body.",
        "properties": {
            "messages": {"type": "array", "minItems": 1, "items": _MESSAGE},
            "model": {"type": ["string", "null"],
                      "description": "Instead of the endpoint's model_id."},
            "max_completion_tokens": {"type": ["integer", "null"], "minimum": 1,
                                      "description": "Default: the endpoint's max_tokens."},
            "stop": {"type": ["array", "null"], "items": {"type": "string"}},
            "temperature": _NUMBER,
            "top_p": _NUMBER,
            "tools": {"type": ["array", "null"], "items": _TOOL},
            "tool_choice": _TOOL_CHOICE,
        },
    },
    "ChatCompletion": {
        "type": "object", "required": ["id", "choices", "created", "model", "object", "usage"],
        "properties": {
            "id": {"type": ["string", "null"]},
            "choices": {"type": "array", "items": {
                "type": "object", "required": ["finish_reason", "index", "message"],
                "properties": {
                    "finish_reason": _FINISH, "index": {"type": "integer"},
                    "message": {"type": "object", "required": ["role", "content"],
                                "properties": {
                                    "role": {"const": "assistant"},
                                    "content": {"type": ["string", "null"]},
                                    "tool_calls": {"type": "array", "items": _TOOL_CALL}}}}}},
            "created": {"type": "integer"},
            "model": {"type": ["string", "null"]},
            "object": {"const": "chat.completion"},
            "usage": _USAGE,
        },
    },
    "ChatError": {
        "type": "object", "required": ["error"], "additionalProperties": False,
        "description": "OpenAI's error object, as Elasticsearch's chat path sends it; the "
                       "status is the HTTP status's.",
        "properties": {"error": {
            "type": "object", "required": ["code", "message", "type"],
            "additionalProperties": False, "properties": {
                "code": {"type": "string", "description": "The status's name: `bad_request`."},
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": "string", "description": "The field at fault, if one is."},
            }}},
    },
}
