"""The chart's RBAC, applied to the real API server and exercised with its ServiceAccounts'
own tokens and by impersonation: everything the operator and the gateways call is
allowed, and nothing more, in every mode."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from inference_devkit.controlplane import binaries
from inference_devkit.controlplane.kubectl import Kubectl

IEP = "inferenceendpoints.inference-operator.dev"
SLICES = "endpointslices.discovery.k8s.io"

# What the operator calls (kopf's watches and patches, its Events, the status patch and the
# Secret reads of controller/kube.py), as `kubectl auth can-i --list` prints it.
OPERATOR_NEEDS = {
    IEP: {"get", "list", "watch", "patch"},
    f"{IEP}/status": {"patch"},
    "secrets": {"get", "list", "watch"},
    "events": {"create"},
}
# The gateway's identity with gateway.auth.mode=kubernetes (the default), through the
# built-in system:auth-delegator: who a caller is and whether it may invoke an endpoint.
# Cluster-scoped resources, so `can-i --list` shows them in every namespace.
AUTH_DELEGATOR = {
    "tokenreviews.authentication.k8s.io": {"create"},
    "subjectaccessreviews.authorization.k8s.io": {"create"},
}
SIDECAR = "--set=gateway.mode=sidecar"  # an opt-in; fleet is the default
# Granted to every authenticated user by the API server's default roles.
EVERYONE = {
    "selfsubjectreviews.authentication.k8s.io",
    "selfsubjectaccessreviews.authorization.k8s.io",
    "selfsubjectrulesreviews.authorization.k8s.io",
}

# Requests an operator compromised through a bug must not be able to make.
FORBIDDEN = [
    ("create", "secrets"), ("update", "secrets"), ("patch", "secrets"), ("delete", "secrets"),
    ("create", IEP), ("update", IEP), ("delete", IEP), ("deletecollection", IEP),
    ("update", f"{IEP}/status"),
    ("update", "events"), ("delete", "events"),
    ("get", "configmaps"), ("list", "pods"), ("create", "pods"), ("create", "pods/exec"),
    ("create", "serviceaccounts/token"), ("impersonate", "serviceaccounts"),
    ("list", "namespaces"), ("list", "customresourcedefinitions.apiextensions.k8s.io"),
    ("patch", "customresourcedefinitions.apiextensions.k8s.io"),
    ("create", "rolebindings.rbac.authorization.k8s.io"),
    ("escalate", "clusterroles.rbac.authorization.k8s.io"),
    ("*", "*"),
]


def shards(release: str) -> list[str]:
    """The configuration shard Secrets of a release with the chart's defaults."""
    from inference_operator.api.gateway_config import Shards

    return Shards(f"{release}-inference-operator-gateway-config").names()


def named(resource: str, names: list[str], verbs: set[str]) -> dict[str, set[str]]:
    return {f"{resource}[{name}]": set(verbs) for name in names}


def merged(*grants: dict[str, set[str]]) -> dict[str, set[str]]:
    total: dict[str, set[str]] = {}
    for grant in grants:
        for resource, verbs in grant.items():
            total.setdefault(resource, set()).update(verbs)
    return total


def operator_in_release_namespace(release: str) -> dict[str, set[str]]:
    """The operator's Role there: write the shards (never create one), find the gateways."""
    return {**named("secrets", shards(release), {"get", "update", "patch"}),
            SLICES: {"list", "watch"}}


def gateway_in_release_namespace(release: str, fleet: bool) -> dict[str, set[str]]:
    """The gateways' Role: read the shards, and in fleet mode watch their peers."""
    return {**named("secrets", shards(release), {"get", "list", "watch"}),
            **({SLICES: {"list", "watch"}} if fleet else {})}


