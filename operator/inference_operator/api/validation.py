"""The operator's check of an InferenceEndpoint spec, for objects that reached the
cluster under an older or laxer CRD (or without the admission policies).

``jsonschema`` against the canonical schema the CRD is rendered from; every error comes
back with its field path and a sentence a user can act on.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from jsonschema import Draft202012Validator, ValidationError, validators

from inference_operator.api import models
from inference_operator.api.schema import spec_schema
from inference_operator.api.settings import TaskSettings


@dataclass(frozen=True, order=True)
class FieldError:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


_ADDITIONAL_PROPERTIES = Draft202012Validator.VALIDATORS["additionalProperties"]


# jsonschema reports a missing or unknown field at its parent; these two keywords point
# at the field itself instead, as the API server does.
def _required(validator, required, instance, schema) -> Iterator[ValidationError]:
    if validator.is_type(instance, "object"):
        for name in required:
            if name not in instance:
                yield ValidationError("is required", path=[name])


def _no_unknown_fields(validator, additional, instance, schema) -> Iterator[ValidationError]:
    if additional is not False or not validator.is_type(instance, "object"):
        yield from _ADDITIONAL_PROPERTIES(validator, additional, instance, schema)
        return
    for name in sorted(set(instance) - set(schema.get("properties", {}))):
        yield ValidationError("unknown field", path=[name])


_Validator = validators.extend(
    Draft202012Validator,
    {"required": _required, "additionalProperties": _no_unknown_fields},
)

_JSON_TYPES = {
    dict: "an object", list: "an array", str: "a string", bool: "a boolean",
    int: "an integer", float: "a number", type(None): "null",
}
_ARTICLES = {"integer": "an integer", "object": "an object", "array": "an array"}


def _describe(error: ValidationError) -> str:
    if override := error.schema.get(models.MESSAGES, {}).get(error.validator):
        return override
    value, got = error.validator_value, json.dumps(error.instance)
    match error.validator:
        case "type":
            wanted = _ARTICLES.get(value, f"a {value}")
            return f"must be {wanted}, not {_JSON_TYPES.get(type(error.instance), 'that')}"
        case "enum":
            return f"must be one of {', '.join(map(str, value))}; got {got}"
        case "minimum":
            return f"must be greater than or equal to {value}; got {got}"
        case "maximum":
            return f"must be less than or equal to {value}; got {got}"
        case "minLength":
            return "must not be empty" if value == 1 else f"must be at least {value} characters"
        case "maxLength":
            return f"must be at most {value} characters"
        case "pattern":
            return f"must match the pattern {value}; got {got}"
    return error.message


def _path(error: ValidationError, prefix: str) -> str:
    path = prefix
    for part in error.absolute_path:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


@cache
def _validator() -> Draft202012Validator:
    schema = spec_schema()
    _Validator.check_schema(schema)
    return _Validator(schema)


def validate_spec(spec: Any, prefix: str = "spec") -> list[FieldError]:
    """Every problem with ``spec``, sorted by field path; empty when it is valid."""
    return sorted(
        {FieldError(_path(error, prefix), _describe(error))
         for error in _validator().iter_errors(spec)}
    )


def spec_warnings(spec: Mapping[str, Any], prefix: str = "spec") -> list[FieldError]:
    """Allowed but doubtful settings; the admission policy warns about the same ones."""
    task_settings = spec.get("task_settings")
    if not isinstance(task_settings, Mapping):
        return []
    settings = TaskSettings.model_construct(**task_settings)
    if settings.sets_temperature_and_top_p():
        return [FieldError(f"{prefix}.task_settings", models.SAMPLING_WARNING)]
    return []
