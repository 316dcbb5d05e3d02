"""The chart installed on a cluster (the local node or an existing one) the way a user
does it: helm and kubectl, restricted namespaces, the emulator as a Deployment. Shared by
the end-to-end tests and the fleet throughput benchmark."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from inference_devkit.checkout import checkout_path
from inference_devkit.controlplane import binaries
from inference_devkit.controlplane.dns import CLUSTER_DOMAIN
from inference_devkit.controlplane.kubectl import Kubectl

RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}
RUN_AS = {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
          "seccompProfile": {"type": "RuntimeDefault"}}

AUDIENCE = "inference-operator"  # the chart's gateway.auth.audience
RELEASE = "e2e"
RELEASE_NAMESPACE = "e2e-system"  # one for every helm release: the CRD it keeps says so
EMULATOR_PORT = 8088


class Cluster(Protocol):
    """The local node (controlplane/node.py) or an existing cluster."""

    @property
    def plane(self) -> Any: ...

    def log_tails(self) -> str: ...


@dataclass(frozen=True)
class Installation:
    """Where an install put the operator: what a user reads off the manifests."""

    namespace: str
    deployment: str
    selector: str  # label selector of its Pod
    service: str
    port: int = 9200

    @property
    def public_url(self) -> str:
        """The Service URL the operator writes into each endpoint's status."""
        return f"http://{self.service}.{self.namespace}.svc:{self.port}"

    @property
    def invoker(self) -> str:
        """The ClusterRole that, bound in a namespace, lets a subject call its endpoints."""
        return f"{self.deployment}-invoker"

    @property
    def operator_selector(self) -> str:
        """The operator's Pod (in sidecar mode with the gateway container), not the fleet's."""
        return f"{self.selector},app.kubernetes.io/component=operator"



def grant_invoke(kubectl: Kubectl, installation: Installation, team_namespace: str,
                 caller_namespace: str, service_account: str = "default") -> None:
    """What a platform team keeps in Git: a RoleBinding of the invoker ClusterRole that
    lets one ServiceAccount call every endpoint of ``team_namespace``."""
    kubectl.apply({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": f"invoke-{caller_namespace}-{service_account}"[:63]},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": installation.invoker},
        "subjects": [{"kind": "ServiceAccount", "name": service_account,
                      "namespace": caller_namespace}],
    }, team_namespace)


def caller_token(kubectl: Kubectl, caller_namespace: str,
                 service_account: str = "default") -> str:
    """A token as an application holds it (audience inference-operator), for calls
    made from this host."""
    return kubectl.run("create", "token", service_account, "-n", caller_namespace,
                       f"--audience={AUDIENCE}", "--duration=1h").stdout.strip()


def namespace(kubectl: Kubectl, prefix: str, *, fixed: bool = False) -> str:
    name = prefix if fixed else f"{prefix}-{uuid.uuid4().hex[:6]}"
    kubectl.apply({"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": name, "labels": RESTRICTED}})
    return name



def restricted_container(name: str, image: str, args: list[str],
                         command: list[str] | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": name, "image": image, "imagePullPolicy": "IfNotPresent", "args": args,
        "securityContext": {
            **RUN_AS, "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    if command is not None:
        container["command"] = command
    return container


def deploy_emulator(kubectl: Kubectl, cluster: Cluster, image: str, ns: str,
                    *args: str) -> str:
    """The Anthropic emulator as a Deployment + Service in ``ns``, Ready; its URL."""
    labels = {"app.kubernetes.io/name": "anthropic-emulator"}
    container = restricted_container(
        "emulator", image, ["emulator", "--host", "0.0.0.0", "--port", str(EMULATOR_PORT), *args])
    container["ports"] = [{"name": "http", "containerPort": EMULATOR_PORT}]
    container["readinessProbe"] = {"tcpSocket": {"port": "http"}, "periodSeconds": 2}
    started = time.monotonic()
    kubectl.apply([
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "anthropic-emulator", "labels": labels},
         "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                  "template": {"metadata": {"labels": labels}, "spec": {
                      "automountServiceAccountToken": False, "enableServiceLinks": False,
                      "securityContext": RUN_AS, "containers": [container]}}}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "anthropic-emulator", "labels": labels},
         "spec": {"selector": labels,
                  "ports": [{"name": "http", "port": EMULATOR_PORT, "targetPort": "http"}]}},
    ], ns)
    rollout = kubectl.run("rollout", "status", "deployment/anthropic-emulator", "-n", ns,
                          "--timeout=120s", check=False, timeout=130)
    assert rollout.returncode == 0, diagnostics(kubectl, cluster, ns)
    elapsed(f"emulator Deployment ready in {ns}", started)
    return f"http://anthropic-emulator.{ns}.svc.{CLUSTER_DOMAIN}:{EMULATOR_PORT}"


