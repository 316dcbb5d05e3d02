"""The body of ``POST _inference/chat_completion/{id}[/_stream]``, checked as
Elasticsearch's parsers check it (UnifiedCompletionRequestBody, Message, ContentObject,
UnifiedCompletionAction.validate), with their messages where they are known and the same
pattern where they are not: ``[Object] failed to parse field [name]: what``.

Walked by hand rather than with pydantic: Elasticsearch words its errors per object and
per JSON token (``found token [VALUE_NUMBER]``), which pydantic's errors for unions
(content as a string or an array of parts) cannot be translated back to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from inference_operator.gateway import validation
from inference_operator.gateway.errors import ESError, validation_failed

_BODY = "UnifiedCompletionRequestBody"
_FIELDS = frozenset({"messages", "model", "max_completion_tokens", "stop", "temperature",
                     "tool_choice", "tools", "top_p"})
_MESSAGE_FIELDS = frozenset({"role", "content", "tool_call_id", "tool_calls"})
CONTENT_TYPES = ("text", "image_url", "file")
_PART_FIELDS = {"text": frozenset({"type", "text"}), "image_url": frozenset({"type", "image_url"}),
                "file": frozenset({"type", "file"})}
# Anthropic's own limit on the messages of one request: more could never be answered, and
# the count bounds the translation's work whatever the body limit is set to.
MAX_MESSAGES = 100_000
# Java's simple class names, as Elasticsearch's "Expected [String] but was [Integer]" has.
_JAVA = {str: "String", int: "Integer", float: "Double", bool: "Boolean", list: "ArrayList",
         dict: "HashMap", type(None): "null"}


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as OpenAI sends it


@dataclass(frozen=True, slots=True)
class Message:
    role: str
    content: str | list[dict[str, Any]] | None  # parts checked: each has a known type
    tool_call_id: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass(frozen=True)
class Tool:
    name: str
    description: str | None
    parameters: dict[str, Any] | None
    strict: bool | None


@dataclass(frozen=True)
class ChatRequest:
    messages: tuple[Message, ...]
    model: str | None = None
    max_completion_tokens: int | None = None
    stop: tuple[str, ...] = ()
    temperature: float | None = None
    top_p: float | None = None
    tools: tuple[Tool, ...] = ()
    # "auto", "none", "required" (or any string: the translation judges it), or a
    # function's name, from {"type": "function", "function": {"name": ...}}.
    tool_choice: str | None = None
    tool_choice_function: str | None = None


def parse(raw: bytes) -> ChatRequest:
    data = validation.load_json(raw)
    unknown = sorted(data.keys() - _FIELDS)
    if unknown:
        raise _parse_error(f"[{_BODY}] unknown field [{unknown[0]}]", unknown[0])
    messages = data.get("messages")
    if messages is None:
        raise _invalid("Field [messages] cannot be null", "messages")
    if not isinstance(messages, list):
        raise _field_error(_BODY, "messages", "expected an array of message objects",
                           "messages")
    if not messages:
        raise _invalid("Field [messages] cannot be an empty array", "messages")
    if len(messages) > MAX_MESSAGES:
        raise _invalid(f"Field [messages] must hold at most [{MAX_MESSAGES}] messages", "messages")
    choice, function = _tool_choice(data.get("tool_choice"))
    return ChatRequest(
        messages=tuple(map(_message, messages, range(len(messages)))),
        model=_optional(data, "model", str, "a string"),
        max_completion_tokens=_max_tokens(data.get("max_completion_tokens")),
        stop=tuple(_strings(data.get("stop"), "stop")),
        temperature=_number(data, "temperature"),
        top_p=_number(data, "top_p"),
        tools=tuple(_tool(t, f"tools.{i}") for i, t in enumerate(_array(data, "tools"))),
        tool_choice=choice,
        tool_choice_function=function,
    )


def _message(value: Any, index: int) -> Message:
    """One message; its place (``messages.3.role``) is spelled out only for an error:
    a body may hold 100,000 of them."""
    if not isinstance(value, dict):
        raise _field_error(_BODY, "messages", "expected an object", f"messages.{index}")
    if not value.keys() <= _MESSAGE_FIELDS:
        first = min(value.keys() - _MESSAGE_FIELDS)
        raise _parse_error(f"[Message] unknown field [{first}]", f"messages.{index}.{first}")
    role = value.get("role")
    if not isinstance(role, str):
        what = "Required [role]" if role is None else "expected a string"
        raise _field_error("Message", "role", what, f"messages.{index}.role")
    content = value.get("content")
    if content is not None and not isinstance(content, str):
        content = _content(content, f"messages.{index}.content")
    tool_call_id = value.get("tool_call_id")
    if tool_call_id is not None and not isinstance(tool_call_id, str):
        raise _field_error("Message", "tool_call_id", "expected a string",
                           f"messages.{index}.tool_call_id")
    calls = value.get("tool_calls")
    if calls is None:
        return Message(role, content, tool_call_id)
    if not isinstance(calls, list):
        raise _field_error("Message", "tool_calls", "expected an array of tool calls",
                           f"messages.{index}.tool_calls")
    return Message(role, content, tool_call_id,
                   tuple(_tool_call(c, f"messages.{index}.tool_calls.{i}")
                         for i, c in enumerate(calls)))


def _content(value: Any, where: str) -> str | list[dict[str, Any]] | None:
    if value is None or isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise _parse_error("Expected an array start token or a value string token but found "
                           f"token [{_token(value)}]", where)
    for index, part in enumerate(value):
        _check_part(part, f"{where}.{index}")
    return value


def _check_part(part: Any, where: str) -> None:
    """ContentObject.fromMap's checks, with its messages (status_exception, 400)."""
    if not isinstance(part, dict):
        raise _parse_error("Expected an array of content objects but found token "
                           f"[{_token(part)}]", where)
    kind = part.get("type")
    if kind is None:
        raise _content_error("Field [type] in object [content] is required but was not found",
                             f"{where}.type")
    if not isinstance(kind, str):
        raise _content_error(_not_expected("type", "content", str, kind), f"{where}.type")
    kind = kind.strip().lower()
    if kind not in CONTENT_TYPES:
        raise _content_error(f"Unrecognized type [{part['type']}] in object [content], must be "
                             f"one of [{', '.join(CONTENT_TYPES)}]", f"{where}.type")
    extra = [key for key in part if key not in _PART_FIELDS[kind]]
    if extra:
        raise _content_error(f"[content] contains unknown fields [{', '.join(extra)}]", where)
    expected = str if kind == "text" else dict
    if kind not in part:
        raise _content_error(f"Field [{kind}] in object [content] is required but was not found",
                             f"{where}.{kind}")
    if not isinstance(part[kind], expected):
        raise _content_error(_not_expected(kind, "content", expected, part[kind]),
                             f"{where}.{kind}")


