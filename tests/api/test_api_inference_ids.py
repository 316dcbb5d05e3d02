"""Inference ids an administrator reserves for namespaces (docs/install.md, "Reserving
inference ids"): the generated id policy on a real kube-apiserver, its settings set as the
chart sets them and as an administrator patches them.

The API server is shared by the whole session, so this module binds copies of the policy
under names of its own, limited to its namespaces (a label), and every prefix carries
this module's tag."""

from __future__ import annotations

import copy
import json
import statistics
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from inference_devkit.controlplane.kubectl import Kubectl, KubectlError
from inference_devkit.waiting import poll
from inference_operator.api import models, policies
from resources import endpoint

TAG = uuid.uuid4().hex[:6]
LABEL = "inference-operator.dev/test-inference-ids"
TEAM_A = f"{TAG}-team-a-"
SHARED = f"{TAG}-team-a-shared-"  # longer than TEAM_A: it decides for the ids under it
RESERVED_FOR = "a prefix reserved for namespace"


@dataclass(frozen=True)
class Tenants:
    a: str
    b: str
    c: str
    strict: str  # the only namespace where ids must start with the namespace's name
    policy: str  # this module's copy of the policy that every namespace here is bound to
    prefixes: dict[str, list[str]]  # its prefixes

    def __getitem__(self, role: str) -> str:
        return getattr(self, role)


def _name() -> str:
    return f"r-{uuid.uuid4().hex[:8]}"


def _apply(kubectl: Kubectl, namespace: str, name: str, inference_id: str | None,
           *extra: str) -> subprocess.CompletedProcess[str]:
    """Create or update an endpoint; without ``inference_id`` its id is ``name``."""
    return kubectl.apply(endpoint(name, inference_id=inference_id), namespace, *extra, check=False)


def _refused(kubectl: Kubectl, namespace: str, inference_id: str) -> bool:
    return _apply(kubectl, namespace, _name(), inference_id, "--dry-run=server").returncode != 0


def _set_prefixes(kubectl: Kubectl, policy: str, prefixes: dict[str, list[str]]) -> None:
    """What docs/install.md tells an administrator of the plain manifests to run."""
    patch = [{"op": "replace", "path": "/spec/variables/0/expression",
              "value": json.dumps(prefixes)}]
    # From stdin: thousands of prefixes are past the length of a command line.
    kubectl.run("patch", "validatingadmissionpolicy", policy, "--type=json",
                "--patch-file=/dev/stdin", stdin=json.dumps(patch))


def _bound_copy(name: str, prefixes: dict[str, list[str]], strict: bool,
                labels: list[str]) -> list[dict[str, Any]]:
    """The generated policy under ``name`` with these settings, bound to the namespaces
    labelled with one of ``labels``."""
    (policy,) = [copy.deepcopy(d) for d in policies.admission_policies()
                 if d["kind"] == "ValidatingAdmissionPolicy"
                 and d["metadata"]["name"] == policies.ID_POLICY]
    policy["metadata"]["name"] = name
    settings = {policies.PREFIXES_VARIABLE: json.dumps(prefixes),
                policies.STRICT_VARIABLE: json.dumps(strict)}
    assert [v["name"] for v in policy["spec"]["variables"][:2]] == list(settings)
    for variable in policy["spec"]["variables"][:2]:
        variable["expression"] = settings[variable["name"]]
    selector = {"key": LABEL, "operator": "In", "values": labels}
    binding = {
        "apiVersion": policy["apiVersion"], "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"],
                 "matchResources": {"namespaceSelector": {"matchExpressions": [selector]}}},
    }
    return [policy, binding]


