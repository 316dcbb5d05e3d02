"""The CRD and its admission policies as YAML, rendered from the API models: what
``inference-operator crd`` prints and the generated manifests hold."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml

from inference_operator.api import models
from inference_operator.api.crd import custom_resource_definition
from inference_operator.api.policies import admission_policies

HEADER = (
    "# Generated from operator/inference_operator/api by `make generate`; do not edit.\n"
)
CRD_FILE = f"{models.CRD_NAME}.yaml"
POLICIES_FILE = f"{models.CRD_NAME}.policies.yaml"


def to_yaml(documents: Iterable[dict[str, Any]]) -> str:
    return HEADER + yaml.safe_dump_all(list(documents), sort_keys=True, width=100)


def crd_yaml() -> str:
    return to_yaml([custom_resource_definition()])


def policies_yaml() -> str:
    return to_yaml(admission_policies())