class Operator:
    """One of the chart's ServiceAccounts, acting through a real token from the API server
    (``kubeconfig``) or impersonated by the test's administrator (``as_user``)."""

    def __init__(self, kubeconfig: Path, as_user: str | None = None) -> None:
        self.kubectl = Kubectl(binaries.resolve("kubectl"), kubeconfig)
        self.identity = (f"--as={as_user}",) if as_user else ()

    def run(self, *args: str, check: bool = False, stdin: str | None = None):
        return self.kubectl.run(*args, *self.identity, check=check, stdin=stdin)

    def can(self, verb: str, resource: str, *where: str) -> bool:
        """``resource`` may name a subresource (``x/status``) or an object (``secrets/x``)."""
        resource, _, rest = resource.partition("/")
        if rest and resource != "secrets":
            where, rest = (*where, f"--subresource={rest}"), ""
        target = f"{resource}/{rest}" if rest else resource
        result = self.run("auth", "can-i", verb, target, *where)
        assert result.stdout.strip() in {"yes", "no"}, result.stderr
        return result.stdout.strip() == "yes"

    def grants(self, namespace: str) -> dict[str, set[str]]:
        """`kubectl auth can-i --list` as a {resource: verbs} map, minus what all users get;
        a rule limited to named objects is `resource[name]`, once per name."""
        table = self.run("auth", "can-i", "--list", "-n", namespace, check=True).stdout
        grants: dict[str, set[str]] = {}
        for line in table.splitlines()[1:]:
            if line.startswith(" "):  # a non-resource URL (/healthz, /api, ...)
                continue
            resource, _urls, names, verbs = re.split(r"\s{2,}", line.strip())
            if resource in EVERYONE:
                continue
            for key in [f"{resource}[{n}]" for n in names.strip("[]").split()] or [resource]:
                grants.setdefault(key, set()).update(verbs.strip("[]").split())
        return grants


def forbidden(result) -> bool:
    return result.returncode != 0 and "forbidden" in result.stderr.lower()


def service_account(namespace: str, name: str) -> str:
    return f"system:serviceaccount:{namespace}:{name}"


def test_cluster_wide_mode_allows_what_the_operator_needs_and_no_more(
    chart_service_account, make_namespaces, namespace: str, release: str
) -> None:
    operator = Operator(chart_service_account(SIDECAR))
    (elsewhere,) = make_namespaces(1)

    # Sidecar mode: the pod's only identity also makes its gateway container's reviews.
    assert operator.grants(elsewhere) == merged(OPERATOR_NEEDS, AUTH_DELEGATOR)
    # Where it runs, also the configuration shards, and what its gateway container reads.
    assert operator.grants(namespace) == merged(
        OPERATOR_NEEDS, AUTH_DELEGATOR, operator_in_release_namespace(release),
        gateway_in_release_namespace(release, fleet=False))
    for resource, verbs in OPERATOR_NEEDS.items():
        for verb in verbs:
            assert operator.can(verb, resource, "--all-namespaces"), (verb, resource)
    for verb, resource in FORBIDDEN:
        assert not operator.can(verb, resource, "--all-namespaces"), (verb, resource)


def test_namespaced_mode_grants_only_the_watched_namespaces(
    chart_service_account, make_namespaces, namespace: str, release: str
) -> None:
    team_a, team_b, unwatched = make_namespaces(3)
    operator = Operator(chart_service_account(SIDECAR,
                                              f"--set=watchNamespaces={{{team_a},{team_b}}}"))

    for watched in (team_a, team_b):
        assert operator.grants(watched) == merged(OPERATOR_NEEDS, AUTH_DELEGATOR)
        for verb, resource in FORBIDDEN:
            assert not operator.can(verb, resource, "-n", watched), (verb, resource, watched)
    # Nowhere else, nothing cluster-wide but its sidecar's two reviews (cluster-scoped
    # resources: no Role can grant them), and where it runs only the configuration shards
    # (with its sidecar's read of them) and the gateways' EndpointSlices.
    assert operator.grants(unwatched) == AUTH_DELEGATOR
    assert operator.grants(namespace) == merged(
        AUTH_DELEGATOR, operator_in_release_namespace(release),
        gateway_in_release_namespace(release, False))
    for resource, verbs in OPERATOR_NEEDS.items():
        for verb in verbs:
            assert not operator.can(verb, resource, "--all-namespaces"), (verb, resource)


