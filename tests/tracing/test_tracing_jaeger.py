"""What a platform team finds in its trace backend, with a real one (Jaeger v2, its OTLP
receiver fed by the SDK's own OTLP/HTTP exporter): a call with a ``traceparent`` through
the standalone gateway, and through the dev stack (operator, config-mode gateway, emulator
against the control plane), is one trace under the caller's span with the GenAI
attributes; the operator's reconciles are traces of their own; no key, caller token or
prompt in anything exported."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.gateway_support import seed_body
from inference_devkit.controlplane.jaeger import RunningJaeger
from inference_devkit.controlplane.kubectl import Kubectl
from inference_devkit.devstack.processes import Stack
from operator_support import restarted_with, wait_caught_up
from resources import KEY, endpoint, secret
from tracing_support import Span, trace, traces_of

PROMPT = "the secret prompt 2c9e"
CALLER_TOKEN = "caller-token-a41d7"


def _call(url: str, trace_id: str, caller_span: str) -> int:
    request = urllib.request.Request(
        url, method="POST", data=json.dumps({"input": PROMPT}).encode(),
        headers={"Content-Type": "application/json",
                 "traceparent": f"00-{trace_id}-{caller_span}-01",
                 "Authorization": f"Bearer {CALLER_TOKEN}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status


def _assert_one_call(server: Span, client: Span, caller_span: str, model: str) -> None:
    assert server.parent_id == caller_span
    assert server.name == "POST /_inference/{task_type}/{inference_id}"
    assert client.parent_id == server.span_id and client.name == f"chat {model}"
    for span in (server, client):
        attributes = span.attributes
        assert attributes["gen_ai.operation.name"] == "chat"
        assert attributes["gen_ai.provider.name"] == "anthropic"
        assert attributes["gen_ai.request.model"] == model
        assert attributes["gen_ai.response.id"].startswith("msg_")
        assert attributes["gen_ai.usage.input_tokens"] > 0
        assert attributes["gen_ai.usage.output_tokens"] > 0
        assert attributes["gen_ai.response.finish_reasons"] == ("end_turn",)
    assert server.attributes["http.response.status_code"] == 200


def test_a_call_through_the_standalone_gateway_is_one_trace_under_the_callers_span(
        jaeger: RunningJaeger, tmp_path: Path) -> None:
    stack = Stack(tmp_path, api_keys=(), admin_token="admin-token-for-tracing")
    try:
        stack.start(stack.emulator())
        gateway = stack.gateway()
        gateway.env.update(jaeger.exporting_env())
        stack.start(gateway)
        body = seed_body()
        request = urllib.request.Request(
            f"{stack.admin_url}/_inference/completion/traced", method="PUT",
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {stack.admin_token}",
                     "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200

        trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
        assert _call(f"{stack.gateway_url}/_inference/completion/traced", trace_id,
                     "00f067aa0ba902b7") == 200

        found = trace(jaeger, trace_id, spans=2)
        (server,) = found.of("inference-gateway", "SERVER")
        (client,) = found.of("inference-gateway", "CLIENT")
        _assert_one_call(server, client, "00f067aa0ba902b7",
                         body["service_settings"]["model_id"])
        for secret_text in (body["service_settings"]["api_key"], CALLER_TOKEN, PROMPT,
                            stack.admin_token):
            assert secret_text not in found.raw
    finally:
        stack.stop()


@pytest.fixture
def traced_stack(stack: Stack, jaeger: RunningJaeger) -> Iterator[Stack]:
    """The session's dev stack, its gateway and operator restarted with tracing on (a
    second operator would fight the session's over every endpoint), then put back."""
    with restarted_with(stack.services["gateway"], env=jaeger.exporting_env()), \
            restarted_with(stack.services["operator"], env=jaeger.exporting_env()):
        yield stack


def test_a_call_through_the_dev_stack_is_one_trace_and_the_reconcile_another(
        jaeger: RunningJaeger, traced_stack: Stack, kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(secret(namespace=namespace))
    kubectl.apply(endpoint("traced", namespace=namespace))
    ready = wait_caught_up(kubectl, namespace, "traced")
    inference_id = ready["status"]["inference_id"]
    model = ready["spec"]["service_settings"]["model_id"]
    trace_id, caller_span = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"

    assert _call(f"{traced_stack.gateway_url}/_inference/completion/{inference_id}",
                 trace_id, caller_span) == 200

    found = trace(jaeger, trace_id, spans=2)
    (server,) = found.of("inference-gateway", "SERVER")
    (client,) = found.of("inference-gateway", "CLIENT")
    _assert_one_call(server, client, caller_span, model)
    assert server.attributes["inference_gateway.inference_id"] == inference_id
    for secret_text in (KEY, CALLER_TOKEN, PROMPT):
        assert secret_text not in found.raw

    reconciles = traces_of(jaeger, "inference-operator", "reconcile InferenceEndpoint")
    ours = [s for s in reconciles.of("inference-operator")
            if s.name == "reconcile InferenceEndpoint"
            and s.attributes.get("inference_operator.endpoint.namespace") == namespace]
    assert any(s.attributes.get("inference_operator.ready") for s in ours), ours
    steps = {s.name for s in reconciles.of("inference-operator")
             if s.parent_id in {r.span_id for r in ours}}
    assert {"publish", "wait for gateways", "write status"} <= steps
    assert KEY not in reconciles.raw
