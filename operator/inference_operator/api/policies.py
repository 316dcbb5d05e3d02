"""ValidatingAdmissionPolicies shipped beside the CRD: checks a CRD cannot express with a
useful message, run by the API server itself (no webhook server to operate).

The spec and sampling policies come with their bindings. The inference-id policies take
their parameters from a ConfigMap an administrator owns (data: id prefix -> comma-separated
namespaces), so their bindings, which name it, come from the chart (templates/admission.yaml)
or from the administrator; without a binding they do nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from inference_operator.api import models
from inference_operator.api.schema import Schema, spec_schema

ADMISSION = "admissionregistration.k8s.io/v1"
DENY_POLICY = f"{models.SINGULAR}-spec.{models.GROUP}"
WARN_POLICY = f"{models.SINGULAR}-sampling.{models.GROUP}"
ID_PREFIX_POLICY = f"{models.SINGULAR}-id-prefixes.{models.GROUP}"
ID_NAMESPACE_POLICY = f"{models.SINGULAR}-id-namespace.{models.GROUP}"

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


# The effective id (what the operator serves), the bound prefixes it starts with, the longest
# of them (a more specific binding wins: "team-" to platform, "team-a-" to team-a), and the
# namespaces that one allows. An empty or missing ConfigMap binds nothing.
_ID_VARIABLES = [
    {"name": "id", "expression": "has(object.spec.inference_id) ? object.spec.inference_id "
                                 ": object.metadata.name"},
    {"name": "field", "expression": "has(object.spec.inference_id) ? 'spec.inference_id' "
                                    ": 'metadata.name (the default inference_id)'"},
    {"name": "matching", "expression": "params != null && has(params.data) ? "
                                       "params.data.filter(p, variables.id.startsWith(p)) : []"},
    {"name": "bound", "expression": "variables.matching.filter(p, "
                                    "variables.matching.all(q, size(q) <= size(p)))"},
    {"name": "allowed", "expression": "size(variables.bound) == 0 ? [] : "
                                      "params.data[variables.bound[0]].split(',')"
                                      ".map(n, n.trim())"},
    {"name": "configmap", "expression": "params == null ? 'none' : "
                                        "params.metadata.namespace + '/' + params.metadata.name"},
]
_REFUSED_ID = 'variables.field + ": inference id \'" + variables.id + "\' "'


def _id_validations() -> list[dict[str, str]]:
    return [{
        "expression": "size(variables.bound) == 0 || request.namespace in variables.allowed",
        "messageExpression": f'{_REFUSED_ID} + "starts with \'" + variables.bound[0] + '
        '"\', a prefix reserved for namespace " + variables.allowed.join(", ") + '
        '" (ConfigMap " + variables.configmap + "); choose an id outside it or ask an '
        'administrator to allow namespace " + request.namespace',
        "message": "the inference id starts with a prefix reserved for other namespaces",
        "reason": "Forbidden",
    }]


def _namespace_validations() -> list[dict[str, str]]:
    # An id under a bound prefix is judged by the prefix policy alone.
    return [{
        "expression": "size(variables.bound) > 0 || variables.id == request.namespace "
        "|| variables.id.startsWith(request.namespace + '-')",
        "messageExpression": f'{_REFUSED_ID} + "must start with \'" + request.namespace + '
        '"-\' (the namespace\'s name) unless an administrator binds a prefix of it to the '
        'namespace (ConfigMap " + variables.configmap + ")"',
        "message": "the inference id must start with the namespace's name and '-'",
        "reason": "Forbidden",
    }]


def _policy(
    name: str, validations: list[dict[str, str]], failure_policy: str,
    parameterised: bool = False,
) -> dict[str, Any]:
    params: dict[str, Any] = (
        {"paramKind": {"apiVersion": "v1", "kind": "ConfigMap"}, "variables": _ID_VARIABLES}
        if parameterised else {}
    )
    return {
        "apiVersion": ADMISSION,
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "inference-operator"}},
        "spec": {
            **params,
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
        # Bound by the chart with its ConfigMap; an id a policy cannot judge is refused.
        _policy(ID_PREFIX_POLICY, _id_validations(), "Fail", parameterised=True),
        _policy(ID_NAMESPACE_POLICY, _namespace_validations(), "Fail", parameterised=True),
    ]
