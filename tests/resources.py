"""The resources tests hand to the API server or to the operator: InferenceEndpoint
manifests and the Secrets holding their API keys. Every test folder imports this module
by name (tests/conftest.py puts tests/ on the path, as for operator_support).

``endpoint`` builds a valid manifest from knobs; ``inference_endpoint`` wraps any spec
(the validation tests' broken ones too); ``secret`` is an API-key Secret. The defaults
are what the session's stack serves: KEY, a known model, and a rate far above any
test's, so that nothing is throttled unless a test asks for it."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from inference_operator.api.models import API_VERSION, KIND
from inference_operator.api.settings import DEFAULT_SECRET_KEY, Service, TaskType

# Distinctive, obviously fake keys: the hygiene checks search every output for them.
KEY = "fake-key-test-PRIMARY-4f1d9c7b2e"
ROTATED_KEY = "fake-key-test-ROTATED-8a3e6b1f0c"
REJECTED_KEY = "fake-key-test-REJECTED-77c2d"
ALL_KEYS = (KEY, ROTATED_KEY, REJECTED_KEY)

MODEL = "claude-sonnet-4-5"
SECRET = "anthropic"
# The creation time of a stored object when a test does not say (claims order by it).
CREATED = "2026-01-01T00:00:00Z"


def endpoint_spec(
    secret: str = SECRET, *, inference_id: str | None = None,
    task_type: str = TaskType.COMPLETION.value, model: str = MODEL,
    max_tokens: int = 64, rpm: int | None = 6000, secret_key: str | None = None,
    task_settings: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A valid spec reading the Secret ``secret`` (its ``secret_key``, when given).
    ``rpm=None`` leaves the rate limit out (the product's default); ``task_settings``
    adds to, or overrides, ``max_tokens``."""
    ref: dict[str, Any] = {"name": secret}
    if secret_key is not None:
        ref["key"] = secret_key
    service_settings: dict[str, Any] = {"api_key": {"secret_key_ref": ref}, "model_id": model}
    if rpm is not None:
        service_settings["rate_limit"] = {"requests_per_minute": rpm}
    spec: dict[str, Any] = {
        "task_type": task_type,
        "service": Service.ANTHROPIC.value,
        "service_settings": service_settings,
        "task_settings": {"max_tokens": max_tokens, **(task_settings or {})},
    }
    if inference_id is not None:
        spec["inference_id"] = inference_id
    return spec


def inference_endpoint(
    name: str, spec: Any, *, namespace: str | None = None,
    labels: Mapping[str, str] | None = None, annotations: Mapping[str, str] | None = None,
    generation: int | None = None, created: str = CREATED,
    status: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An InferenceEndpoint around ``spec``, whatever its shape. With ``generation``, as
    the API server stores it (uid, resourceVersion, creationTimestamp): what the operator
    reads in tests that call it without one."""
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    if labels:
        metadata["labels"] = dict(labels)
    if annotations:
        metadata["annotations"] = dict(annotations)
    if generation is not None:
        metadata |= {"uid": f"uid-{name}", "generation": generation,
                     "resourceVersion": "1", "creationTimestamp": created}
    body: dict[str, Any] = {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata,
                            "spec": spec}
    if status is not None:
        body["status"] = dict(status)
    return body


def endpoint(
    name: str, secret: str = SECRET, *, inference_id: str | None = None,
    task_type: str = TaskType.COMPLETION.value, model: str = MODEL,
    max_tokens: int = 64, rpm: int | None = 6000, secret_key: str | None = None,
    task_settings: Mapping[str, Any] | None = None,
    namespace: str | None = None, labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None, generation: int | None = None,
    created: str = CREATED, status: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A valid InferenceEndpoint: ``endpoint_spec``'s knobs, then ``inference_endpoint``'s."""
    spec = endpoint_spec(secret, inference_id=inference_id, task_type=task_type, model=model,
                         max_tokens=max_tokens, rpm=rpm, secret_key=secret_key,
                         task_settings=task_settings)
    return inference_endpoint(name, spec, namespace=namespace, labels=labels,
                              annotations=annotations, generation=generation,
                              created=created, status=status)


def secret(name: str = SECRET, key: str = KEY, *, data_key: str = DEFAULT_SECRET_KEY,
           namespace: str | None = None) -> dict[str, Any]:
    """An Opaque Secret holding ``key`` under ``data_key``."""
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    return {"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "type": "Opaque",
            "data": {data_key: base64.b64encode(key.encode()).decode()}}


# Spec changes the API server refuses, by test id: (the change, the field and the words its
# message names); the GitOps tests commit them and expect the message in their tool's status.
REFUSED_CHANGES: dict[str, tuple[dict[str, Any], str, str]] = {
    "temperature-7": ({"task_settings": {"max_tokens": 64, "temperature": 7}},
                      "spec.task_settings.temperature", "less than or equal to 1"),
    "literal-api-key": ({"service_settings": {"api_key": "sk-ant-literal", "model_id": MODEL}},
                        "spec.service_settings.api_key", "a literal API key is not allowed here"),
}
