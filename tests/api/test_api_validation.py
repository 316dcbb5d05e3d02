"""The operator's own check of a spec: same verdicts as the API server, every error with
its field path and a message that says what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from inference_endpoint_cases import (
    FAKE_KEY,
    INVALID,
    TASK_TYPES,
    VALID,
    Case,
    valid_spec,
    valid_specs,
)
from pydantic import ValidationError

from inference_operator.api.elasticsearch_body import PutInferenceBody
from inference_operator.api.models import KIND, InferenceEndpointSpec
from inference_operator.api.settings import MODEL_ID_MAX_LENGTH
from inference_operator.api.validation import spec_warnings, validate_spec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("task_type", TASK_TYPES)
@pytest.mark.parametrize("case", INVALID, ids=lambda case: case.id)
def test_an_invalid_spec_is_refused_naming_the_field_and_the_problem(case: Case,
                                                                      task_type: str) -> None:
    errors = validate_spec(case.spec(task_type))

    assert errors, "accepted"
    assert any(
        error.path.startswith(case.field) and case.operator in error.message for error in errors
    ), errors
    assert FAKE_KEY not in str(errors)  # messages end up in status and Events


@pytest.mark.parametrize("name", sorted(VALID))
def test_a_valid_spec_has_no_errors(name: str) -> None:
    assert validate_spec(VALID[name]) == []


def test_the_shipped_example_is_valid() -> None:
    endpoints = [
        doc for path in EXAMPLES.glob("*.yaml") for doc in yaml.safe_load_all(path.read_text())
        if doc["kind"] == KIND
    ]

    assert endpoints
    for endpoint in endpoints:
        assert validate_spec(endpoint["spec"]) == []


def test_every_error_is_reported_at_once_sorted_by_field() -> None:
    spec = valid_spec()
    spec["inference_id"] = "_all"
    spec["service_settings"]["api_key"] = "example-key-not-a-real-key"
    spec["task_settings"] = {"temperature": 2, "colour": "blue"}

    errors = validate_spec(spec)

    assert [error.path for error in errors] == [
        "spec.inference_id",
        "spec.service_settings.api_key",
        "spec.task_settings.colour",
        "spec.task_settings.max_tokens",
        "spec.task_settings.temperature",
    ]
    assert str(errors[-1]) == (
        "spec.task_settings.temperature: must be less than or equal to 1.0; got 2"
    )


def test_a_non_object_spec_is_one_error_at_the_root() -> None:
    assert [str(error) for error in validate_spec(["completion"])] == [
        "spec: must be an object, not an array"
    ]


def test_temperature_with_top_p_is_valid_but_warned_about() -> None:
    spec = valid_spec()
    spec["task_settings"].update(temperature=0.2, top_p=0.9)

    assert validate_spec(spec) == []
    assert [error.path for error in spec_warnings(spec)] == ["spec.task_settings"]
    assert "temperature and top_p" in spec_warnings(spec)[0].message
    assert spec_warnings(valid_spec()) == []


@settings(database=None)
@given(valid_specs)
def test_what_the_schema_accepts_the_models_accept(spec: dict) -> None:
    assert validate_spec(spec) == []
    InferenceEndpointSpec.model_validate(spec)


@pytest.mark.parametrize("length", [MODEL_ID_MAX_LENGTH, MODEL_ID_MAX_LENGTH + 1])
def test_the_gateway_bounds_model_id_where_the_resource_does(length: int) -> None:
    """The gateway's PUT body (its admin API, and what it reads from the shards) takes a
    model_id exactly when the operator's validator does."""
    spec = valid_spec()
    spec["service_settings"]["model_id"] = "m" * length
    put = {"service": "anthropic", "task_settings": spec["task_settings"],
           "service_settings": {"api_key": FAKE_KEY, "model_id": "m" * length}}

    try:
        PutInferenceBody.model_validate(put, strict=True)
        gateway_accepts = True
    except ValidationError:
        gateway_accepts = False

    assert gateway_accepts == (validate_spec(spec) == []) == (length <= MODEL_ID_MAX_LENGTH)
