"""The gateway's routes, listeners and response shapes (PRODUCT §4)."""

from __future__ import annotations

import pytest
from gateway_support import (
    API_KEY,
    MODEL,
    SEED_BODY,
    RunningEmulator,
    RunningGateway,
    seed_body,
)
from prometheus_client.parser import text_string_to_metric_families

PUBLIC_CONFIG = {
    "inference_id": "anthropic_completion",
    "task_type": "completion",
    "service": "anthropic",
    "service_settings": {"model_id": MODEL, "rate_limit": {"requests_per_minute": 50}},
    "task_settings": {"max_tokens": 1024},
}


def assert_es_error(payload, status: int, error_type: str, reason: str) -> None:
    assert payload == {
        "error": {"root_cause": [{"type": error_type, "reason": reason}],
                  "type": error_type, "reason": reason},
        "status": status,
    }


async def test_put_echoes_config_without_key(gateway: RunningGateway) -> None:
    status, headers, payload = await gateway.call(
        "PUT", "/_inference/completion/anthropic_completion", SEED_BODY, admin=True)
    assert status == 200 and payload == PUBLIC_CONFIG
    assert headers["X-Elastic-Product"] == "Elasticsearch"


async def test_put_twice_is_already_exists_across_task_types(gateway: RunningGateway) -> None:
    await gateway.put()
    typed = {**SEED_BODY, "task_type": "completion"}
    for path, body in [("/_inference/completion/anthropic_completion", SEED_BODY),
                       ("/_inference/anthropic_completion", typed)]:
        status, _, payload = await gateway.call("PUT", path, body, admin=True)
        assert_es_error(payload, 400, "resource_already_exists_exception",
                        "Inference endpoint [anthropic_completion] already exists")
        assert status == 400


async def test_get_routes(gateway: RunningGateway) -> None:
    for inference_id in ("zeta", "alpha", "mid.dle-1"):
        await gateway.put(inference_id)
    ids = ["alpha", "mid.dle-1", "zeta"]
    for path in ("/_inference", "/_inference/_all", "/_inference/*",
                 "/_inference/completion/_all", "/_inference/any/_all"):
        for admin in (False, True):
            status, _, payload = await gateway.call("GET", path, admin=admin)
            assert status == 200, path
            assert [e["inference_id"] for e in payload["endpoints"]] == ids
    status, _, payload = await gateway.call("GET", "/_inference/alpha")
    assert status == 200 and [e["inference_id"] for e in payload["endpoints"]] == ["alpha"]
    status, _, payload = await gateway.call("GET", "/_inference/completion/alpha")
    assert status == 200 and len(payload["endpoints"]) == 1
    status, _, payload = await gateway.call("GET", "/_inference/text_embedding/_all")
    assert status == 200 and payload == {"endpoints": []}


async def test_get_errors(gateway: RunningGateway) -> None:
    await gateway.put()
    status, _, payload = await gateway.call("GET", "/_inference/nope")
    assert status == 404
    assert_es_error(payload, 404, "resource_not_found_exception",
                    "Inference endpoint not found [nope]")
    # One segment is always an id, as in Elasticsearch.
    status, _, _ = await gateway.call("GET", "/_inference/completion")
    assert status == 404
    status, _, payload = await gateway.call("GET", "/_inference/rerank/anthropic_completion")
    assert_es_error(payload, 400, "status_exception",
                    "Requested task type [rerank] does not match the inference endpoint's "
                    "task type [completion]")
    status, _, payload = await gateway.call("GET", "/_inference/bogus/anthropic_completion")
    assert_es_error(payload, 400, "status_exception", "Unknown task_type [bogus]")


async def test_delete(gateway: RunningGateway) -> None:
    await gateway.put()
    status, _, payload = await gateway.call(
        "DELETE", "/_inference/anthropic_completion?dry_run=true", admin=True)
    assert payload == {"acknowledged": False, "pipelines": [], "indexes": [], "error_message": ""}
    status, _, payload = await gateway.call(
        "DELETE", "/_inference/completion/anthropic_completion", admin=True)
    assert status == 200 and payload == {"acknowledged": True, "pipelines": [], "indexes": []}
    status, _, _ = await gateway.call("DELETE", "/_inference/anthropic_completion", admin=True)
    assert status == 404


@pytest.mark.parametrize("method", ["PUT", "POST"])
async def test_update_key_and_task_settings(gateway: RunningGateway, emulator: RunningEmulator,
                                            method: str) -> None:
    await gateway.put()
    status, _, payload = await gateway.call(
        method, "/_inference/completion/anthropic_completion/_update",
        {"service_settings": {"api_key": "sk-rotated"},
         "task_settings": {"max_tokens": 7, "temperature": 0.5}}, admin=True)
    assert status == 200, payload
    assert payload["task_settings"] == {"max_tokens": 7, "temperature": 0.5}
    assert "api_key" not in str(payload)
    status, _, payload = await gateway.call(
        "POST", "/_inference/completion/anthropic_completion", {"input": "x"})
    assert status == 200
    sent = emulator.requests()[-1]
    assert sent.body["max_tokens"] == 7 and sent.body["temperature"] == 0.5


