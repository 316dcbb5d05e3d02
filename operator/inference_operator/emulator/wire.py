"""Anthropic Messages API wire format: the request schema and its rules, deterministic
replies, Message JSON, SSE events and error bodies, shaped like the real API so the
official SDK parses all of them. The reply rules are in docs/emulator.md."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from itertools import count
from typing import Annotated, Any, Literal, TypeVar, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag

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

GREETING = "Hello from the Anthropic emulator. You said:"
TOOL_SAID = "Hello from the Anthropic emulator. The tool said:"
JSON_PIECE = 8  # characters of tool input per input_json_delta

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


# --- Requests -------------------------------------------------------------------------


def _as_blocks(value: Any) -> Any:
    # A string is shorthand for one text block; anything else that is not a list gets the
    # list error, as from the real API.
    return [{"type": "text", "text": value}] if isinstance(value, str) else value


class _Block(BaseModel):
    # Real blocks carry more fields (cache_control, citations, ...): accepted, unused.
    model_config = ConfigDict(extra="allow")


class TextBlock(_Block):
    type: Literal["text"]
    text: str


class ImageBlock(_Block):
    type: Literal["image"]
    source: dict[str, Any]


class DocumentBlock(_Block):
    type: Literal["document"]
    source: dict[str, Any]


class ToolUseBlock(_Block):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]


TextBlocks = Annotated[list[TextBlock], BeforeValidator(_as_blocks)]


class ToolResultBlock(_Block):
    type: Literal["tool_result"]
    tool_use_id: str
    content: TextBlocks = Field(default_factory=list)
    is_error: bool = False

    @property
    def text(self) -> str:
        return " ".join(block.text for block in self.content)


ContentBlock = Annotated[
    TextBlock | ImageBlock | DocumentBlock | ToolUseBlock | ToolResultBlock,
    Field(discriminator="type"),
]
B = TypeVar("B", bound=_Block)


class Message(BaseModel):
    role: Literal["user", "assistant"]
    content: Annotated[list[ContentBlock], BeforeValidator(_as_blocks)]

    def blocks(self, kind: type[B]) -> list[tuple[int, B]]:
        return [(i, block) for i, block in enumerate(self.content) if isinstance(block, kind)]

    @property
    def text(self) -> str:
        return " ".join(block.text for _, block in self.blocks(TextBlock))

    def tool_use_ids(self) -> list[str]:
        return [block.id for _, block in self.blocks(ToolUseBlock)]


class InputSchema(BaseModel):
    model_config = ConfigDict(extra="allow")  # any other JSON Schema keyword

    type: Literal["object"]
    properties: dict[str, dict[str, Any]] = Field(default_factory=dict)
    required: list[str] | None = None


class CustomTool(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["custom"] | None = None
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    input_schema: InputSchema

    def named_in(self, text: str) -> bool:
        # A whole word: no name character (letter, digit, _ or -) on either side.
        return re.search(rf"(?<![\w-]){re.escape(self.name)}(?![\w-])", text) is not None

    def example_input(self, text: str) -> dict[str, Any]:
        schema = self.input_schema
        wanted = schema.properties if schema.required is None else schema.required
        return {name: _example(prop.get("type"), text)
                for name, prop in schema.properties.items() if name in wanted}


def _example(kind: Any, text: str) -> Any:
    match kind:
        case "string":
            return text
        case "integer" | "number":
            return len(text.split())
        case "boolean":
            return True
        case "array":
            return []
        case "object":
            return {}
    return None


def _tool_tag(value: Any) -> str:
    return (value.get("type") or "custom") if isinstance(value, dict) else "custom"


# The real API's tools are a tagged union (custom and server tools) and its errors name
# the tag (``tools.0.custom.name``); the emulator has custom tools only.
Tool = Annotated[
    Union[Annotated[CustomTool, Tag("custom")]],  # noqa: UP007 (a union of one)
    Discriminator(_tool_tag, custom_error_type="invalid_tool_type",
                  custom_error_message="the emulator has custom tools only"),
]


class ToolChoiceAuto(BaseModel):
    type: Literal["auto"]
    disable_parallel_tool_use: bool = False


class ToolChoiceAny(BaseModel):
    type: Literal["any"]
    disable_parallel_tool_use: bool = False


class ToolChoiceTool(BaseModel):
    type: Literal["tool"]
    name: str
    disable_parallel_tool_use: bool = False


class ToolChoiceNone(BaseModel):
    type: Literal["none"]


ToolChoice = Annotated[
    ToolChoiceAuto | ToolChoiceAny | ToolChoiceTool | ToolChoiceNone, Field(discriminator="type")
]


class MessagesRequest(BaseModel):
    # The fields the emulator has no use for (temperature, metadata, ...) are accepted.
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    max_tokens: int = Field(ge=1)
    messages: list[Message] = Field(min_length=1)
    system: TextBlocks = Field(default_factory=list)  # recorded, never used
    tools: list[Tool] = Field(default_factory=list)
    tool_choice: ToolChoice | None = None
    stop_sequences: list[Annotated[str, Field(min_length=1)]] | None = None
    stream: bool = False

    def problem(self) -> str | None:
        """What the real API refuses beyond the schema, in its words; None when valid."""
        return self._conversation_problem() or self._tools_problem()

    def _conversation_problem(self) -> str | None:
        if self.messages[0].role != "user":
            return 'messages: first message must use the "user" role'
        for n in range(len(self.messages)):
            if problem := self._unexpected_result(n) or self._unanswered_use(n):
                return problem
        return None

    def _unexpected_result(self, n: int) -> str | None:
        asked = self.messages[n - 1].tool_use_ids() if n else []
        for m, result in self.messages[n].blocks(ToolResultBlock):
            if result.tool_use_id not in asked:
                return (f"messages.{n}.content.{m}: unexpected `tool_use_id` found in "
                        f"`tool_result` blocks: {result.tool_use_id}. Each `tool_result` block "
                        "must have a corresponding `tool_use` block in the previous message.")
        return None

    def _unanswered_use(self, n: int) -> str | None:
        if n + 1 == len(self.messages):
            return None  # a trailing assistant turn is a prefill: nothing can answer it yet
        answered = {r.tool_use_id for _, r in self.messages[n + 1].blocks(ToolResultBlock)}
        missing = [i for i in self.messages[n].tool_use_ids() if i not in answered]
        return (f"messages.{n}: `tool_use` ids were found without `tool_result` blocks "
                f"immediately after: {', '.join(missing)}. Each `tool_use` block must have a "
                "corresponding `tool_result` block in the next message.") if missing else None

    def _tools_problem(self) -> str | None:
        names = [tool.name for tool in self.tools]
        if len(set(names)) < len(names):
            return "tools: Tool names must be unique."
        if "tool_choice" in self.model_fields_set and self.tool_choice is None:
            return "tool_choice: Input should be an object"
        if self.tool_choice is not None and not self.tools:
            return "tool_choice may only be specified while providing tools."
        if isinstance(self.tool_choice, ToolChoiceTool) and self.tool_choice.name not in names:
            return f"tool_choice.name: Tool '{self.tool_choice.name}' not found in tools"
        return None

    def last_user_message(self) -> Message | None:
        return next((m for m in reversed(self.messages) if m.role == "user"), None)

    def tool_to_call(self, text: str) -> CustomTool | None:
        """The tool the reply calls, given the last user message's text (the rule is in
        docs/emulator.md)."""
        choice = self.tool_choice
        if isinstance(choice, ToolChoiceNone):
            return None
        if isinstance(choice, ToolChoiceTool):
            return next(tool for tool in self.tools if tool.name == choice.name)
        named = next((tool for tool in self.tools if tool.named_in(text)), None)
        if named is None and isinstance(choice, ToolChoiceAny):
            return self.tools[0]
        return named


# --- Replies --------------------------------------------------------------------------


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    input: dict[str, Any]

    def block(self, streamed: bool = False) -> dict[str, Any]:
        # A streamed tool_use block starts empty; its input follows as input_json_delta.
        return {"type": "tool_use", "id": self.id, "name": self.name,
                "input": {} if streamed else self.input}

    def json_pieces(self) -> list[str]:
        encoded = json.dumps(self.input, separators=(",", ":"))
        return [encoded[i:i + JSON_PIECE] for i in range(0, len(encoded), JSON_PIECE)]


@dataclass(frozen=True)
class Reply:
    """One deterministic completion: the same request always gets the same reply."""

    model: str
    input_tokens: int
    deltas: list[str]
    stop_reason: str
    stop_sequence: str | None = None
    tool_call: ToolCall | None = None

    @classmethod
    def for_request(cls, request: MessagesRequest) -> Reply:
        last = request.last_user_message()
        prompt = last.text if last else ""
        results = [block.text for _, block in last.blocks(ToolResultBlock)] if last else []
        tool = None if results else request.tool_to_call(prompt)
        if results:
            text = f"{TOOL_SAID} {' '.join(results)}"
        elif tool is not None:
            text = f"I will call {tool.name}."
        else:
            text = f"{GREETING} {prompt}"
        deltas, stop_reason, stop_sequence = _cut(
            tokens(text), request.max_tokens, request.stop_sequences or []
        )
        # The tool is called only when its text ended naturally, as a model's would.
        call = (ToolCall(next_id("toolu"), tool.name, tool.example_input(prompt))
                if tool is not None and stop_reason == "end_turn" else None)
        return cls(
            model=request.model,
            input_tokens=max(1, len(tokens(prompt))),
            deltas=deltas,
            stop_reason="tool_use" if call else stop_reason,
            stop_sequence=stop_sequence,
            tool_call=call,
        )

    @property
    def text(self) -> str:
        return "".join(self.deltas)

    @property
    def output_tokens(self) -> int:
        pieces = self.tool_call.json_pieces() if self.tool_call else []
        return len(self.deltas) + len(pieces)

    def message(self) -> dict[str, Any]:
        content = [{"type": "text", "text": self.text}]
        if self.tool_call:
            content.append(self.tool_call.block())
        return {
            "id": next_id("msg"),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": self.stop_reason,
            "stop_sequence": self.stop_sequence,
            "usage": {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens},
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
            _block_start(0, {"type": "text", "text": ""}),
            sse("ping", {"type": "ping"}),
        ]

    def stream_deltas(self) -> list[bytes]:
        """One item per delta, text then tool input JSON. The tool_use block's start rides
        with its first delta, so faults and latency count deltas only."""
        deltas = [_delta(0, {"type": "text_delta", "text": text}) for text in self.deltas]
        if self.tool_call:
            pieces = [_delta(1, {"type": "input_json_delta", "partial_json": piece})
                      for piece in self.tool_call.json_pieces()]
            pieces[0] = _block_stop(0) + _block_start(1, self.tool_call.block(streamed=True)) \
                + pieces[0]
            deltas += pieces
        return deltas

    def stream_tail(self) -> list[bytes]:
        return [
            _block_stop(1 if self.tool_call else 0),
            sse("message_delta", {
                "type": "message_delta",
                "delta": {"stop_reason": self.stop_reason, "stop_sequence": self.stop_sequence},
                "usage": {"output_tokens": self.output_tokens},
            }),
            sse("message_stop", {"type": "message_stop"}),
        ]


def _cut(words: list[str], max_tokens: int,
         stop_sequences: list[str]) -> tuple[list[str], str, str | None]:
    """(deltas, stop reason, stop sequence): the text ends before the earliest stop
    sequence (on a tie, the first listed) unless max_tokens ends it sooner."""
    text = "".join(words)
    hits = sorted((text.find(s), n, s) for n, s in enumerate(stop_sequences) if s in text)
    if hits:
        words = _before(words, hits[0][0])
    if len(words) > max_tokens:
        return words[:max_tokens], "max_tokens", None
    return (words, "stop_sequence", hits[0][2]) if hits else (words, "end_turn", None)


def _before(words: list[str], position: int) -> list[str]:
    """The deltas that make up ``text[:position]``, the last one cut where it ends."""
    kept: list[str] = []
    for word in words:
        if len(word) >= position:
            return [*kept, word[:position]] if position else kept
        kept.append(word)
        position -= len(word)
    return kept


def _block_start(index: int, block: dict[str, Any]) -> bytes:
    return sse("content_block_start",
               {"type": "content_block_start", "index": index, "content_block": block})


def _delta(index: int, delta: dict[str, Any]) -> bytes:
    return sse("content_block_delta", {"type": "content_block_delta", "index": index,
                                       "delta": delta})


def _block_stop(index: int) -> bytes:
    return sse("content_block_stop", {"type": "content_block_stop", "index": index})


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
