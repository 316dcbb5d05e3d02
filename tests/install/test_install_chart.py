"""The chart lints, renders with every values file, and every render is accepted by the
real API server; a typo in values stops `helm install` before anything is created."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from install_support import helm, prometheus_operator_crd

from inference_devkit import chart
from inference_devkit.chart import ci_values_files, documents, helm_template
from inference_devkit.controlplane import binaries
from inference_devkit.controlplane.kubectl import Kubectl
from inference_operator.api.gateway_config import Shard, Shards
from inference_operator.api.manifests import CRD_FILE, POLICIES_FILE
from inference_operator.observability.alerts import rule_groups
from inference_operator.observability.dashboard import dashboard

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / chart.CHART

# None: the default values.
VALUES_CASES = [None, *(path.name for path in ci_values_files())]


def values_args(name: str | None) -> list[str]:
    return [f"--values={CHART / 'ci' / name}"] if name else []


def ci_values(name: str | None) -> dict:
    return yaml.safe_load((CHART / "ci" / name).read_text()) if name else {}


@pytest.mark.parametrize("values", VALUES_CASES)
def test_helm_lint_is_clean(values: str | None) -> None:
    result = subprocess.run(
        [str(binaries.resolve("helm")), "lint", "--strict", str(CHART), *values_args(values)],
        capture_output=True, text=True, check=False, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("values", VALUES_CASES)
def test_every_render_is_accepted_by_the_api_server(
    values: str | None, kubectl: Kubectl, namespace: str, release: str, request,
) -> None:
    if ci_values(values).get("serviceMonitor", {}).get("enabled"):
        request.getfixturevalue("service_monitor_crd")
    for watched in ci_values(values).get("watchNamespaces", []):
        kubectl.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": watched}})
    # Pod Security "restricted" in warn mode: the server reports any pod template that
    # would break it, so the dry run below also checks the hardening.
    kubectl.run("label", "namespace", namespace, "pod-security.kubernetes.io/warn=restricted",
                "pod-security.kubernetes.io/enforce=restricted")
    rendered = helm_template(*values_args(values), release=release, namespace=namespace).stdout

    result = kubectl.run("apply", "--dry-run=server", "-f", "-", stdin=rendered)

    kinds = {doc["kind"] for doc in documents(rendered)}
    assert {"Deployment", "Service", "ServiceAccount"} <= kinds
    assert result.stdout.count("(server dry run)") == len(documents(rendered))
    assert "PodSecurity" not in result.stderr, result.stderr


def test_the_helm_test_pod_is_admitted_under_restricted_pod_security(
    kubectl: Kubectl, namespace: str, release: str
) -> None:
    kubectl.run("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    rendered = helm_template(
        "--show-only=templates/tests/test-gateway.yaml", release=release, namespace=namespace
    ).stdout
    (pod,) = documents(rendered)
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"

    kubectl.run("create", "--dry-run=server", "-f", "-", stdin=rendered)


@pytest.mark.parametrize(
    ("typo", "field"),
    [
        ("gatway.port=9300", "gatway"),  # a misspelled top-level key
        ("operator.verifyUpstreams=false", "verifyUpstreams"),  # a misspelled nested key
        ("networkPolicy.ingresFrom[0].podSelector.matchLabels.a=b", "ingresFrom"),
    ],
)
def test_a_values_typo_fails_helm_install_with_a_schema_error(
    typo: str, field: str, control_plane, kubectl: Kubectl, namespace: str, release: str
) -> None:
    result = helm(control_plane.kubeconfig, "install", release, str(CHART),
                  f"--namespace={namespace}", f"--set={typo}")

    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert f"'{field}' not allowed" in result.stderr, result.stderr
    assert kubectl.run("get", "all,secrets", "-n", namespace, "-o", "name").stdout.count(
        release) == 0


def test_install_upgrade_to_namespaced_mode_and_uninstall(
    control_plane, kubectl: Kubectl, namespace: str, make_namespaces, release: str
) -> None:
    """A real release: NOTES tell how to call an endpoint, switching to namespaced RBAC
    replaces the ClusterRole with per-namespace Roles, uninstall leaves nothing behind.
    (The CRD is shared by the whole test session, so this release does not manage it.)"""
    kubeconfig = control_plane.kubeconfig
    installed = helm(kubeconfig, "install", release, str(CHART), f"--namespace={namespace}",
                     "--set=crds.install=false")
    assert installed.returncode == 0, installed.stderr
    assert (f"kubectl port-forward -n {namespace} svc/{release}-inference-operator-gateway"
            in installed.stdout)
    assert kubectl.run("get", "clusterrole", f"{release}-inference-operator").returncode == 0

    team_a, team_b = make_namespaces(2)
    upgraded = helm(kubeconfig, "upgrade", release, str(CHART), f"--namespace={namespace}",
                    "--reuse-values", f"--set=watchNamespaces={{{team_a},{team_b}}}")
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"It watches InferenceEndpoints in: {team_a}, {team_b}." in upgraded.stdout
    gone = kubectl.run("get", "clusterrole", f"{release}-inference-operator", check=False)
    assert "NotFound" in gone.stderr
    for team in (team_a, team_b):
        kubectl.get("role", f"{release}-inference-operator", team)
        kubectl.get("rolebinding", f"{release}-inference-operator", team)
    deployment = kubectl.get("deployment", f"{release}-inference-operator", namespace)
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [a for a in args if a.startswith("--namespace=")] == [
        f"--namespace={team_a}", f"--namespace={team_b}"]

    uninstalled = helm(kubeconfig, "uninstall", release, f"--namespace={namespace}")
    assert uninstalled.returncode == 0, uninstalled.stderr
    left = kubectl.run("get", "deployment,service,serviceaccount,role,rolebinding,secret", "-A",
                       "-l", f"app.kubernetes.io/instance={release}", "-o", "name").stdout
    assert left == ""


def shard_data(kubectl: Kubectl, namespace: str, names: list[str]) -> dict[str, dict | None]:
    return {name: kubectl.get("secret", name, namespace).get("data") for name in names}


def test_install_in_sidecar_mode_move_to_fleet_and_uninstall_keeping_the_shards_until_then(
    control_plane, kubectl: Kubectl, namespace: str, release: str
) -> None:
    """A real release in both modes: the shard Secrets start empty, what the operator writes
    into them survives `helm upgrade` (here: to fleet mode) and a `kubectl apply` of the
    rendered chart, and `helm uninstall` deletes them, keys and all."""
    kubeconfig = control_plane.kubeconfig
    fullname = f"{release}-inference-operator"
    shards = Shards(f"{fullname}-gateway-config").names()
    installed = helm(kubeconfig, "install", release, str(CHART), f"--namespace={namespace}",
                     "--set=crds.install=false", "--set=gateway.mode=sidecar")
    assert installed.returncode == 0, installed.stderr
    assert "Sidecar mode" in installed.stdout
    assert shard_data(kubectl, namespace, shards) == dict.fromkeys(shards)
    deployments = kubectl.run("get", "deployments", "-n", namespace, "-o=name").stdout.split()
    assert deployments == [f"deployment.apps/{fullname}"]
    # What the operator does, as the operator (impersonated): write a shard.
    written = Shard(3, ({"inference_id": "a", "task_type": "completion"},)).encode()
    kubectl.run("patch", "secret", shards[0], "-n", namespace,
                f"--as=system:serviceaccount:{namespace}:{fullname}",
                "-p", json.dumps({"data": written}))

    fleet = ["--set=gateway.mode=fleet", "--set=gateway.autoscaling.enabled=true",
             "--set=networkPolicy.enabled=true", "--set=podDisruptionBudget.enabled=true"]
    upgraded = helm(kubeconfig, "upgrade", release, str(CHART), f"--namespace={namespace}",
                    "--reuse-values", *fleet)
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"Fleet mode: the gateways run in Deployment {fullname}-gateway" in upgraded.stdout
    assert shard_data(kubectl, namespace, shards) == {**dict.fromkeys(shards), shards[0]: written}
    names = kubectl.run("get", "deployment,hpa,pdb,networkpolicy,serviceaccount", "-n",
                        namespace, "-l", f"app.kubernetes.io/instance={release}",
                        "-o=name").stdout.split()
    assert sorted(names) == sorted([
        f"deployment.apps/{fullname}", f"deployment.apps/{fullname}-gateway",
        f"horizontalpodautoscaler.autoscaling/{fullname}-gateway",
        f"poddisruptionbudget.policy/{fullname}", f"poddisruptionbudget.policy/{fullname}-gateway",
        f"networkpolicy.networking.k8s.io/{fullname}",
        f"networkpolicy.networking.k8s.io/{fullname}-gateway",
        f"serviceaccount/{fullname}", f"serviceaccount/{fullname}-gateway",
    ])
    operator = kubectl.get("deployment", fullname, namespace)["spec"]["template"]["spec"]
    assert [c["name"] for c in operator["containers"]] == ["operator"]
    service = kubectl.get("service", f"{fullname}-gateway", namespace)
    assert service["spec"]["selector"]["app.kubernetes.io/component"] == "gateway"
    # A GitOps tool applying the same manifests leaves the operator's data alone too.
    rendered = helm_template(*fleet, "--set=crds.install=false", "--skip-tests",
                             release=release, namespace=namespace).stdout
    kubectl.run("apply", "-f", "-", stdin=rendered)
    assert shard_data(kubectl, namespace, shards)[shards[0]] == written

    uninstalled = helm(kubeconfig, "uninstall", release, f"--namespace={namespace}")
    assert uninstalled.returncode == 0, uninstalled.stderr
    left = kubectl.run("get", "secret,deployment,hpa,pdb,role,rolebinding", "-n", namespace,
                       "-l", f"app.kubernetes.io/instance={release}", "-o", "name").stdout
    assert left == ""


def generated(name: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all((ROOT / "crds" / name).read_text()) if doc]


def test_the_chart_carries_the_generated_crd_and_policies_and_keeps_them() -> None:
    rendered = documents(helm_template("--show-only=templates/crds.yaml").stdout)

    for document in rendered:
        # Helm's keep, and what Argo CD honours instead (tests/e2e/test_e2e_argocd.py).
        assert document["metadata"]["annotations"] == {
            "helm.sh/resource-policy": "keep",
            "argocd.argoproj.io/sync-options": "Delete=false,Prune=false"}
        assert document["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        del document["metadata"]["annotations"]
        document["metadata"]["labels"] = {"app.kubernetes.io/part-of": "inference-operator"}
    def by_name(documents: list[dict]) -> dict:
        return {(d["kind"], d["metadata"]["name"]): d for d in documents}

    assert by_name(rendered) == by_name(generated(CRD_FILE) + generated(POLICIES_FILE))


def test_crds_can_be_left_out_or_released_without_the_keep_policy() -> None:
    without_keep = documents(
        helm_template("--show-only=templates/crds.yaml", "--set=crds.keep=false").stdout)
    assert sorted(d["kind"] for d in without_keep) == [
        "CustomResourceDefinition",
        "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding", "ValidatingAdmissionPolicyBinding",
        "ValidatingAdmissionPolicyBinding",
    ]
    assert all("annotations" not in d["metadata"] for d in without_keep)

    kinds = {d["kind"] for d in documents(helm_template("--set=crds.install=false").stdout)}
    assert not kinds & {"CustomResourceDefinition", "ValidatingAdmissionPolicy"}


MONITORING = ["--set=prometheusRule.enabled=true", "--set=grafanaDashboard.enabled=true"]
PROMETHEUS_RULE_CRD = prometheus_operator_crd("PrometheusRule")


def monitoring(*values: str) -> dict[str, dict]:
    """The PrometheusRule and the dashboard ConfigMap rendered with ``values``, by kind."""
    rendered = documents(helm_template(*values, namespace="inference").stdout)
    return {d["kind"]: d for d in rendered
            if d["kind"] == "PrometheusRule" or d["metadata"]["name"].endswith("-dashboard")}


def test_helm_lint_is_clean_with_the_dashboard_and_the_alerts() -> None:
    result = subprocess.run(
        [str(binaries.resolve("helm")), "lint", "--strict", str(CHART), *MONITORING],
        capture_output=True, text=True, check=False, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dashboard_and_the_alerts_are_off_by_default() -> None:
    assert monitoring() == {}
    assert monitoring("--set=grafanaDashboard.enabled=true").keys() == {"ConfigMap"}


def test_the_prometheus_rule_holds_the_generated_groups() -> None:
    rule = monitoring(*MONITORING, "--set=prometheusRule.labels.release=prometheus")[
        "PrometheusRule"]

    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    assert rule["metadata"]["namespace"] == "inference"
    assert rule["spec"] == rule_groups()


def test_the_dashboard_configmap_carries_the_sidecar_label_and_the_dashboard() -> None:
    default = monitoring(*MONITORING)["ConfigMap"]
    assert default["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert default["metadata"]["namespace"] == "inference"
    assert json.loads(default["data"]["inference-operator.json"]) == dashboard()

    custom = monitoring(*MONITORING, "--set=grafanaDashboard.label=dashboards",
                        "--set-string=grafanaDashboard.labelValue=inference",
                        "--set=grafanaDashboard.namespace=monitoring",
                        "--set=grafanaDashboard.annotations.grafana_folder=Inference")[
        "ConfigMap"]
    assert custom["metadata"]["labels"]["dashboards"] == "inference"
    assert "grafana_dashboard" not in custom["metadata"]["labels"]
    assert custom["metadata"]["namespace"] == "monitoring"
    assert custom["metadata"]["annotations"] == {"grafana_folder": "Inference"}


def test_the_dashboard_and_the_alerts_are_accepted_by_the_api_server(
    kubectl: Kubectl, namespace: str, release: str,
) -> None:
    kubectl.apply(PROMETHEUS_RULE_CRD)
    kubectl.wait_for_condition(
        f"crd/{PROMETHEUS_RULE_CRD['metadata']['name']}", "Established", timeout=30)
    rendered = helm_template(*MONITORING, "--show-only=templates/prometheusrule.yaml",
                             "--show-only=templates/grafana-dashboard.yaml",
                             release=release, namespace=namespace).stdout

    result = kubectl.run("apply", "--dry-run=server", "-f", "-", stdin=rendered)

    assert result.stdout.count("(server dry run)") == 2, result.stdout


@pytest.mark.parametrize("mode", ["sidecar", "fleet"])
def test_the_service_monitor_scrapes_the_gateways_and_the_operator_once_each(mode: str) -> None:
    """Two endpoints, one per port name, over the release's Services: the gateways' metrics
    Service (port gateway-metrics; never the public port, which with auth on serves no
    /metrics) and the operator's (port metrics), whose pods differ by mode."""
    rendered = documents(helm_template(f"--set=gateway.mode={mode}",
                                       "--set=serviceMonitor.enabled=true").stdout)
    (monitor,) = [d for d in rendered if d["kind"] == "ServiceMonitor"]
    services = {d["metadata"]["name"]: d for d in rendered if d["kind"] == "Service"}
    pods = {d["metadata"]["name"]: d["spec"]["template"] for d in rendered
            if d["kind"] == "Deployment"}
    operator_pod = pods[chart.RELEASE]

    assert [(e["port"], e["path"]) for e in monitor["spec"]["endpoints"]] == [
        ("gateway-metrics", "/metrics"), ("metrics", "/metrics")]
    selected = {name: service for name, service in services.items()
                if monitor["spec"]["selector"]["matchLabels"].items()
                <= service["metadata"]["labels"].items()}
    ports = {name: [p["name"] for p in s["spec"]["ports"]] for name, s in selected.items()}
    # The gateways' Service keeps its one port: the operator reads replicas from its first.
    # The fleet's peers Service has no port of the monitor's: it is never scraped.
    peers = {f"{chart.RELEASE}-gateway-peers": ["peer"]} if mode == "fleet" else {}
    assert ports == {f"{chart.RELEASE}-gateway": ["http"],
                     f"{chart.RELEASE}-gateway-metrics": ["gateway-metrics"],
                     f"{chart.RELEASE}-operator-metrics": ["metrics"], **peers}
    # Each port name is on one Service only, so each process is scraped once.
    gateway_metrics = selected[f"{chart.RELEASE}-gateway-metrics"]
    assert gateway_metrics["spec"]["selector"] == selected[f"{chart.RELEASE}-gateway"][
        "spec"]["selector"]

    metrics_service = selected[f"{chart.RELEASE}-operator-metrics"]
    assert metrics_service["spec"]["selector"].items() <= (
        operator_pod["metadata"]["labels"].items())
    for name, pod in pods.items():  # the fleet's gateways are not selected
        if name != chart.RELEASE:
            assert not metrics_service["spec"]["selector"].items() <= (
                pod["metadata"]["labels"].items())
    (operator,) = [c for c in operator_pod["spec"]["containers"] if c["name"] == "operator"]
    (port,) = [p for p in operator["ports"] if p["name"] == "metrics"]
    assert port["containerPort"] == metrics_service["spec"]["ports"][0]["port"] == 8081
    assert "--metrics-port=8081" in operator["args"]
