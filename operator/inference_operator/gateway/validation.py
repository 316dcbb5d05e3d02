"""Parse and validate request bodies, reporting errors in Elasticsearch's words.

The rules live in the pydantic models (api/elasticsearch_body.py on api/settings.py);
this module only orders the checks as Elasticsearch does and turns pydantic's errors into
Elasticsearch's messages (reference: elasticsearch-inference-api.md §1-§5)."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from inference_operator import jsoncodec
from inference_operator.api.elasticsearch_body import (
    InferenceRequestBody,
    PutInferenceBody,
    TaskSettingsOverride,
    UpdateInferenceBody,
)
from inference_operator.api.settings import (
    API_KEY_RULE,
    INFERENCE_ID_MAX_LENGTH,
    INFERENCE_ID_RE,
    MODEL_ID_MAX_LENGTH,
    RESERVED_INFERENCE_IDS,
    Service,
    TaskType,
)
from inference_operator.gateway.errors import ESError, bad_request, validation_failed

# Every task type Elasticsearch knows; the anthropic service supports only some of them.
ES_TASK_TYPES = frozenset({
    "text_embedding", "sparse_embedding", "rerank", "completion", "chat_completion",
    "embedding", "any",
})
SUPPORTED_TASK_TYPES = frozenset(t.value for t in TaskType)

# Java type names Elasticsearch prints in "cannot be converted to a [...]".
_JAVA_TYPES = {
    "api_key": "String", "model_id": "String", "max_tokens": "Integer", "top_k": "Integer",
    "temperature": "Double", "top_p": "Double", "requests_per_minute": "Long",
}
# What each bounded field "must be", in the wording of Elasticsearch's messages.
_MUST_BE = {
    "max_tokens": "a positive integer",
    "requests_per_minute": "a positive long",
    "top_k": "a non-negative integer",
    "temperature": "a number between 0.0 and 1.0",
    "top_p": "a number between 0.0 and 1.0",
}
# Never echo these values back: a key in the wrong place must not be reflected.
_SECRET_FIELDS = frozenset({"api_key"})

# Elasticsearch's parser (Jackson) refuses nesting past 1000 levels. Python's json recurses
# per level within the interpreter's limit of 1000 frames, shared with the request's own
# stack, and so does what walks a body after it (validation messages, the upstream encoder's
# fallback): half of Jackson's figure keeps every one of them clear of that limit.
MAX_NESTING_DEPTH = 500

Body = TypeVar("Body", bound=BaseModel)
# Read once: parse_inference is on every inference request's path.
_INFERENCE_FIELDS = frozenset(InferenceRequestBody.model_fields)
_OVERRIDE_FIELDS = frozenset(TaskSettingsOverride.model_fields)


def check_inference_id(inference_id: str) -> None:
    if inference_id in RESERVED_INFERENCE_IDS or not INFERENCE_ID_RE.match(inference_id):
        raise _request_invalid(
            f"Invalid inference_id; '{inference_id}' can contain lowercase alphanumeric "
            "(a-z and 0-9), hyphens or underscores; must start and end with alphanumeric")
    if len(inference_id) > INFERENCE_ID_MAX_LENGTH:
        # Not an Elasticsearch rule: the CRD bounds ids like Kubernetes names, so we do too.
        raise _request_invalid(
            f"Invalid inference_id; must be at most {INFERENCE_ID_MAX_LENGTH} characters")


def _request_invalid(message: str) -> ESError:
    return validation_failed([message], "action_request_validation_exception")


def check_task_type(task_type: str) -> str:
    if task_type not in ES_TASK_TYPES:
        raise bad_request(f"Unknown task_type [{task_type}]")
    return task_type


def load_json(raw: bytes, *, required: bool = True) -> dict[str, Any]:
    if not raw.strip():
        if required:
            raise ESError(400, "parse_exception", "request body is required")
        if not raw:  # an optional body left out; blanks alone are not JSON (found by fuzzing)
            return {}
    if jsoncodec.too_deep(raw, MAX_NESTING_DEPTH):
        raise ESError(400, "x_content_parse_exception",
                      "Failed to parse request body: document nesting depth exceeds the maximum "
                      f"allowed [{MAX_NESTING_DEPTH}]")
    try:
        data = json.loads(raw)  # blanks alone (optional body) fail here: invalid JSON
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ESError(400, "x_content_parse_exception",
                      f"Failed to parse request body: {error}") from None
    if not isinstance(data, dict):
        raise ESError(400, "x_content_parse_exception", "request body must be a JSON object")
    return data


def parse_put(raw: bytes, path_task_type: str | None) -> tuple[PutInferenceBody, str]:
    """The validated body and the resolved task type."""
    return parse_put_data(load_json(raw), path_task_type)


def parse_put_data(data: dict[str, Any], path_task_type: str | None
                   ) -> tuple[PutInferenceBody, str]:
    """``parse_put`` of a body already decoded (a stored record): the same checks, without
    encoding it to JSON again. ``data`` is not changed."""
    service = data.get("service")
    if service is None:
        raise bad_request("Inference endpoint configuration is missing the [service] setting")
    if service != Service.ANTHROPIC:
        raise bad_request(f"Unknown service [{_java_str(service)}]")
    task_type = _resolve_task_type(path_task_type, data.get("task_type"))
    if "service_settings" not in data:
        raise bad_request("Missing required field [service_settings]")
    if "task_settings" not in data:  # absent and empty both lack max_tokens
        data = {**data, "task_settings": {}}
    return _validate(PutInferenceBody, data), task_type


def parse_update(raw: bytes, path_task_type: str | None) -> tuple[UpdateInferenceBody, str | None]:
    data = load_json(raw, required=False)
    if not data:
        raise bad_request("Request body is empty")
    extra = sorted(set(data) - set(UpdateInferenceBody.model_fields))
    settings = data.get("service_settings")
    if isinstance(settings, dict):
        extra += [f"service_settings.{k}" for k in sorted(settings) if k != "api_key"]
    if extra:
        raise bad_request("Request contained fields which cannot be updated, remove these "
                          f"fields and try again [{', '.join(extra)}]")
    body = _validate(UpdateInferenceBody, data)
    task_type = path_task_type if path_task_type not in (None, "any") else body.task_type
    if body.task_type not in (None, "any") and task_type not in (None, body.task_type):
        raise bad_request("Task type must match the task type of the existing endpoint")
    return body, task_type


def parse_inference(raw: bytes, task_type: str) -> InferenceRequestBody:
    data = load_json(raw)
    if "input_type" in data:
        raise _request_invalid(
            f"Field [input_type] cannot be specified for task type [{task_type}]")
    unknown = sorted(data.keys() - _INFERENCE_FIELDS)
    if unknown:
        raise ESError(400, "x_content_parse_exception",
                      f"[inference_request] unknown field [{unknown[0]}]")
    if data.get("input") is None:
        raise _request_invalid("Field [input] cannot be null")
    if data["input"] == []:
        raise _request_invalid("Field [input] cannot be an empty array")
    if not _is_text_or_texts(data["input"]):
        raise ESError(400, "x_content_parse_exception",
                      "[inference_request] failed to parse field [input]: expected a string "
                      "or an array of strings")
    settings = data.get("task_settings")
    unknown = [name for name in settings if name not in _OVERRIDE_FIELDS] if isinstance(
        settings, dict) else []
    if unknown:
        # Found here rather than by pydantic, whose error per unknown name costs most of
        # the CPU a body of nothing else takes; field problems still come first.
        _validate(InferenceRequestBody, {**data, "task_settings": {
            name: value for name, value in settings.items() if name in _OVERRIDE_FIELDS}})
        raise _unknown_settings([f"task_settings.{name}" for name in unknown])
    return _validate(InferenceRequestBody, data)


def _is_text_or_texts(value: Any) -> bool:
    return isinstance(value, str) or (
        isinstance(value, list) and all(isinstance(v, str) for v in value))


def _resolve_task_type(in_path: str | None, in_body: Any) -> str:
    if in_body is not None:
        if not isinstance(in_body, str):
            raise bad_request(f"Unknown task_type [{_java_str(in_body)}]")
        check_task_type(in_body)
        if in_body == "any":
            raise bad_request("task_type [any] is not valid type for inference")
    path = None if in_path == "any" else in_path
    if path and in_body and path != in_body:
        raise bad_request("Cannot resolve conflicting task_type parameter in the request URL "
                          f"[{path}] and the request body [{in_body}]")
    task_type = path or in_body
    if task_type is None:
        raise validation_failed(["model is missing required setting [task_type]"])
    if task_type not in SUPPORTED_TASK_TYPES:
        raise bad_request(
            f"The [{Service.ANTHROPIC}] service does not support task type [{task_type}]")
    return task_type


def _validate(model: type[Body], data: dict[str, Any]) -> Body:
    try:
        return model.model_validate(data, strict=True)
    except ValidationError as error:
        raise _translate(error) from None


def _translate(error: ValidationError) -> ESError:
    """Field problems first, all of them numbered, as one validation_exception; unknown
    settings only when the rest is fine, as Elasticsearch parses before it checks leftovers."""
    messages: list[str] = []
    unknown: list[str] = []
    # Unknown fields may be as many as a body holds: per error only what its message uses.
    for item in error.errors(include_url=False, include_context=False):
        loc = [str(part) for part in item["loc"]]
        kind = item["type"]
        if kind == "extra_forbidden":
            unknown.append(".".join(loc))
            continue
        name = loc[-1]
        scope = loc[-2] if len(loc) > 1 else name
        value = "<redacted>" if name in _SECRET_FIELDS else _java_str(item.get("input"))
        if kind == "missing":
            messages.append(f"[{scope}] does not contain the required setting [{name}]")
        elif kind in {"string_too_short", "too_short"}:
            messages.append(f"[{scope}] Invalid value empty string. "
                            f"[{name}] must be a non-empty string")
        elif kind == "string_too_long" and name == "model_id":  # as the CRD bounds it
            messages.append(f"[{scope}] Invalid value [{value}]. [{name}] must be at most "
                            f"{MODEL_ID_MAX_LENGTH} characters")
        elif kind in {"greater_than_equal", "less_than_equal", "greater_than", "less_than"}:
            messages.append(f"[{scope}] Invalid value [{value}]. [{name}] must be "
                            f"{_MUST_BE.get(name, 'in range')}")
        elif kind == "value_error" and name == "api_key":
            messages.append(f"[{scope}] Invalid value [{value}]. [{name}] must hold "
                            f"{API_KEY_RULE}")
        else:
            java = _JAVA_TYPES.get(name, "Map")
            messages.append(f"field [{name}] is not of the expected type. "
                            f"The value [{value}] cannot be converted to a [{java}]")
    if messages:
        return validation_failed(messages)
    return _unknown_settings(unknown)


def _unknown_settings(names: list[str]) -> ESError:
    # Only names: Elasticsearch also prints values, which could reflect a misplaced key.
    return bad_request(f"Model configuration contains settings [{', '.join(names)}] "
                       f"unknown to the [{Service.ANTHROPIC}] service")


def _java_str(value: Any) -> str:
    """Values as Elasticsearch prints them (Java's toString of maps and lists)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={_java_str(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_java_str(v) for v in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)
