"""The chart, installed with helm on a real node from the image built from the working
tree with its defaults (fleet mode), the emulator in the cluster as its upstream: every Pod
runs (read-only root, non-root user, probes), the namespace enforces Pod Security
`restricted`, the container callers reach cannot read Secrets cluster-wide, and Pods in
another namespace use the endpoints through the real Service path (CoreDNS, kube-proxy's
iptables rules, the bridge, CNI) at the URL the endpoint's status gives."""

from __future__ import annotations

import json
import time

from e2e_support import (
    call_from_pod,
    caller_facing_service_accounts,
    can_i,
    completion,
    resource_versions,
)

from inference_devkit.controlplane.kubectl import Kubectl
from inference_devkit.install import (
    Installation,
    all_ready,
    elapsed,
    grant_invoke,
    helm,
    pods,
)
from inference_devkit.waiting import poll


def test_every_pod_of_the_release_is_ready_without_restarts(
    kubectl: Kubectl, installation: Installation
):
    found = pods(kubectl, installation.namespace, installation.selector)
    assert found
    for pod in found:
        statuses = pod["status"].get("containerStatuses", [])
        assert all_ready(pod), pod["status"]
        assert all(s["restartCount"] == 0 for s in statuses), statuses


def test_kubectl_logs_reach_the_kubelet(kubectl: Kubectl, installation: Installation):
    found = pods(kubectl, installation.namespace, installation.selector)
    for container in ("operator", "gateway"):
        (pod, *_) = (p for p in found
                     if container in {c["name"] for c in p["spec"]["containers"]})
        # Polled: a container may be Ready a moment before its first line (the operator
        # has no readiness probe; kopf logs once its start-up handler is done).
        def logged(container: str = container, name: str = pod["metadata"]["name"]) -> bool:
            return bool(kubectl.run("logs", "-n", installation.namespace, name,
                                    "-c", container).stdout.strip())

        poll(logged, timeout=30, interval=0.5, message=f"no log line from the {container}")


def test_a_pod_in_another_namespace_gets_a_completion_and_a_stream_at_the_status_url(
    kubectl: Kubectl, installation: Installation, team, client_namespace: str,
    project_image: tuple[str, str | None],
):
    name, inference_id = next(iter(team.endpoints.items()))
    status = kubectl.get("iep", name, team.namespace)["status"]
    url = status["url"]
    assert url == f"{installation.public_url}/_inference/completion/{inference_id}"

    answer, stream = call_from_pod(kubectl, client_namespace, project_image[0],
                                   [completion(url), completion(url, stream=True)])
    assert answer["status"] == 200, answer
    assert json.loads(answer["body"])["completion"][0]["result"].strip(), answer
    assert stream["status"] == 200, stream
    assert "event: message" in stream["body"] and '"delta"' in stream["body"], stream
    assert stream["body"].rstrip().endswith("data: [DONE]"), stream


def test_a_caller_needs_its_token_and_an_rbac_grant(
    kubectl: Kubectl, installation: Installation, team, client_namespace: str,
    project_image: tuple[str, str | None],
):
    name, inference_id = next(iter(team.endpoints.items()))
    url = kubectl.get("iep", name, team.namespace)["status"]["url"]
    listing = {"method": "GET", "url": f"{installation.public_url}/_inference/_all"}
    (anonymous,) = call_from_pod(kubectl, client_namespace, project_image[0],
                                 [completion(url)], service_account=None)
    assert anonymous["status"] == 401, anonymous
    assert anonymous["www_authenticate"] == 'Bearer realm="inference-operator"', anonymous
    # Its own projected token, but no RoleBinding in the team's namespace.
    kubectl.apply({"apiVersion": "v1", "kind": "ServiceAccount",
                   "metadata": {"name": "stranger"}}, client_namespace)
    refused, listed = call_from_pod(kubectl, client_namespace, project_image[0],
                                    [completion(url), listing], service_account="stranger")
    assert refused["status"] == 403, refused
    assert "security_exception" in refused["body"], refused
    assert listed["status"] == 200 and inference_id not in listed["body"], listed
    # The bound one (the team fixture's RoleBinding) sees and calls it.
    (allowed,) = call_from_pod(kubectl, client_namespace, project_image[0], [listing])
    assert inference_id in allowed["body"], allowed


