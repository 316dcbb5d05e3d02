"""ValidatingAdmissionPolicies shipped beside the CRD: checks a CRD cannot express with a
useful message, run by the API server itself (no webhook server to operate)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from inference_operator.api import models
from inference_operator.api.schema import Schema, spec_schema

ADMISSION = "admissionregistration.k8s.io/v1"
DENY_POLICY = f"{models.SINGULAR}-spec.{models.GROUP}"
WARN_POLICY = f"{models.SINGULAR}-sampling.{models.GROUP}"

# Only spec changes are judged: the operator must always be able to edit metadata
# (finalizers) of an object that was stored before these policies were installed.
_SPEC_CHANGED = {
    "name": "spec-changed",
    "expression": "request.operation == 'CREATE' || object.spec != oldObject.spec",
}


Path = tuple[str, ...]


def _untyped_objects(node: Schema, path: Path) -> Iterator[tuple[Path, Schema]]:
    """Object nodes whose type check the CRD leaves to this policy (see crd._structural)."""
    if "type" in node.get(models.MESSAGES, {}):
        yield path, node
    for name, child in node.get("properties", {}).items():
        yield from _untyped_objects(child, (*path, name))


def _refuse_other_shapes(path: Path, node: Schema) -> list[dict[str, str]]:
    *parents, name = path
    # The node is untyped in the CRD's schema, so the policy's type check would call it an
    # undefined field; through dyn() it is looked up at run time, where it exists.
    ref = f"dyn(object.{'.'.join(parents)}).{name}"
    guard = " && ".join(
        [f"has(object.{'.'.join(parents[:depth])})" for depth in range(1, len(parents) + 1)]
        + [f"has({ref})"]
    )
    allowed = sorted(node["properties"])
    field = ".".join(path)
    return [
        {
            "expression": f"!({guard}) || type({ref}) == map",
            "message": f"{field}: {node[models.MESSAGES]['type']}",
            "reason": "Invalid",
        },
        {
            "expression": f"!({guard}) || type({ref}) != map || {ref}.all(k, k in {allowed})",
            "messageExpression": f"'{field}: unknown field(s) ' + "
            f"{ref}.filter(k, !(k in {allowed})).join(', ') + '; allowed: {', '.join(allowed)}'",
            "message": f"{field}: unknown field; allowed: {', '.join(allowed)}",
            "reason": "Invalid",
        },
    ]


def _policy(name: str, validations: list[dict[str, str]], failure_policy: str) -> dict[str, Any]:
    return {
        "apiVersion": ADMISSION,
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "inference-operator"}},
        "spec": {
            "failurePolicy": failure_policy,
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [models.GROUP],
                        "apiVersions": ["*"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": [models.PLURAL],
                        # Spelled out: a server-filled default in this atomic list would
                        # make every re-apply report "configured".
                        "scope": "Namespaced",
                    }
                ]
            },
            "matchConditions": [_SPEC_CHANGED],
            "validations": validations,
        },
    }


def _binding(policy: str, action: str) -> dict[str, Any]:
    return {
        "apiVersion": ADMISSION,
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": policy, "labels": {"app.kubernetes.io/part-of": "inference-operator"}},
        "spec": {"policyName": policy, "validationActions": [action]},
    }


def admission_policies() -> list[dict[str, Any]]:
    deny = [
        rule
        for path, node in _untyped_objects(spec_schema(), ("spec",))
        for rule in _refuse_other_shapes(path, node)
    ]
    task = "object.spec.task_settings"
    warn = [
        {
            "expression": f"!has(object.spec.task_settings) || !has({task}.temperature) "
            f"|| !has({task}.top_p)",
            "message": f"spec.task_settings: {models.SAMPLING_WARNING}",
        }
    ]
    return [
        # A literal key must never be stored, so a policy that cannot run refuses.
        _policy(DENY_POLICY, deny, "Fail"),
        _binding(DENY_POLICY, "Deny"),
        # A warning is advice; it must never block an apply.
        _policy(WARN_POLICY, warn, "Ignore"),
        _binding(WARN_POLICY, "Warn"),
    ]
