"""The InferenceEndpoint API on a real kube-apiserver, installed from the generated crds/
files exactly as a user installs it, and used through kubectl as a user uses it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from inference_endpoint_cases import (
    FAKE_KEY,
    INVALID,
    LITERAL,
    TASK_TYPES,
    VALID,
    Case,
    near_valid_specs,
    valid_spec,
)
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from inference_devkit.controlplane.kubectl import Kubectl
from inference_operator.api import models
from inference_operator.api.crd import openapi_schema
from inference_operator.api.validation import validate_spec
from resources import inference_endpoint

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def shared_namespace(kubectl: Kubectl, api_installed: None) -> Iterator[str]:
    """For requests the API server refuses: they leave nothing behind to isolate."""
    name = f"api-{uuid.uuid4().hex[:8]}"
    kubectl.run("create", "namespace", name)
    yield name
    kubectl.run("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def ns(api_installed: None, namespace: str) -> str:
    return namespace


def _stored(kubectl: Kubectl, name: str, namespace: str) -> dict[str, Any]:
    return kubectl.get(models.PLURAL, name, namespace)


def test_the_kustomize_install_path_holds_the_same_objects(
    kubectl: Kubectl, api_installed: None
) -> None:
    result = kubectl.run("apply", "-k", str(ROOT / "manifests" / "crds"))

    lines = result.stdout.splitlines()
    assert len(lines) == 7, lines  # the CRD, three policies, three bindings
    assert all(line.endswith(" unchanged") for line in lines), lines


def test_the_examples_are_accepted_as_they_are(kubectl: Kubectl, ns: str) -> None:
    result = kubectl.run("apply", "-n", ns, "-f", str(ROOT / "examples"))

    assert "inferenceendpoint.inference-operator.dev/anthropic-completion created" in result.stdout
    assert "secret/anthropic-credentials created" in result.stdout
    assert "Warning" not in result.stderr
    stored = _stored(kubectl, "anthropic-completion", ns)
    assert stored["spec"]["inference_id"] == "anthropic_completion"
    assert stored["spec"]["task_settings"] == {"max_tokens": 1024}
    assert validate_spec(stored["spec"]) == []


def test_omitted_settings_get_their_defaults(kubectl: Kubectl, ns: str) -> None:
    kubectl.apply(inference_endpoint("minimal", valid_spec()), ns)

    settings_ = _stored(kubectl, "minimal", ns)["spec"]["service_settings"]

    assert settings_["api_key"] == {
        "secret_key_ref": {"name": "anthropic-credentials", "key": "api_key"}
    }
    assert settings_["rate_limit"] == {"requests_per_minute": 50}


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_specs_are_accepted(kubectl: Kubectl, ns: str, name: str) -> None:
    kubectl.apply(inference_endpoint(name, VALID[name]), ns)

    assert _stored(kubectl, name, ns)["metadata"]["generation"] == 1


@pytest.mark.parametrize("task_type", TASK_TYPES)
@pytest.mark.parametrize("case", INVALID, ids=lambda case: case.id)
def test_an_invalid_spec_is_refused_with_a_message_naming_field_and_problem(
    kubectl: Kubectl, shared_namespace: str, case: Case, task_type: str
) -> None:
    result = kubectl.apply(
        inference_endpoint(f"invalid-{uuid.uuid4().hex[:8]}", case.spec(task_type)),
        shared_namespace, check=False)

    assert result.returncode != 0, "the API server accepted it"
    assert case.field in result.stderr, result.stderr
    assert case.server in result.stderr, result.stderr
    assert FAKE_KEY not in result.stderr  # refusals never echo a key back
    assert validate_spec(case.spec(task_type)), "the operator's validator accepted it"


def test_a_literal_key_cannot_be_slipped_in_by_an_update(kubectl: Kubectl, ns: str) -> None:
    kubectl.apply(inference_endpoint("later", valid_spec()), ns)
    spec = valid_spec()
    spec["service_settings"]["api_key"] = FAKE_KEY

    result = kubectl.apply(inference_endpoint("later", spec), ns, check=False)

    assert result.returncode != 0
    assert "spec.service_settings.api_key" in result.stderr and LITERAL in result.stderr
    stored = _stored(kubectl, "later", ns)["spec"]["service_settings"]["api_key"]
    assert stored == {"secret_key_ref": {"name": "anthropic-credentials", "key": "api_key"}}


def test_temperature_with_top_p_is_applied_with_a_warning(kubectl: Kubectl, ns: str) -> None:
    spec = valid_spec()
    spec["task_settings"].update(temperature=0.2, top_p=0.9)

    result = kubectl.apply(inference_endpoint("both-samplers", spec), ns)

    assert "created" in result.stdout
    assert "Warning:" in result.stderr
    assert f"spec.task_settings: {models.SAMPLING_WARNING}" in result.stderr
    assert _stored(kubectl, "both-samplers", ns)["spec"]["task_settings"]["top_p"] == 0.9


def _ready_status(generation: int) -> dict[str, Any]:
    now = datetime.now(UTC).replace(microsecond=0)
    status = models.InferenceEndpointStatus(
        observed_generation=generation,
        conditions=[
            models.Condition(
                type=models.ConditionType.READY, status="True", reason=models.Reason.SERVING,
                message="serving at the gateway", last_transition_time=now,
                observed_generation=generation,
            )
        ],
        inference_id="anthropic_completion",
        url="http://inference-operator.inference-operator.svc:9200/_inference/completion/"
        "anthropic_completion",
        secret_resource_version="12345",
    )
    return status.model_dump(mode="json", by_alias=True, exclude_none=True)


def test_get_shows_ready_reason_model_and_id_and_wide_shows_the_message(
    kubectl: Kubectl, ns: str
) -> None:
    kubectl.run("apply", "-n", ns, "-f", str(ROOT / "examples"))
    patch = yaml.safe_dump({"status": {**_ready_status(1), "organisation_limits": {
        "model_class": "sonnet-4", "output_tokens_per_minute": 80_000, "used_percent": 40}}})
    kubectl.run("patch", "iep", "anthropic-completion", "-n", ns, "--subresource=status",
                "--type=merge", "-p", patch)

    table = kubectl.run("get", "iep", "-n", ns).stdout.splitlines()
    wide = kubectl.run("get", "inference", "-n", ns, "-o", "wide").stdout.splitlines()

    assert table[0].split() == ["NAME", "READY", "REASON", "TASK-TYPE", "MODEL", "INFERENCE-ID",
                                "AGE"]
    assert table[1].split()[:6] == [
        "anthropic-completion", "True", "Serving", "completion", "claude-sonnet-4-5",
        "anthropic_completion"
    ]
    assert wide[0].split() == [
        "NAME", "READY", "REASON", "TASK-TYPE", "MODEL", "INFERENCE-ID", "AGE", "MESSAGE",
        "ORG-OUTPUT-TPM", "ORG-USED-PCT"
    ]
    assert wide[1].split("serving at the gateway")[1].split() == ["80000", "40"]


def test_status_is_a_subresource_that_does_not_bump_generation(
    kubectl: Kubectl, ns: str
) -> None:
    kubectl.apply(inference_endpoint("gen", valid_spec()), ns)
    kubectl.run("patch", "iep", "gen", "-n", ns, "--subresource=status", "--type=merge",
                "-p", yaml.safe_dump({"status": _ready_status(1)}))
    assert _stored(kubectl, "gen", ns)["metadata"]["generation"] == 1

    spec = valid_spec()
    spec["task_settings"]["max_tokens"] = 2048
    kubectl.apply(inference_endpoint("gen", spec), ns)

    stored = _stored(kubectl, "gen", ns)
    assert stored["metadata"]["generation"] == 2
    assert stored["status"]["observedGeneration"] == 1  # what kstatus reads as InProgress


def test_a_malformed_condition_is_refused_on_the_status_subresource(
    kubectl: Kubectl, ns: str
) -> None:
    kubectl.apply(inference_endpoint("cond", valid_spec()), ns)
    status = _ready_status(1)
    status["conditions"][0]["status"] = "Yes"
    status["conditions"][0]["reason"] = "not camel case"

    result = kubectl.run("patch", "iep", "cond", "-n", ns, "--subresource=status",
                         "--type=merge", "-p", yaml.safe_dump({"status": status}), check=False)

    assert result.returncode != 0
    assert "status.conditions[0].status" in result.stderr
    assert "status.conditions[0].reason" in result.stderr


def _field_paths(node: dict[str, Any], prefix: str) -> Iterator[tuple[str, str]]:
    for name, child in node.get("properties", {}).items():
        path = f"{prefix}.{name}"
        yield path, child["description"]
        yield from _field_paths(child.get("items", child), path)


def test_explain_describes_every_field(kubectl: Kubectl, api_installed: None) -> None:
    schema = openapi_schema()["properties"]
    fields = [
        *_field_paths(schema["spec"], "inferenceendpoint.spec"),
        *_field_paths(schema["status"], "inferenceendpoint.status"),
    ]
    assert len(fields) > 20

    for path, description in fields:
        out = kubectl.run("explain", path).stdout
        assert "DESCRIPTION:" in out, path
        explained = " ".join(out.split("DESCRIPTION:")[1].split("FIELDS:")[0].split())
        assert explained.startswith(" ".join(description.split()[:6])), (path, explained)


def _server_accepts(api_client: client.ApiClient, namespace: str, spec: Any) -> bool:
    try:
        client.CustomObjectsApi(api_client).create_namespaced_custom_object(
            models.GROUP, models.VERSION, namespace, models.PLURAL,
            inference_endpoint(f"p-{uuid.uuid4().hex[:8]}", spec),
            dry_run="All", field_validation="Strict",  # what kubectl sends
        )
    except ApiException as error:
        assert error.status in (400, 422), error
        return False
    return True


@settings(max_examples=150, deadline=None, database=None)
@given(spec=near_valid_specs)
def test_the_operator_and_the_api_server_agree_on_generated_specs(
    api_client: client.ApiClient, shared_namespace: str, spec: dict[str, Any]
) -> None:
    errors = validate_spec(spec)

    assert _server_accepts(api_client, shared_namespace, spec) == (not errors), errors
