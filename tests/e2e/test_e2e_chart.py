"""The chart, installed with helm on a real node from the image built from the working
tree: every Pod runs (read-only root, non-root user, probes, the sidecar), the namespace
enforces Pod Security `restricted`, and a Pod in another namespace reaches the gateway
through the real Service path (kube-proxy's iptables rules, the bridge, CNI)."""

from __future__ import annotations

import json
import subprocess
import time
import uuid

import pytest

from inference_operator.checkout import checkout_path
from inference_operator.controlplane import binaries, node
from inference_operator.controlplane.kubectl import Kubectl

RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


@pytest.fixture(scope="module")
def kubectl(cluster: node.Node) -> Kubectl:
    return Kubectl(binaries.resolve("kubectl"), cluster.plane.kubeconfig)


def _namespace(kubectl: Kubectl, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    kubectl.apply({"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": name, "labels": RESTRICTED}})
    return name


def _restricted_container(image: str, command: list[str]) -> dict:
    return {
        "name": "client", "image": image, "imagePullPolicy": "Never", "command": command,
        "securityContext": {
            "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
            "runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
        },
    }


@pytest.fixture(scope="module")
def release(cluster: node.Node, kubectl: Kubectl, project_image: tuple[str, str]):
    ref = project_image[0]
    repository, tag = ref.rsplit(":", 1)
    namespace = _namespace(kubectl, "e2e-chart")
    helm = binaries.resolve("helm")
    chart = checkout_path("charts", "inference-operator")
    started = time.monotonic()
    result = subprocess.run(
        [str(helm), "install", "e2e", str(chart), "--namespace", namespace,
         f"--kubeconfig={cluster.plane.kubeconfig}",
         "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
         # No upstream is reachable from the node; the emulator test sets its own.
         "--set", "operator.verifyUpstream=false",
         "--wait", "--timeout=180s"],
        capture_output=True, text=True, timeout=240, check=False,
    )
    pods = kubectl.run("get", "pods", "-n", namespace, "-o", "wide", check=False).stdout
    assert result.returncode == 0, (
        f"helm install failed: {result.stderr}\n{pods}\n"
        + kubectl.run("describe", "pods", "-n", namespace, check=False).stdout[-4000:]
        + cluster.log_tails()[-4000:]
    )
    print(f"helm install --wait: {time.monotonic() - started:.1f}s")
    return namespace


def test_every_pod_of_the_release_is_ready_without_restarts(kubectl: Kubectl, release: str):
    pods = json.loads(kubectl.run("get", "pods", "-n", release, "-o", "json").stdout)["items"]
    assert pods
    for pod in pods:
        statuses = pod["status"].get("containerStatuses", [])
        assert statuses and all(s["ready"] for s in statuses), pod["status"]
        assert all(s["restartCount"] == 0 for s in statuses), statuses


def test_kubectl_logs_reach_the_kubelet(kubectl: Kubectl, release: str):
    pod = json.loads(kubectl.run("get", "pods", "-n", release, "-o", "json").stdout)["items"][0]
    name = pod["metadata"]["name"]
    container = pod["spec"]["containers"][0]["name"]
    logs = kubectl.run("logs", "-n", release, name, "-c", container)
    assert logs.stdout.strip()


def test_a_pod_in_another_namespace_reaches_the_gateway_through_its_service(
    kubectl: Kubectl, release: str, project_image: tuple[str, str]
):
    services = json.loads(kubectl.run("get", "services", "-n", release, "-o", "json").stdout)
    (service,) = [s for s in services["items"] if s["spec"].get("clusterIP") not in (None, "None")]
    url = f"http://{service['spec']['clusterIP']}:{service['spec']['ports'][0]['port']}/readyz"
    client_namespace = _namespace(kubectl, "e2e-client")
    script = (
        "import sys, urllib.request\n"
        f"r = urllib.request.urlopen({url!r}, timeout=10)\n"
        "print(r.status, r.read().decode()[:200])\n"
    )
    kubectl.apply({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client"},
        "spec": {"restartPolicy": "Never", "automountServiceAccountToken": False,
                 "containers": [_restricted_container(project_image[0],
                                                      ["python", "-c", script])]},
    }, client_namespace)
    kubectl.run("wait", "-n", client_namespace, "pod/client",
                "--for=jsonpath={.status.phase}=Succeeded", "--timeout=90s", timeout=100)
    logs = kubectl.run("logs", "-n", client_namespace, "client").stdout
    assert logs.startswith("200"), logs
