"""The chart's RBAC, applied to the real API server and exercised with its ServiceAccount's
own token: everything the operator calls is allowed, and nothing more, in both modes."""

from __future__ import annotations

import re
from pathlib import Path

from inference_operator.controlplane import binaries
from inference_operator.controlplane.kubectl import Kubectl

IEP = "inferenceendpoints.inference-operator.dev"

# What the operator calls (kopf's watches and patches, its Events, the status patch and the
# Secret reads of controller/kube.py), as `kubectl auth can-i --list` prints it.
OPERATOR_NEEDS = {
    IEP: {"get", "list", "watch", "patch"},
    f"{IEP}/status": {"patch"},
    "secrets": {"get", "list", "watch"},
    "events": {"create"},
}
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


class Operator:
    """The chart's ServiceAccount, acting through a real token from the API server."""

    def __init__(self, kubeconfig: Path) -> None:
        self.kubectl = Kubectl(binaries.resolve("kubectl"), kubeconfig)

    def can(self, verb: str, resource: str, *where: str) -> bool:
        resource, _, subresource = resource.partition("/")
        if subresource:
            where = (*where, f"--subresource={subresource}")
        result = self.kubectl.run("auth", "can-i", verb, resource, *where, check=False)
        assert result.stdout.strip() in {"yes", "no"}, result.stderr
        return result.stdout.strip() == "yes"

    def grants(self, namespace: str) -> dict[str, set[str]]:
        """`kubectl auth can-i --list` as a {resource: verbs} map, minus what all users get."""
        table = self.kubectl.run("auth", "can-i", "--list", "-n", namespace).stdout
        grants: dict[str, set[str]] = {}
        for line in table.splitlines()[1:]:
            if line.startswith(" "):  # a non-resource URL (/healthz, /api, ...)
                continue
            resource, *_, verbs = re.split(r"\s{2,}", line.strip())
            if resource not in EVERYONE:
                grants.setdefault(resource, set()).update(verbs.strip("[]").split())
        return grants


def test_cluster_wide_mode_allows_what_the_operator_needs_and_no_more(
    chart_service_account, make_namespaces
) -> None:
    operator = Operator(chart_service_account())
    (elsewhere,) = make_namespaces(1)

    assert operator.grants(elsewhere) == OPERATOR_NEEDS
    for resource, verbs in OPERATOR_NEEDS.items():
        for verb in verbs:
            assert operator.can(verb, resource, "--all-namespaces"), (verb, resource)
    for verb, resource in FORBIDDEN:
        assert not operator.can(verb, resource, "--all-namespaces"), (verb, resource)


def test_namespaced_mode_grants_only_the_watched_namespaces(
    chart_service_account, make_namespaces, namespace: str
) -> None:
    team_a, team_b, unwatched = make_namespaces(3)
    operator = Operator(chart_service_account(f"--set=watchNamespaces={{{team_a},{team_b}}}"))

    for watched in (team_a, team_b):
        assert operator.grants(watched) == OPERATOR_NEEDS
        for verb, resource in FORBIDDEN:
            assert not operator.can(verb, resource, "-n", watched), (verb, resource, watched)
    # Neither where it runs nor anywhere else, and nothing cluster-wide.
    for other in (unwatched, namespace):
        assert operator.grants(other) == {}
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
