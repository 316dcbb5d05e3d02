"""What differs between the task types, and only that: how a request body is read, how
it becomes Messages API parameters, and how Anthropic's answer is rendered (whole, or per
stream event). Rate limit, queue, retries, timeouts, metrics and caller access are the
same code for every task type (service.py, http.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from inference_operator.api.elasticsearch_body import InferenceRequestBody
from inference_operator.api.settings import TaskType
from inference_operator.gateway import errors, validation
from inference_operator.gateway.chat import chunks, messages
from inference_operator.gateway.chat import request as chat_request
from inference_operator.gateway.endpoints import Endpoint
from inference_operator.gateway.upstream import object_at

# Per stream: each Anthropic event to the data of one ``event: message``, or None.
Translate = Callable[[dict[str, Any]], dict[str, Any] | None]


@dataclass(frozen=True)
class Task:
    parse: Callable[[bytes], Any]
    params: Callable[[Endpoint, Any], dict[str, Any]]
    answer: Callable[[dict[str, Any]], dict[str, Any]]
    translator: Callable[[], Translate]
    # Errors in OpenAI's shape (ESError.unified_body), as Elasticsearch's chat path has.
    unified_errors: bool = False


def for_task_type(task_type: str) -> Task:
    return CHAT if task_type == TaskType.CHAT_COMPLETION else COMPLETION


def _completion_params(endpoint: Endpoint, body: InferenceRequestBody) -> dict[str, Any]:
    inputs = body.inputs()
    if len(inputs) != 1:
        raise errors.bad_request("Anthropic chat completions only accepts 1 input")
    return endpoint.message_params(inputs[0], body.task_settings)


def _completion_answer(message: dict[str, Any]) -> dict[str, Any]:
    # Read as leniently as the SDK does (it does not validate a Message either).
    content = message.get("content")
    return {"completion": [{"result": block.get("text")}
                           for block in content if isinstance(block, dict)
                           and block.get("type") == "text"]
            if isinstance(content, list) else []}


def _completion_delta(event: dict[str, Any]) -> dict[str, Any] | None:
    kind = event.get("type")
    if kind == "content_block_delta":  # per delta, the hot path: handled first
        delta = event.get("delta")
        if isinstance(delta, dict) and delta.get("type") == "text_delta" and delta.get("text"):
            return {"completion": [{"delta": delta["text"]}]}
    elif kind == "content_block_start":
        block = object_at(event, "content_block")
        if block.get("type") == "text" and block.get("text"):
            return {"completion": [{"delta": block["text"]}]}
    return None


COMPLETION = Task(
    parse=lambda raw: validation.parse_inference(raw, TaskType.COMPLETION),
    params=_completion_params,
    answer=_completion_answer,
    translator=lambda: _completion_delta,
)
CHAT = Task(
    parse=chat_request.parse,
    params=messages.message_params,
    answer=chunks.completion,
    translator=lambda: chunks.ChunkStream().chunk,
    unified_errors=True,
)
