"""Static checks of what the chart runs, with every values file: the pod hardening the
product promises, and container arguments the real CLI accepts."""

from __future__ import annotations

import pytest

from inference_operator.chart import ci_values_files, documents, helm_template
from inference_operator.cli.main import build_parser

RENDERS = {"default": [], **{p.name: [f"--values={p}"] for p in ci_values_files()}}


def workload(values: list[str]) -> tuple[dict, dict]:
    rendered = documents(helm_template(*values).stdout)
    (deployment,) = (d for d in rendered if d["kind"] == "Deployment")
    (test_pod,) = documents(
        helm_template(*values, "--show-only=templates/tests/test-gateway.yaml").stdout)
    return deployment, test_pod


@pytest.mark.parametrize("values", RENDERS.values(), ids=RENDERS.keys())
def test_every_pod_is_non_root_read_only_without_capabilities_under_runtime_default(
    values: list[str],
) -> None:
    deployment, test_pod = workload(values)
    for pod in (deployment["spec"]["template"]["spec"], test_pod["spec"]):
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] > 0
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        for container in pod.get("initContainers", []) + pod["containers"]:
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True, container["name"]
            assert context["readOnlyRootFilesystem"] is True, container["name"]
            assert context["allowPrivilegeEscalation"] is False, container["name"]
            assert context["capabilities"] == {"drop": ["ALL"]}, container["name"]
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}, container["name"]
            assert "memory" in container["resources"]["limits"], container["name"]


@pytest.mark.parametrize("values", RENDERS.values(), ids=RENDERS.keys())
def test_one_replica_replaced_not_rolled_with_probes_on_both_containers(
    values: list[str],
) -> None:
    deployment, _ = workload(values)
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    containers = {c["name"]: c for c in deployment["spec"]["template"]["spec"]["containers"]}
    assert containers["operator"]["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert containers["gateway"]["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert containers["gateway"]["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_only_the_operator_container_holds_kubernetes_credentials() -> None:
    deployment, _ = workload([])
    pod = deployment["spec"]["template"]["spec"]
    mounts = {c["name"]: {m["name"] for m in c["volumeMounts"]} for c in pod["containers"]}
    assert "kube-api-access" in mounts["operator"]
    assert "kube-api-access" not in mounts["gateway"]
    # Both share the per-pod admin token, read-only.
    for container in pod["containers"]:
        (token,) = (m for m in container["volumeMounts"] if m["name"] == "admin-token")
        assert token["readOnly"] is True
    (volume,) = (v for v in pod["volumes"] if v["name"] == "admin-token")
    assert volume["emptyDir"]["medium"] == "Memory"


def test_the_service_exposes_the_public_listener_only() -> None:
    rendered = documents(helm_template().stdout)
    (service,) = (d for d in rendered if d["kind"] == "Service")
    (deployment,) = (d for d in rendered if d["kind"] == "Deployment")
    gateway = build_parser().parse_args(
        deployment["spec"]["template"]["spec"]["containers"][1]["args"])

    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]
    assert gateway.admin_host == "127.0.0.1"
    assert service["spec"]["ports"][0]["port"] == gateway.port


@pytest.mark.parametrize("values", RENDERS.values(), ids=RENDERS.keys())
def test_container_arguments_are_what_the_cli_accepts(values: list[str]) -> None:
    """Parsed by the real argument parser, so a renamed flag fails here, not in a pod."""
    deployment, _ = workload(values)
    containers = {c["name"]: c for c in deployment["spec"]["template"]["spec"]["containers"]}
    parser = build_parser()

    operator = parser.parse_args(containers["operator"]["args"])
    gateway = parser.parse_args(containers["gateway"]["args"])

    assert (operator.command, gateway.command) == ("run", "gateway")
    assert operator.gateway_admin_url == f"http://127.0.0.1:{gateway.admin_port}"
    assert operator.gateway_admin_token_file == gateway.admin_token_file
    assert operator.anthropic_base_url == gateway.anthropic_base_url
    assert operator.gateway_public_url.endswith(".svc:9200")
