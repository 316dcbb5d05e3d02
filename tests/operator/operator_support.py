"""Helpers for the operator tests: manifests, status probes, gateway and emulator calls."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import Any

from inference_operator.controlplane.kubectl import Kubectl, poll
from inference_operator.devstack.processes import Stack

# Distinctive, obviously fake keys: the hygiene checks search every output for them.
KEY = "sk-ant-test-PRIMARY-4f1d9c7b2e"
ROTATED_KEY = "sk-ant-test-ROTATED-8a3e6b1f0c"
REJECTED_KEY = "sk-ant-test-REJECTED-77c2d"
ALL_KEYS = (KEY, ROTATED_KEY, REJECTED_KEY)


def secret(name: str, key: str = KEY, data_key: str = "api_key") -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
        "type": "Opaque", "data": {data_key: base64.b64encode(key.encode()).decode()},
    }


def endpoint(
    name: str, secret_name: str = "anthropic", *, model: str = "claude-sonnet-4-5",
    max_tokens: int = 64, inference_id: str | None = None, rpm: int = 6000,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "task_type": "completion",
        "service": "anthropic",
        "service_settings": {
            "api_key": {"secret_key_ref": {"name": secret_name}},
            "model_id": model,
            "rate_limit": {"requests_per_minute": rpm},
        },
        "task_settings": {"max_tokens": max_tokens},
    }
    if inference_id:
        spec["inference_id"] = inference_id
    return {
        "apiVersion": "inference-operator.dev/v1alpha1", "kind": "InferenceEndpoint",
        "metadata": {"name": name}, "spec": spec,
    }


def condition(obj: dict[str, Any], kind: str = "Ready") -> dict[str, Any]:
    for item in (obj.get("status") or {}).get("conditions") or ():
        if item["type"] == kind:
            return item
    return {}


def wait_reason(
    kubectl: Kubectl, namespace: str, name: str, reason: str, timeout: float = 30
) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        obj = kubectl.get("iep", name, namespace)
        return obj if condition(obj).get("reason") == reason else None

    return poll(probe, timeout=timeout, interval=0.2, message=f"{name} never reached {reason}")


def http(method: str, url: str, body: Any = None, token: str | None = None,
         timeout: float = 30) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, method=method, data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json",
                 **({"Authorization": f"Bearer {token}"} if token else {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def complete(stack: Stack, inference_id: str, text: str = "hello") -> tuple[int, Any]:
    return http("POST", f"{stack.gateway_url}/_inference/completion/{inference_id}",
                {"input": text})


def emulator_requests(stack: Stack) -> list[dict[str, Any]]:
    return http("GET", f"{stack.emulator_url}/_emulator/requests")[1]