def install_chart(cluster, kubectl: Kubectl, image: str, upstream: str,
                  *values: str, chart: Path | None = None) -> Iterator[Installation]:
    """``helm install`` of the release with ``--set`` ``values`` (``chart``: another
    chart directory than the checkout's); uninstalled after."""
    ns = namespace(kubectl, RELEASE_NAMESPACE, fixed=True)
    installed = Installation(
        namespace=ns, deployment=f"{RELEASE}-inference-operator",
        selector=f"app.kubernetes.io/instance={RELEASE}",
        service=f"{RELEASE}-inference-operator-gateway")
    result = helm(cluster, "install", RELEASE,
                  str(chart or checkout_path("charts", "inference-operator")),
                  "--namespace", ns, *image_values(image), "--set", f"anthropicBaseUrl={upstream}",
                  *(arg for value in values for arg in ("--set", value)),
                  "--wait", "--timeout=240s")
    assert result.returncode == 0, (
        f"helm install failed: {result.stderr}\n{diagnostics(kubectl, cluster, ns)}")
    yield installed
    helm(cluster, "uninstall", RELEASE, "--namespace", ns, "--ignore-not-found", "--wait",
         "--timeout=120s")


def elapsed(label: str, started: float) -> None:
    print(f"[install] {label}: {time.monotonic() - started:.1f}s", flush=True)


def helm(cluster: Cluster, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    started = time.monotonic()
    result = subprocess.run(
        [str(binaries.resolve("helm")), *args, f"--kubeconfig={cluster.plane.kubeconfig}"],
        capture_output=True, text=True, timeout=timeout, check=False,
    )
    elapsed(f"helm {' '.join(args[:2])} (exit {result.returncode})", started)
    return result


def diagnostics(kubectl: Kubectl, cluster: Cluster, namespace: str) -> str:
    get = kubectl.run("get", "pods", "-n", namespace, "-o", "wide", check=False).stdout
    described = kubectl.run("describe", "pods", "-n", namespace, check=False).stdout
    return f"{get}\n{described[-4000:]}\n{cluster.log_tails()[-4000:]}"


def image_values(image: str) -> list[str]:
    """``--set`` arguments that make the chart run ``image`` (a tag or a digest)."""
    if "@" in image:
        repository, digest = image.split("@", 1)
        return ["--set", f"image.repository={repository}", "--set", f"image.digest={digest}"]
    repository, tag = image.rsplit(":", 1)
    return ["--set", f"image.repository={repository}", "--set", f"image.tag={tag}"]


def pods(kubectl: Kubectl, namespace: str, selector: str | None = None) -> list[dict]:
    args = ["get", "pods", "-n", namespace, "-o", "json"]
    if selector:
        args += ["-l", selector]
    return json.loads(kubectl.run(*args).stdout)["items"]


def all_ready(pod: dict) -> bool:
    statuses = pod["status"].get("containerStatuses", [])
    return bool(statuses) and all(s["ready"] for s in statuses)