@pytest.fixture(scope="module")
def tenants(kubectl: Kubectl, api_installed: None) -> Iterator[Tenants]:
    names = {role: f"{role}-{TAG}" for role in ("a", "b", "c", "strict")}
    for role, name in names.items():
        kubectl.run("create", "namespace", name)
        kubectl.run("label", "namespace", name, f"{LABEL}={'strict' if role == 'strict' else 'on'}")
    prefixes = {TEAM_A: [names["a"]], SHARED: [names["a"], names["b"]],
                f"{TAG}-shared-": [names["strict"]]}
    copies = [*_bound_copy(f"ids-{TAG}", prefixes, False, ["on", "strict"]),
              *_bound_copy(f"ids-strict-{TAG}", prefixes, True, ["strict"])]
    kubectl.apply(copies)
    tenants = Tenants(names["a"], names["b"], names["c"], names["strict"], f"ids-{TAG}",
                      prefixes)
    poll(lambda: _refused(kubectl, tenants.b, f"{TEAM_A}probe")
         and _refused(kubectl, tenants.strict, f"probe-{TAG}"),
         timeout=30, message="the id policies are bound")
    yield tenants
    for document in reversed(copies):
        kubectl.run("delete", document["kind"].lower(), document["metadata"]["name"],
                    check=False)
    for name in names.values():
        kubectl.run("delete", "namespace", name, "--wait=false", check=False)


@dataclass(frozen=True)
class IdCase:
    id: str
    namespace: str  # a role of Tenants
    inference_id: str | None  # None: the id is metadata.name, given by `name`
    refused: str | None = None  # what the refusal says, after "<field>: inference id '<id>' "
    name: str = ""


def _cases() -> list[IdCase]:
    reserved_a = f"starts with '{TEAM_A}', {RESERVED_FOR} a-{TAG};"
    reserved_ab = f"starts with '{SHARED}', {RESERVED_FOR} a-{TAG}, b-{TAG};"
    strict = f"must start with 'strict-{TAG}-' (the namespace's name) unless"
    return [
        IdCase("reserved-id-in-another-namespace", "b", f"{TEAM_A}chat", reserved_a),
        IdCase("reserved-id-in-its-namespace", "a", f"{TEAM_A}chat"),
        IdCase("reserved-name-in-another-namespace", "b", None, reserved_a,
               name=f"{TEAM_A}named"),
        IdCase("reserved-name-in-its-namespace", "a", None, name=f"{TEAM_A}named"),
        IdCase("longest-prefix-allows-b", "b", f"{SHARED}chat"),
        IdCase("longest-prefix-refuses-c", "c", f"{SHARED}chat", reserved_ab),
        IdCase("unbound-id-anywhere", "c", f"{TAG}-team-b-chat"),
        IdCase("unbound-name-anywhere", "b", None, name=f"{TAG}-chat"),
        IdCase("strict-own-name", "strict", f"strict-{TAG}-chat"),
        IdCase("strict-namespace-name-itself", "strict", f"strict-{TAG}"),
        IdCase("strict-other-id", "strict", f"chat-{TAG}", strict),
        IdCase("strict-other-name", "strict", None, strict, name=f"named-{TAG}"),
        IdCase("strict-allowed-by-a-bound-prefix", "strict", f"{TAG}-shared-chat"),
        IdCase("strict-reserved-for-others", "strict", f"{TEAM_A}chat", reserved_a),
    ]


@pytest.mark.parametrize("case", _cases(), ids=lambda case: case.id)
def test_an_id_is_admitted_only_within_its_namespaces_allowance(
    kubectl: Kubectl, tenants: Tenants, case: IdCase
) -> None:
    namespace, name = tenants[case.namespace], case.name or _name()

    result = _apply(kubectl, namespace, name, case.inference_id)

    if case.refused is None:
        assert result.returncode == 0, result.stderr
        return
    inference_id = case.inference_id or name
    field = "spec.inference_id" if case.inference_id else "metadata.name (the default inference_id)"
    assert result.returncode != 0, f"{inference_id} was admitted in {namespace}"
    assert f"{field}: inference id '{inference_id}' {case.refused}" in result.stderr, result.stderr
    assert kubectl.run("get", models.PLURAL, name, "-n", namespace, check=False).returncode != 0


def test_an_update_cannot_move_an_id_under_a_prefix_reserved_for_others(
    kubectl: Kubectl, tenants: Tenants
) -> None:
    name = _name()
    assert _apply(kubectl, tenants.c, name, f"{TAG}-mine").returncode == 0

    result = _apply(kubectl, tenants.c, name, f"{TEAM_A}mine")

    assert result.returncode != 0
    assert f"inference id '{TEAM_A}mine' starts with '{TEAM_A}'" in result.stderr
    stored = kubectl.get(models.PLURAL, name, tenants.c)
    assert stored["spec"]["inference_id"] == f"{TAG}-mine"