def test_namespaced_mode_cannot_read_a_secret_in_a_namespace_it_does_not_watch(
    chart_service_account, make_namespaces, kubectl: Kubectl
) -> None:
    watched, unwatched = make_namespaces(2)
    for where in (watched, unwatched):
        kubectl.run("create", "secret", "generic", "anthropic-credentials", "-n", where,
                    "--from-literal=api_key=sk-ant-rbac-test")
    operator = Operator(chart_service_account(f"--set=watchNamespaces={{{watched}}}"))

    read = operator.kubectl.run("get", "secret", "anthropic-credentials", "-n", watched,
                                "-o", "jsonpath={.metadata.name}")
    assert read.stdout == "anthropic-credentials"
    refused = operator.kubectl.run("get", "secret", "anthropic-credentials", "-n", unwatched,
                                   check=False)
    assert refused.returncode != 0
    assert "Forbidden" in refused.stderr and "cannot get resource \"secrets\"" in refused.stderr
    listed = operator.kubectl.run("get", "secrets", "--all-namespaces", check=False)
    assert "Forbidden" in listed.stderr


@pytest.mark.parametrize("mode", ["sidecar", "fleet"])
def test_the_gateway_identity_reads_its_shards_and_in_fleet_mode_nothing_else(
    mode: str, chart_rbac, kubectl: Kubectl, make_namespaces, namespace: str, release: str,
) -> None:
    """Impersonated: in fleet mode the gateways' own ServiceAccount; in sidecar mode the
    pod's only one, which is the operator's and so may read more (the test above)."""
    fleet = mode == "fleet"
    chart_rbac(f"--set=gateway.mode={mode}")
    account = f"{release}-inference-operator" + ("-gateway" if fleet else "")
    gateway = Operator(kubectl.kubeconfig, service_account(namespace, account))

    for shard in shards(release):
        for verb in ("get", "list", "watch"):
            assert gateway.can(verb, f"secrets/{shard}", "-n", namespace), (verb, shard)
        # As the gateway reads a shard: one object, and a list/watch selecting it by name.
        got = gateway.run("get", "secret", shard, "-n", namespace, "-o=jsonpath={.metadata.name}")
        assert got.stdout == shard, got.stderr
        listed = gateway.run("get", "secrets", "-n", namespace, "-o=name",
                             f"--field-selector=metadata.name={shard}")
        assert listed.stdout.strip() == f"secret/{shard}", listed.stderr
    assert gateway.can("watch", SLICES, "-n", namespace)  # fleet: peers; sidecar: operator
    if not fleet:
        return

    (elsewhere,) = make_namespaces(1)
    for where in (namespace, elsewhere):
        kubectl.run("create", "secret", "generic", "anthropic-credentials", "-n", where,
                    "--from-literal=api_key=sk-ant-rbac-test")
    kubectl.run("create", "secret", "generic", shards(release)[0], "-n", elsewhere)
    assert gateway.grants(namespace) == merged(
        gateway_in_release_namespace(release, fleet=True), AUTH_DELEGATOR)
    assert forbidden(gateway.run("get", "secret", "anthropic-credentials", "-n", namespace))
    assert forbidden(gateway.run("get", "secrets", "-n", namespace))
    assert not gateway.can("list", "secrets", "-n", namespace)
    for verb in ("update", "patch", "delete"):
        assert not gateway.can(verb, f"secrets/{shards(release)[0]}", "-n", namespace), verb
    assert not gateway.can("create", "secrets", "-n", namespace)
    # Anywhere else nothing but its two reviews, not even a Secret of a shard's name.
    assert gateway.grants(elsewhere) == AUTH_DELEGATOR
    for target in (shards(release)[0], "anthropic-credentials"):
        assert forbidden(gateway.run("get", "secret", target, "-n", elsewhere)), target
    for verb, resource in [("get", "secrets"), *FORBIDDEN]:
        assert not gateway.can(verb, resource, "--all-namespaces"), (verb, resource)