@pytest.mark.parametrize(("path", "body", "status", "error_type", "reason"), [
    ("/_inference/nope/_update", {"task_settings": {"max_tokens": 1}}, 404,
     "resource_not_found_exception", "Inference endpoint not found [nope]"),
    ("/_inference/anthropic_completion/_update", {}, 400, "status_exception",
     "Request body is empty"),
    ("/_inference/anthropic_completion/_update", {"service": "anthropic"}, 400,
     "status_exception", "Request contained fields which cannot be updated, remove these "
     "fields and try again [service]"),
    ("/_inference/anthropic_completion/_update",
     {"service_settings": {"model_id": "claude-other"}}, 400, "status_exception",
     "Request contained fields which cannot be updated, remove these fields and try again "
     "[service_settings.model_id]"),
    ("/_inference/rerank/anthropic_completion/_update", {"task_settings": {"max_tokens": 1}},
     400, "status_exception", "Task type must match the task type of the existing endpoint"),
    ("/_inference/anthropic_completion/_update", {"task_settings": {"temperature": 0.1}}, 400,
     "validation_exception",
     "Validation Failed: 1: [task_settings] does not contain the required setting [max_tokens];"),
])
async def test_update_errors(gateway: RunningGateway, path, body, status, error_type,
                             reason) -> None:
    await gateway.put()
    got, _, payload = await gateway.call("PUT", path, body, admin=True)
    assert got == status
    assert_es_error(payload, status, error_type, reason)


async def test_admin_requires_bearer_token(gateway: RunningGateway) -> None:
    for token in (None, "wrong"):
        status, headers, payload = await gateway.call(
            "PUT", "/_inference/completion/x", SEED_BODY, admin=True, token=token)
        assert status == 401
        assert headers["WWW-Authenticate"].startswith("Bearer")
        assert headers["X-Elastic-Product"] == "Elasticsearch"
        assert_es_error(payload, 401, "security_exception",
                        "missing authentication credentials for REST request "
                        "[/_inference/completion/x]")
    status, _, _ = await gateway.call("GET", "/_inference", admin=True, token=None)
    assert status == 401


@pytest.mark.parametrize(("method", "path"), [
    ("PUT", "/_inference/completion/x"),
    ("PUT", "/_inference/x"),
    ("DELETE", "/_inference/anthropic_completion"),
    ("PUT", "/_inference/anthropic_completion/_update"),
    ("POST", "/_inference/completion/anthropic_completion/_update"),
])
async def test_public_listener_refuses_writes(gateway: RunningGateway, method, path) -> None:
    await gateway.put()
    status, headers, payload = await gateway.call(method, path, SEED_BODY)
    assert status == 405
    assert headers["X-Elastic-Product"] == "Elasticsearch"
    assert payload["status"] == 405 and payload["error"]["type"] == "status_exception"
    assert "the public listener accepts no writes" in payload["error"]["reason"]
    _, _, listing = await gateway.call("GET", "/_inference")
    assert [e["inference_id"] for e in listing["endpoints"]] == ["anthropic_completion"]


async def test_unknown_routes_are_es_errors(gateway: RunningGateway) -> None:
    status, headers, payload = await gateway.call("GET", "/nope")
    assert status == 400 and headers["X-Elastic-Product"] == "Elasticsearch"
    assert_es_error(payload, 400, "illegal_argument_exception",
                    "no handler found for uri [/nope] and method [GET]")


async def test_completion(gateway: RunningGateway, emulator: RunningEmulator) -> None:
    await gateway.put()
    for path in ("/_inference/completion/anthropic_completion", "/_inference/anthropic_completion"):
        status, headers, payload = await gateway.call("POST", path, {"input": "What is Elastic?"})
        assert status == 200
        assert headers["X-Elastic-Product"] == "Elasticsearch"
        assert payload == {"completion": [
            {"result": "Hello from the Anthropic emulator. You said: What is Elastic?"}]}
    sent = emulator.requests()[-1].body
    assert sent == {"model": MODEL, "max_tokens": 1024,
                    "messages": [{"role": "user", "content": "What is Elastic?"}]}


async def test_task_settings_override(gateway: RunningGateway, emulator: RunningEmulator) -> None:
    await gateway.put()
    status, _, _ = await gateway.call("POST", "/_inference/completion/anthropic_completion", {
        "input": ["one"], "task_settings": {"temperature": 0.3, "top_k": 5}})
    assert status == 200
    sent = emulator.requests()[-1].body
    assert (sent["max_tokens"], sent["temperature"], sent["top_k"]) == (1024, 0.3, 5)


