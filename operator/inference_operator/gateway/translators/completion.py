"""``completion``: one input text, answered as ``{"completion":[{"result"}]}`` or, streamed,
one ``{"completion":[{"delta"}]}`` per text delta."""

from __future__ import annotations

from typing import Any

from inference_operator.anthropic.replies import object_at
from inference_operator.api.elasticsearch_body import InferenceRequestBody
from inference_operator.api.settings import TaskType
from inference_operator.gateway import errors, validation
from inference_operator.gateway.endpoints import Endpoint
from inference_operator.gateway.translators.base import Translator


def _params(endpoint: Endpoint, body: InferenceRequestBody) -> dict[str, Any]:
    inputs = body.inputs()
    if len(inputs) != 1:
        raise errors.bad_request("Anthropic chat completions only accepts 1 input")
    return endpoint.message_params(inputs[0], body.task_settings)


def _answer(message: dict[str, Any]) -> dict[str, Any]:
    # Read as leniently as the SDK does (it does not validate a Message either).
    content = message.get("content")
    return {"completion": [{"result": block.get("text")}
                           for block in content if isinstance(block, dict)
                           and block.get("type") == "text"]
            if isinstance(content, list) else []}


def _delta(event: dict[str, Any]) -> dict[str, Any] | None:
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


COMPLETION = Translator(
    parse=lambda raw: validation.parse_inference(raw, TaskType.COMPLETION),
    params=_params,
    answer=_answer,
    events=lambda: _delta,
)
