"""ValidatingAdmissionPolicies shipped beside the CRD: checks a CRD cannot express with a
useful message, run by the API server itself (no webhook server to operate).

The inference-id policy carries its settings (the prefixes reserved for namespaces, the
strict mode) as CEL literals in two variables that the chart fills from its values
(templates/crds.yaml) and an administrator may patch; both empty here. Not a ConfigMap
parameter: the API server stops watching ConfigMap parameters for good once no binding
names that kind for a second (kubernetes/kubernetes#130887), after which reservations
would silently go stale."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from inference_operator.api import models
from inference_operator.api.schema import Schema, spec_schema

ADMISSION = "admissionregistration.k8s.io/v1"
DENY_POLICY = f"{models.SINGULAR}-spec.{models.GROUP}"
WARN_POLICY = f"{models.SINGULAR}-sampling.{models.GROUP}"
ID_POLICY = f"{models.SINGULAR}-id.{models.GROUP}"
# Its settings: a CEL map of id prefix to the namespaces allowed to use it, and a bool.
PREFIXES_VARIABLE = "prefixes"
STRICT_VARIABLE = "requireNamespacePrefix"

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


# The settings, then the effective id (what the operator serves), the bound prefixes it
# starts with, the longest of them (a more specific binding wins: "team-" to platform,
# "team-a-" to team-a), and the namespaces that one allows.
_ID_VARIABLES = [
    {"name": PREFIXES_VARIABLE, "expression": "{}"},
    {"name": STRICT_VARIABLE, "expression": "false"},
    {"name": "id", "expression": "has(object.spec.inference_id) ? object.spec.inference_id "
                                 ": object.metadata.name"},
    {"name": "field", "expression": "has(object.spec.inference_id) ? 'spec.inference_id' "
                                    ": 'metadata.name (the default inference_id)'"},
    {"name": "matching", "expression": f"variables.{PREFIXES_VARIABLE}"
                                       ".filter(p, variables.id.startsWith(p))"},
    {"name": "bound", "expression": "variables.matching.filter(p, "
                                    "variables.matching.all(q, size(q) <= size(p)))"},
    {"name": "allowed", "expression": "size(variables.bound) == 0 ? [] : "
                                      f"variables.{PREFIXES_VARIABLE}[variables.bound[0]]"},
]
_REFUSED_ID = 'variables.field + ": inference id \'" + variables.id + "\' "'


def _id_validations() -> list[dict[str, str]]:
    return [
        {
            "expression": "size(variables.bound) == 0 || request.namespace in variables.allowed",
            "messageExpression": f'{_REFUSED_ID} + "starts with \'" + variables.bound[0] + '
            '"\', a prefix reserved for namespace " + variables.allowed.join(", ") + '
            '"; choose an id outside it or ask an administrator to allow namespace " + '
            'request.namespace',
            "message": "the inference id starts with a prefix reserved for other namespaces",
            "reason": "Forbidden",
        },
        {
            # An id under a bound prefix is judged by the rule above alone.
            "expression": f"!variables.{STRICT_VARIABLE} || size(variables.bound) > 0 "
            "|| variables.id == request.namespace "
            "|| variables.id.startsWith(request.namespace + '-')",
            "messageExpression": f'{_REFUSED_ID} + "must start with \'" + request.namespace + '
            '"-\' (the namespace\'s name) unless an administrator binds a prefix of it to the '
            'namespace"',
            "message": "the inference id must start with the namespace's name and '-'",
            "reason": "Forbidden",
        },
    ]


def _policy(
    name: str, validations: list[dict[str, str]], failure_policy: str,
    variables: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": ADMISSION,
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "inference-operator"}},
        "spec": {
            **({"variables": variables} if variables else {}),
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
        # Reserves nothing until its prefixes are set; an id it cannot judge is refused.
        _policy(ID_POLICY, _id_validations(), "Fail", _ID_VARIABLES),
        _binding(ID_POLICY, "Deny"),
    ]