@pytest.mark.parametrize(("path", "body", "status", "error_type", "reason"), [
    ("/_inference/completion/anthropic_completion", {"input": ["a", "b"]}, 400,
     "status_exception", "Anthropic chat completions only accepts 1 input"),
    ("/_inference/completion/nope", {"input": "a"}, 404, "resource_not_found_exception",
     "Inference endpoint not found [nope]"),
    ("/_inference/completion/anthropic_completion", {}, 400,
     "action_request_validation_exception", "Validation Failed: 1: Field [input] cannot be null;"),
    ("/_inference/completion/anthropic_completion", {"input": []}, 400,
     "action_request_validation_exception",
     "Validation Failed: 1: Field [input] cannot be an empty array;"),
    ("/_inference/completion/anthropic_completion", {"input": "a", "input_type": "search"}, 400,
     "action_request_validation_exception",
     "Validation Failed: 1: Field [input_type] cannot be specified for task type [completion];"),
    ("/_inference/completion/anthropic_completion", {"input": "a", "query": "q"}, 400,
     "x_content_parse_exception", "[inference_request] unknown field [query]"),
    ("/_inference/rerank/anthropic_completion", {"input": "a"}, 400, "status_exception",
     "Incompatible task_type, the requested type [rerank] does not match the model type "
     "[completion]"),
    ("/_inference/completion/anthropic_completion?timeout=soon", {"input": "a"}, 400,
     "parse_exception", "failed to parse setting [timeout] with value [soon] as a time value: "
     "unit is missing or unrecognized"),
])
async def test_inference_errors(gateway: RunningGateway, emulator: RunningEmulator, path, body,
                                status, error_type, reason) -> None:
    await gateway.put()
    got, _, payload = await gateway.call("POST", path, body)
    assert got == status
    assert_es_error(payload, status, error_type, reason)
    assert emulator.requests() == []  # refused before any upstream call


async def test_probes(gateway: RunningGateway) -> None:
    """A standalone gateway is ready as soon as it listens: nothing is pushed to it."""
    await gateway.put("keep")
    status, headers, health = await gateway.call("GET", "/healthz")
    assert status == 200 and headers["X-Elastic-Product"]
    assert health == {"status": "ok", "endpoints": 1, "replicas": 1}
    for admin in (False, True):
        status, _, ready = await gateway.call("GET", "/readyz", admin=admin, token=None)
        assert status == 200 and ready == {"ready": True}
    # No push protocol: "_sync" is no route of its own, just an id that cannot exist.
    status, _, payload = await gateway.call("POST", "/_inference/_sync", {"input": "x"},
                                            admin=True)
    assert status == 404 and payload["error"]["type"] == "resource_not_found_exception"
    status, headers, text = await gateway.call("GET", "/metrics")
    assert status == 200 and "inference_gateway_ready 1.0" in text
    assert headers["X-Elastic-Product"] == "Elasticsearch"


async def test_a_deleted_endpoints_series_leave_the_metrics(gateway: RunningGateway) -> None:
    """A cluster that churns endpoints must not grow /metrics without bound."""
    async def series() -> int:
        _, _, text = await gateway.call("GET", "/metrics")
        return sum(len(family.samples) for family in text_string_to_metric_families(text))

    before = await series()
    ids = [f"churn-{i}" for i in range(1000)]
    body = seed_body(requests_per_minute=600_000)  # one key and model: one shared bucket
    for inference_id in ids:
        await gateway.put(inference_id, body)
        status, _, _ = await gateway.call("POST", f"/_inference/completion/{inference_id}",
                                          {"input": "hi"})
        assert status == 200
    assert await series() > before + 10 * len(ids)  # each left several series
    for inference_id in ids:
        status, _, _ = await gateway.call("DELETE", f"/_inference/{inference_id}", admin=True)
        assert status == 200
    assert await series() == before


async def test_metrics_per_endpoint(gateway: RunningGateway) -> None:
    await gateway.put()
    await gateway.call("POST", "/_inference/completion/anthropic_completion", {"input": "hi"})
    await gateway.call("POST", "/_inference/completion/unknown-id", {"input": "hi"})
    _, _, text = await gateway.call("GET", "/metrics")
    for line in [
        'inference_gateway_requests_total{inference_id="anthropic_completion",status="200",'
        'stream="false"} 1.0',
        'inference_gateway_requests_total{inference_id="_unknown",status="404",stream="false"} 1.0',
        'inference_gateway_upstream_requests_total{inference_id="anthropic_completion",'
        'status="200"} 1.0',
        'inference_gateway_tokens_total{inference_id="anthropic_completion",kind="input"} 1.0',
        'inference_gateway_queue_wait_seconds_count{inference_id="anthropic_completion"} 1.0',
        "inference_gateway_endpoints 1.0",
    ]:
        assert line in text
    assert API_KEY not in text