@pytest.mark.parametrize("mode", ["sidecar", "fleet"])
def test_the_operator_writes_the_shards_but_creates_no_secret(
    mode: str, chart_rbac, kubectl: Kubectl, namespace: str, release: str,
) -> None:
    chart_rbac(f"--set=gateway.mode={mode}")
    operator = Operator(kubectl.kubeconfig,
                        service_account(namespace, f"{release}-inference-operator"))
    kubectl.run("create", "secret", "generic", "other", "-n", namespace)
    data = json.dumps({"data": {"endpoints.json": "e30="}})

    for shard in shards(release):
        for verb in ("get", "update", "patch"):
            assert operator.can(verb, f"secrets/{shard}", "-n", namespace), (verb, shard)
        written = operator.run("patch", "secret", shard, "-n", namespace, "-p", data)
        assert written.returncode == 0, written.stderr
        assert not operator.can("delete", f"secrets/{shard}", "-n", namespace)
    assert kubectl.get("secret", shards(release)[0], namespace)["data"] == {
        "endpoints.json": "e30="}
    assert not operator.can("create", "secrets", "-n", namespace)
    assert forbidden(operator.run("create", "secret", "generic", "mine", "-n", namespace))
    for verb in ("update", "patch", "delete"):
        assert not operator.can(verb, "secrets/other", "-n", namespace), verb
    assert operator.can("list", SLICES, "-n", namespace)
    assert operator.can("watch", SLICES, "-n", namespace)
    assert not operator.can("list", SLICES, "--all-namespaces")


def caller_facing_service_account(rendered: list[dict]) -> str:
    """The ServiceAccount of the pods behind the Service callers use (its selector), whose
    container serves that Service's port: the identity a caller's request reaches."""
    (service,) = (d for d in rendered if d["kind"] == "Service"
                  and d["metadata"]["name"].endswith("-gateway"))
    (port,) = service["spec"]["ports"]
    (pod,) = (d["spec"]["template"]["spec"] for d in rendered if d["kind"] == "Deployment"
              and service["spec"]["selector"].items()
              <= d["spec"]["template"]["metadata"]["labels"].items())
    assert any(p.get("name") == port["targetPort"]
               for c in pod["containers"] for p in c.get("ports", []))
    return pod["serviceAccountName"]


def may_get_secrets(kubectl: Kubectl, namespace: str, account: str, where: str) -> bool:
    """The API server's SubjectAccessReview: may this ServiceAccount get Secrets there?"""
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
              "spec": {"user": service_account(namespace, account),
                       "groups": ["system:serviceaccounts",
                                  f"system:serviceaccounts:{namespace}", "system:authenticated"],
                       "resourceAttributes": {"verb": "get", "resource": "secrets",
                                              "namespace": where}}}
    made = kubectl.run("create", "--raw=/apis/authorization.k8s.io/v1/subjectaccessreviews",
                       "-f", "-", stdin=json.dumps(review))
    return json.loads(made.stdout)["status"].get("allowed", False)


def test_by_default_the_container_callers_reach_cannot_read_secrets_elsewhere(
    chart_rbac, kubectl: Kubectl, make_namespaces, namespace: str, release: str,
) -> None:
    """The default install: the identity of the container that serves callers may
    not read Secrets outside the shards, in any other namespace; the operator's may (which
    the sidecar's gateway container used to hold), so the check can tell them apart."""
    rendered = chart_rbac()
    caller_facing = caller_facing_service_account(rendered)
    operator = f"{release}-inference-operator"
    (elsewhere,) = make_namespaces(1)
    for where in ("kube-system", elsewhere):
        assert not may_get_secrets(kubectl, namespace, caller_facing, where), where
        assert may_get_secrets(kubectl, namespace, operator, where), where
