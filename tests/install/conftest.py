"""Fixtures for the install paths: renders of the chart and the objects they need."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from install_support import prometheus_operator_crd

from inference_devkit.chart import documents, helm_template
from inference_devkit.controlplane.kubeconfig import write_token_kubeconfig
from inference_devkit.controlplane.kubectl import Kubectl
from inference_operator.api.models import CRD_NAME

ROOT = Path(__file__).resolve().parents[2]
SERVICE_MONITOR_CRD = prometheus_operator_crd("ServiceMonitor")


@pytest.fixture(scope="session")
def crd_installed(kubectl: Kubectl) -> None:
    """The InferenceEndpoint CRD alone, as `kubectl apply -k manifests/crds/` installs it
    (kubectl resolves resource names through discovery, so RBAC checks need it)."""
    kubectl.run("apply", "-k", str(ROOT / "manifests" / "crds"))
    kubectl.wait_for_condition(f"crd/{CRD_NAME}", "Established", timeout=30)


@pytest.fixture(scope="session")
def service_monitor_crd(kubectl: Kubectl) -> None:
    kubectl.apply(SERVICE_MONITOR_CRD)
    kubectl.wait_for_condition(
        "crd/servicemonitors.monitoring.coreos.com", "Established", timeout=30
    )


@pytest.fixture
def release() -> str:
    """A release name of its own, so cluster-scoped objects never collide between tests."""
    return f"r{uuid.uuid4().hex[:8]}"


@pytest.fixture
def make_namespaces(kubectl: Kubectl) -> Iterator:
    """Factory: fresh namespaces (the `namespace` fixture gives only one)."""
    made: list[str] = []

    def make(count: int) -> list[str]:
        names = [f"t-{uuid.uuid4().hex[:10]}" for _ in range(count)]
        for name in names:
            kubectl.run("create", "namespace", name)
        made.extend(names)
        return names

    yield make
    for name in made:
        kubectl.run("delete", "namespace", name, "--wait=false", check=False)


RBAC_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}


def component(document: dict) -> str | None:
    return document["metadata"].get("labels", {}).get("app.kubernetes.io/component")


@pytest.fixture
def chart_rbac(kubectl: Kubectl, crd_installed, namespace: str, release: str) -> Iterator:
    """Factory: apply the chart's ServiceAccounts, RBAC and (empty) configuration shard
    Secrets, rendered with these helm arguments, for real; returns every rendered document."""
    applied: list[dict] = []

    def install(*values: str) -> list[dict]:
        rendered = documents(helm_template(*values, release=release, namespace=namespace).stdout)
        objects = [doc for doc in rendered if doc["kind"] in RBAC_KINDS
                   or (doc["kind"] == "Secret" and component(doc) == "gateway-config")]
        applied.extend(objects)
        kubectl.apply(objects)
        return rendered

    yield install
    for document in applied:  # namespaced ones go with their namespaces
        if document["kind"].startswith("Cluster"):
            kubectl.run("delete", document["kind"], document["metadata"]["name"], check=False)


@pytest.fixture
def chart_service_account(
    kubectl: Kubectl, control_plane, chart_rbac, namespace: str, tmp_path: Path,
) -> Iterator:
    """Factory: apply the chart's ServiceAccounts and RBAC (rendered with these helm
    arguments) for real, and return a kubeconfig that acts as one of its ServiceAccounts
    (``identity``: "operator", or "gateway" for the fleet's own) with a token the API
    server issued."""

    def install(*values: str, identity: str = "operator") -> Path:
        rendered = chart_rbac(*values)
        (account,) = (doc["metadata"]["name"] for doc in rendered
                      if doc["kind"] == "ServiceAccount" and component(doc) == identity)
        token = kubectl.run("create", "token", account, "-n", namespace).stdout.strip()
        path = tmp_path / f"{account}.kubeconfig"
        write_token_kubeconfig(path, control_plane.kubeconfig, token)
        whoami = Kubectl(kubectl.binary, path).run(
            "auth", "whoami", "-o=jsonpath={.status.userInfo.username}")
        assert whoami.stdout == f"system:serviceaccount:{namespace}:{account}"
        return path

    return install