def test_helm_test_passes_and_sees_the_endpoints(cluster, kubectl: Kubectl,
                                                 installation: Installation, team):
    # The test Pod runs as its namespace's default ServiceAccount: granted here, it lists
    # the team's endpoints (ungranted, it checks only that auth is enforced).
    grant_invoke(kubectl, installation, team.namespace, installation.namespace)
    result = helm(cluster, "test", "e2e", "--namespace", installation.namespace, "--logs",
                  "--timeout=180s")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Phase:          Succeeded" in result.stdout, result.stdout
    for inference_id in team.endpoints.values():
        assert inference_id in result.stdout, result.stdout


def test_a_deleted_operator_pod_is_replaced_and_every_endpoint_serves_again_untouched(
    kubectl: Kubectl, installation: Installation, team, client_namespace: str,
    project_image: tuple[str, str | None],
):
    before = resource_versions(kubectl, team.namespace)
    old = {p["metadata"]["name"] for p in pods(kubectl, installation.namespace,
                                                installation.operator_selector)}
    kubectl.run("delete", "pod", "-n", installation.namespace, "-l",
                installation.operator_selector, "--wait=false")
    started = time.monotonic()

    def replaced() -> bool:
        current = [p for p in pods(kubectl, installation.namespace,
                                   installation.operator_selector)
                   if p["metadata"]["name"] not in old
                   and not p["metadata"].get("deletionTimestamp")]
        return len(current) == 1 and all_ready(current[0])

    poll(replaced, timeout=120, interval=0.5, message="no new operator Pod became Ready")
    elapsed("operator Pod replaced and Ready", started)

    urls = [kubectl.get("iep", name, team.namespace)["status"]["url"] for name in team.endpoints]
    answers = call_from_pod(kubectl, client_namespace, project_image[0],
                            [completion(url) for url in urls])
    assert [a["status"] for a in answers] == [200] * len(urls), answers
    elapsed("every endpoint served again after the Pod's deletion", started)
    assert resource_versions(kubectl, team.namespace) == before


def test_the_container_callers_reach_cannot_read_secrets_cluster_wide(
    kubectl: Kubectl, installation: Installation,
):
    """The default install: the Pods behind the callers' Service run as an identity
    that may not read Secrets in kube-system; the operator's may (it reads the keys the
    endpoints reference), which shows the check can fail."""
    (caller_facing,) = caller_facing_service_accounts(kubectl, installation)
    (operator,) = {p["spec"]["serviceAccountName"] for p in pods(
        kubectl, installation.namespace, installation.operator_selector)}
    assert can_i(kubectl, installation.namespace, caller_facing,
                 "get", "secrets", "-n", "kube-system") == "no"
    assert can_i(kubectl, installation.namespace, operator,
                 "get", "secrets", "-n", "kube-system") == "yes"


def test_the_gateways_metrics_are_on_their_own_port_not_the_public_one(
    kubectl: Kubectl, installation: Installation, client_namespace: str,
    project_image: tuple[str, str | None],
):
    """What the ServiceMonitor scrapes: the gateways' metrics Service; a Pod without a
    token gets nothing from the public port's /metrics."""
    metrics = (f"http://{installation.service}-metrics.{installation.namespace}.svc:9202"
               "/metrics")
    scraped, public = call_from_pod(
        kubectl, client_namespace, project_image[0],
        [{"method": "GET", "url": metrics},
         {"method": "GET", "url": f"{installation.public_url}/metrics"}], service_account=None)
    assert scraped["status"] == 200 and "inference_gateway_ready 1.0" in scraped["body"], scraped
    assert public["status"] == 400 and "inference_gateway" not in public["body"], public