def test_changed_prefixes_take_effect_and_never_block_metadata_changes(
    kubectl: Kubectl, tenants: Tenants
) -> None:
    late = f"{TAG}-late-"
    before = _name()  # created while its id is free: an administrator reserves it later
    assert _apply(kubectl, tenants.b, before, f"{late}before").returncode == 0

    _set_prefixes(kubectl, tenants.policy, {**tenants.prefixes, late: [tenants.a]})
    try:
        poll(lambda: _refused(kubectl, tenants.b, f"{late}after"), timeout=30,
             message="the new prefix is in force")

        assert not _refused(kubectl, tenants.a, f"{late}after")
        # The operator's finalizer and a tool's labels go on and off as before ...
        kubectl.run("label", models.PLURAL, before, "-n", tenants.b, "team=b")
        # ... but the resource's own spec is judged again.
        spec_change = kubectl.run("patch", models.PLURAL, before, "-n", tenants.b,
                                  "--type=merge", "-p",
                                  '{"spec":{"task_settings":{"max_tokens":2048}}}', check=False)
        assert spec_change.returncode != 0
        assert f"'{late}', {RESERVED_FOR} {tenants.a};" in spec_change.stderr
    finally:
        _set_prefixes(kubectl, tenants.policy, tenants.prefixes)
    poll(lambda: not _refused(kubectl, tenants.b, f"{late}after"), timeout=30,
         message="the removed prefix is free again")


def _admission_ms(api_client: client.ApiClient, namespace: str, inference_id: str) -> float:
    """Milliseconds of one create (dry run) of an endpoint with ``inference_id``."""
    started = time.perf_counter()
    try:
        client.CustomObjectsApi(api_client).create_namespaced_custom_object(
            models.GROUP, models.VERSION, namespace, models.PLURAL,
            endpoint(_name(), inference_id=inference_id), dry_run="All")
    except ApiException as error:
        assert error.status == 403 and "a prefix reserved for namespace" in error.body, error.body
    return (time.perf_counter() - started) * 1000


@pytest.mark.parametrize("count", [0, 1000, 2500])
def test_thousands_of_prefixes_still_decide_every_write(
    kubectl: Kubectl, api_client: client.ApiClient, tenants: Tenants, count: int
) -> None:
    """Within the API server's CEL cost budget: a limit there would refuse every write
    (failurePolicy Fail). Prints the cost per write for docs/reliability.md (-s)."""
    many = {f"{TAG}-{index:05d}-": [tenants.a] for index in range(count)}
    _set_prefixes(kubectl, tenants.policy, {**tenants.prefixes, **many})
    try:
        last = f"{TAG}-{count - 1:05d}-x" if count else f"{TEAM_A}x"
        started = time.monotonic()
        poll(lambda: _refused(kubectl, tenants.b, last), timeout=60, message="in force")
        in_force = time.monotonic() - started
        free = statistics.median(_admission_ms(api_client, tenants.b, f"{TAG}-free")
                                 for _ in range(20))
        bound = statistics.median(_admission_ms(api_client, tenants.b, last) for _ in range(20))

        assert not _refused(kubectl, tenants.b, f"{TAG}-free")
        assert not _refused(kubectl, tenants.a, last)
        print(f"\n{count} more prefixes: a write's median {free:.1f} ms (id under no prefix), "
              f"{bound:.1f} ms (refused); in force {in_force:.1f} s after the change")
    finally:
        _set_prefixes(kubectl, tenants.policy, tenants.prefixes)


def test_prefixes_past_the_api_servers_limit_are_refused_and_the_last_ones_stay(
    kubectl: Kubectl, tenants: Tenants
) -> None:
    """A CEL expression may have at most 100,000 characters: 5,000 prefixes are refused
    as a whole, with the API server's reason, and the prefixes in force stay."""
    many = {f"{TAG}-{index:05d}-": [tenants.a] for index in range(5000)}

    with pytest.raises(KubectlError) as refused:
        _set_prefixes(kubectl, tenants.policy, {**tenants.prefixes, **many})

    assert "expression code point size exceeds limit" in refused.value.stderr
    assert _refused(kubectl, tenants.b, f"{TEAM_A}chat")
    assert not _refused(kubectl, tenants.b, f"{TAG}-04999-x")