def _tool_call(value: Any, where: str) -> ToolCall:
    if not isinstance(value, dict):
        raise _field_error("Message", "tool_calls", "expected an object", where)
    call_id = _required(value, "id", str, "ToolCall", where)
    _required(value, "type", str, "ToolCall", where)
    function = _required(value, "function", dict, "ToolCall", where)
    return ToolCall(id=call_id,
                    name=_required(function, "name", str, "tool_call_function_field",
                                   f"{where}.function"),
                    arguments=_required(function, "arguments", str, "tool_call_function_field",
                                        f"{where}.function"))


def _tool(value: Any, where: str) -> Tool:
    if not isinstance(value, dict):
        raise _field_error(_BODY, "tools", "expected an object", where)
    _required(value, "type", str, "Tool", where)
    function = _required(value, "function", dict, "Tool", where)
    at = f"{where}.function"
    parameters = function.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise _field_error("tool_function_field", "parameters", "expected an object",
                           f"{at}.parameters")
    strict = function.get("strict")
    if strict is not None and not isinstance(strict, bool):
        raise _field_error("tool_function_field", "strict", "expected a boolean", f"{at}.strict")
    return Tool(name=_required(function, "name", str, "tool_function_field", at),
                description=_optional(function, "description", str, "a string",
                                      "tool_function_field", at),
                parameters=parameters, strict=strict)


def _tool_choice(value: Any) -> tuple[str | None, str | None]:
    if value is None or isinstance(value, str):
        return value, None
    if not isinstance(value, dict):
        raise _parse_error(f"Unsupported token [{_token(value)}]", "tool_choice")
    _required(value, "type", str, "ToolChoiceObject", "tool_choice")
    function = _required(value, "function", dict, "ToolChoiceObject", "tool_choice")
    return None, _required(function, "name", str, "tool_choice_function_field",
                           "tool_choice.function")


def _max_tokens(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _field_error(_BODY, "max_completion_tokens", "expected an integer",
                           "max_completion_tokens")
    if value < 1:
        # Not an Elasticsearch check (Anthropic's would answer): said here, in its words.
        raise _invalid(f"[max_completion_tokens] Invalid value [{value}]. "
                       "[max_completion_tokens] must be a positive integer",
                       "max_completion_tokens")
    return value


def _number(data: dict[str, Any], name: str) -> float | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _field_error(_BODY, name, "expected a number", name)
    return float(value)


def _strings(value: Any, name: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _field_error(_BODY, name, "expected an array of strings", name)
    return value


def _array(data: dict[str, Any], name: str) -> list[Any]:
    value = data.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        raise _field_error(_BODY, name, "expected an array of objects", name)
    return value


def _required(holder: dict[str, Any], name: str, kind: type, parser: str, where: str) -> Any:
    value = holder.get(name)
    if value is None:
        raise _field_error(parser, name, f"Required [{name}]", f"{where}.{name}")
    if not isinstance(value, kind):
        what = "a string" if kind is str else "an object"
        raise _field_error(parser, name, f"expected {what}", f"{where}.{name}")
    return value


def _optional(holder: dict[str, Any], name: str, kind: type, what: str, parser: str = _BODY,
              where: str = "") -> Any:
    value = holder.get(name)
    if value is not None and not isinstance(value, kind):
        raise _field_error(parser, name, f"expected {what}", f"{where}.{name}".lstrip("."))
    return value


def _token(value: Any) -> str:
    if isinstance(value, bool):
        return "VALUE_BOOLEAN"
    if isinstance(value, int | float):
        return "VALUE_NUMBER"
    return {str: "VALUE_STRING", dict: "START_OBJECT", list: "START_ARRAY"}.get(
        type(value), "VALUE_NULL")


def _not_expected(name: str, holder: str, expected: type, value: Any) -> str:
    return (f"Field [{name}] in object [{holder}] is not of the expected type. "
            f"Expected [{_JAVA[expected]}] but was [{_JAVA.get(type(value), 'Object')}]")


def _parse_error(reason: str, param: str) -> ESError:
    return ESError(400, "x_content_parse_exception", reason, param=param)


def _field_error(parser: str, name: str, what: str, param: str) -> ESError:
    return _parse_error(f"[{parser}] failed to parse field [{name}]: {what}", param)


def _content_error(reason: str, param: str) -> ESError:
    return ESError(400, "status_exception", reason, param=param)


def _invalid(message: str, param: str) -> ESError:
    error = validation_failed([message], "action_request_validation_exception")
    error.param = param
    return error
