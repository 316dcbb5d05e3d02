"""PUT bodies are validated with Elasticsearch's status, error type and wording (the error
table of elasticsearch-inference-api.md §4 and the settings rules of §2)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from gateway_support import API_KEY, SEED_BODY, RunningGateway


def body(**changes: Any) -> dict[str, Any]:
    """The seed body with dotted paths set (value ``...`` deletes the field)."""
    result = copy.deepcopy(SEED_BODY)
    for dotted, value in changes.items():
        *parents, name = dotted.split("__")
        target = result
        for parent in parents:
            target = target.setdefault(parent, {})
        if value is ...:
            target.pop(name, None)
        else:
            target[name] = value
    return result


def failed(*messages: str) -> str:
    return "Validation Failed: " + "".join(f"{i}: {m};" for i, m in enumerate(messages, 1))


def unknown(setting: str) -> str:
    return f"Model configuration contains settings [{setting}] unknown to the [anthropic] service"


def invalid_id(inference_id: str) -> str:
    return failed(f"Invalid inference_id; '{inference_id}' can contain lowercase alphanumeric "
                  "(a-z and 0-9), hyphens or underscores; must start and end with alphanumeric")


KEY_RULE = failed("[service_settings] Invalid value [<redacted>]. [api_key] must hold only "
                  "visible ASCII characters, at most 4096 (it is sent as an HTTP header)")
STATUS, VALIDATION = "status_exception", "validation_exception"

# Every answer is a 400. (id, path, body, type, reason)
PATH_CASES = [
    ("invalid id", "/_inference/completion/Bad_ID", SEED_BODY,
     "action_request_validation_exception", invalid_id("Bad_ID")),
    ("id ends with dash", "/_inference/completion/abc-", SEED_BODY,
     "action_request_validation_exception", invalid_id("abc-")),
    ("unknown task type in path", "/_inference/bogus/x", SEED_BODY, STATUS,
     "Unknown task_type [bogus]"),
    ("unsupported task type", "/_inference/text_embedding/x", SEED_BODY, STATUS,
     "The [anthropic] service does not support task type [text_embedding]"),
    ("no task type anywhere", "/_inference/x", SEED_BODY, VALIDATION,
     failed("model is missing required setting [task_type]")),
    ("task type any in body", "/_inference/x", body(task_type="any"), STATUS,
     "task_type [any] is not valid type for inference"),
]
# PUT /_inference/completion/x, each a 400. (id, body, type, reason)
BODY_CASES = [
    ("conflicting task types", body(task_type="rerank"), STATUS,
     "Cannot resolve conflicting task_type parameter in the request URL [completion] and "
     "the request body [rerank]"),
    ("missing service", body(service=...), STATUS,
     "Inference endpoint configuration is missing the [service] setting"),
    ("unknown service", body(service="openai"), STATUS, "Unknown service [openai]"),
    ("missing service_settings", body(service_settings=...), STATUS,
     "Missing required field [service_settings]"),
    ("missing model_id", body(service_settings__model_id=...), VALIDATION,
     failed("[service_settings] does not contain the required setting [model_id]")),
    ("missing api_key", body(service_settings__api_key=...), VALIDATION,
     failed("[service_settings] does not contain the required setting [api_key]")),
    ("empty model_id", body(service_settings__model_id=""), VALIDATION,
     failed("[service_settings] Invalid value empty string. [model_id] must be a non-empty "
            "string")),
    ("model_id too long", body(service_settings__model_id="m" * 257), VALIDATION,
     failed(f"[service_settings] Invalid value [{'m' * 257}]. [model_id] must be at most 256 "
            "characters")),
    ("model_id wrong type", body(service_settings__model_id=5), VALIDATION,
     failed("field [model_id] is not of the expected type. The value [5] cannot be converted "
            "to a [String]")),
    ("rpm zero", body(service_settings__rate_limit__requests_per_minute=0), VALIDATION,
     failed("[rate_limit] Invalid value [0]. [requests_per_minute] must be a positive long")),
    ("missing task_settings", body(task_settings=...), VALIDATION,
     failed("[task_settings] does not contain the required setting [max_tokens]")),
    ("max_tokens zero", body(task_settings__max_tokens=0), VALIDATION,
     failed("[task_settings] Invalid value [0]. [max_tokens] must be a positive integer")),
    ("max_tokens float", body(task_settings__max_tokens=1.5), VALIDATION,
     failed("field [max_tokens] is not of the expected type. The value [1.5] cannot be "
            "converted to a [Integer]")),
    ("temperature out of range", body(task_settings__temperature=1.5), VALIDATION,
     failed("[task_settings] Invalid value [1.5]. [temperature] must be a number between 0.0 "
            "and 1.0")),
    ("several errors at once", body(task_settings__max_tokens=0, task_settings__top_k=-1,
                                    service_settings__model_id=...), VALIDATION,
     failed("[service_settings] does not contain the required setting [model_id]",
            "[task_settings] Invalid value [0]. [max_tokens] must be a positive integer",
            "[task_settings] Invalid value [-1]. [top_k] must be a non-negative integer")),
    ("unknown top-level field", body(chunking_settings={}), STATUS,
     unknown("chunking_settings")),
    ("unknown service setting", body(service_settings__url="u"), STATUS,
     unknown("service_settings.url")),
    ("unknown task setting", body(task_settings__stop="x"), STATUS,
     unknown("task_settings.stop")),
    ("no body", None, "parse_exception", "request body is required"),
    # Found by fuzzing: a key an HTTP header cannot carry made every call of it a 500.
    ("a key with a newline", body(service_settings__api_key="fake-key\nhidden"), VALIDATION,
     KEY_RULE),
    # Published into a configuration shard every namespace shares.
    ("a key past 4 KiB", body(service_settings__api_key="k" * 4097), VALIDATION, KEY_RULE),
    ("a key with a space", body(service_settings__api_key="fake key"), VALIDATION, KEY_RULE),
]
CASES = PATH_CASES + [(name, "/_inference/completion/x", *rest) for name, *rest in BODY_CASES]


@pytest.mark.parametrize(("path", "payload", "error_type", "reason"),
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
async def test_put_error_table(gateway: RunningGateway, path, payload, error_type,
                               reason) -> None:
    got, headers, answer = await gateway.call("PUT", path, payload, admin=True)
    assert got == 400
    assert headers["X-Elastic-Product"] == "Elasticsearch"
    assert answer == {"error": {"root_cause": [{"type": error_type, "reason": reason}],
                                "type": error_type, "reason": reason}, "status": 400}


async def test_invalid_json(gateway: RunningGateway) -> None:
    status, _, answer = await gateway.call("PUT", "/_inference/completion/x", raw=b"{nope",
                                           admin=True)
    assert status == 400 and answer["error"]["type"] == "x_content_parse_exception"


async def test_misplaced_key_is_not_echoed(gateway: RunningGateway) -> None:
    for payload in (body(service_settings__apikey=API_KEY),
                    body(service_settings__api_key=[API_KEY])):
        status, _, answer = await gateway.call("PUT", "/_inference/completion/x", payload,
                                               admin=True)
        assert status == 400
        assert API_KEY not in str(answer)


async def test_optional_settings_accepted(gateway: RunningGateway) -> None:
    payload = body(task_settings__temperature=0.2, task_settings__top_p=0.9,
                   task_settings__top_k=40, service_settings__rate_limit={
                       "requests_per_minute": 10})
    status, _, answer = await gateway.call("PUT", "/_inference/x", {
        **payload, "task_type": "completion"}, admin=True)
    assert status == 200, answer
    assert answer["task_settings"] == {"max_tokens": 1024, "temperature": 0.2, "top_k": 40,
                                       "top_p": 0.9}
    assert answer["service_settings"]["rate_limit"] == {"requests_per_minute": 10}
