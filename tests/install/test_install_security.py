"""Static checks of what the chart runs, with every values file and in both gateway modes:
the pod hardening the product promises, where the credentials are, no admin listener, no
state on disk, the shard Secrets empty, and container arguments the real CLI accepts."""

from __future__ import annotations

import pytest

from inference_devkit.chart import ci_values_files, documents, helm_template
from inference_operator.cli.gateway import gateway_config
from inference_operator.cli.main import build_parser

SIDECAR = ["--set=gateway.mode=sidecar"]  # an opt-in; the default is fleet
RENDERS = {"default": [], "sidecar": SIDECAR,
           **{p.name: [f"--values={p}"] for p in ci_values_files()}}


def rendered(values: list[str]) -> list[dict]:
    return documents(helm_template(*values).stdout)


def deployments(values: list[str]) -> dict[str, dict]:
    """By component: "operator", and "gateway" in fleet mode."""
    return {d["metadata"]["labels"]["app.kubernetes.io/component"]: d
            for d in rendered(values) if d["kind"] == "Deployment"}


def containers(values: list[str]) -> dict[str, dict]:
    """Every container of the chart's workloads by name (operator, gateway)."""
    found = {}
    for deployment in deployments(values).values():
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            assert container["name"] not in found, container["name"]
            found[container["name"]] = container
    return found


def helm_test_pod(values: list[str]) -> dict:
    (pod,) = documents(
        helm_template(*values, "--show-only=templates/tests/test-gateway.yaml").stdout)
    return pod


@pytest.mark.parametrize("values", RENDERS.values(), ids=RENDERS.keys())
def test_every_pod_is_non_root_read_only_without_capabilities_under_runtime_default(
    values: list[str],
) -> None:
    pods = [d["spec"]["template"]["spec"] for d in deployments(values).values()]
    for pod in [*pods, helm_test_pod(values)["spec"]]:
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] > 0
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        assert "initContainers" not in pod
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True, container["name"]
            assert context["readOnlyRootFilesystem"] is True, container["name"]
            assert context["allowPrivilegeEscalation"] is False, container["name"]
            assert context["capabilities"] == {"drop": ["ALL"]}, container["name"]
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}, container["name"]
            assert "memory" in container["resources"]["limits"], container["name"]


@pytest.mark.parametrize("values", RENDERS.values(), ids=RENDERS.keys())
def test_the_operator_is_one_replica_replaced_not_rolled_and_both_containers_probed(
    values: list[str],
) -> None:
    operator = deployments(values)["operator"]
    assert operator["spec"]["replicas"] == 1
    assert operator["spec"]["strategy"] == {"type": "Recreate"}
    found = containers(values)
    assert found["operator"]["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert found["gateway"]["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert found["gateway"]["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_in_sidecar_mode_both_containers_share_the_pod_and_its_identity() -> None:
    (operator,) = deployments(SIDECAR).values()
    pod = operator["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["operator", "gateway"]
    for container in pod["containers"]:
        (mount,) = (m for m in container["volumeMounts"] if m["name"] == "kube-api-access")
        assert mount == {"name": "kube-api-access", "readOnly": True,
                         "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}


def test_in_fleet_mode_each_workload_has_its_own_identity() -> None:
    values: list[str] = []  # fleet is the default
    found = deployments(values)
    accounts = {d["metadata"]["name"] for d in rendered(values) if d["kind"] == "ServiceAccount"}
    pods = {name: d["spec"]["template"]["spec"] for name, d in found.items()}

    assert {name: [c["name"] for c in pod["containers"]] for name, pod in pods.items()} == {
        "operator": ["operator"], "gateway": ["gateway"]}
    assert pods["operator"]["serviceAccountName"] == "inference-operator"
    assert pods["gateway"]["serviceAccountName"] == "inference-operator-gateway"
    assert accounts == {"inference-operator", "inference-operator-gateway"}
    for pod in pods.values():
        assert "kube-api-access" in {v["name"] for v in pod["volumes"]}


@pytest.mark.parametrize("values", RENDERS.values(), ids=RENDERS.keys())
def test_no_admin_listener_and_no_state_on_disk(values: list[str]) -> None:
    """The gateway takes its endpoints from the shard Secrets only: no admin port, token or
    volume for one, no state file, nothing writable but /tmp."""
    parser = build_parser()
    for container in containers(values).values():
        assert not [a for a in container["args"] if "admin" in a or "state" in a], container
        # "peer": fleet gateways' links to each other (peer admission), checked by token.
        assert {p["name"] for p in container["ports"]} <= {"http", "health", "metrics",
                                                            "gateway-metrics", "peer"}
    for deployment in deployments(values).values():
        volumes = deployment["spec"]["template"]["spec"]["volumes"]
        assert {v["name"] for v in volumes} - {"peer-token"} == {"tmp", "kube-api-access"}
    gateway = gateway_config(parser.parse_args(containers(values)["gateway"]["args"]))
    assert gateway.config_secret and gateway.state_file is None and not gateway.admin_token
    for container in containers(values).values():
        writable = [m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")]
        assert writable == ["/tmp"], container["name"]


@pytest.mark.parametrize("values", RENDERS.values(), ids=RENDERS.keys())
def test_the_config_secrets_are_created_without_data(values: list[str]) -> None:
    """Re-applying the chart (helm upgrade, kubectl apply, GitOps) must leave what the
    operator wrote alone: a manifest without data never touches it."""
    secrets = [d for d in rendered(values) if d["kind"] == "Secret"]
    assert secrets
    for secret in secrets:
        assert secret["metadata"]["labels"]["app.kubernetes.io/component"] == "gateway-config"
        assert set(secret) == {"apiVersion", "kind", "type", "metadata"}, secret
        assert "annotations" not in secret["metadata"]  # no keep policy: uninstall deletes


@pytest.mark.parametrize("values", RENDERS.values(), ids=RENDERS.keys())
def test_the_service_exposes_the_public_listener_only(values: list[str]) -> None:
    # The gateways' Service; the operator's metrics have a Service of their own.
    (service,) = (d for d in rendered(values) if d["kind"] == "Service"
                  and d["metadata"]["name"] == "inference-operator-gateway")
    gateway = build_parser().parse_args(containers(values)["gateway"]["args"])

    assert [(p["name"], p["targetPort"]) for p in service["spec"]["ports"]] == [("http", "http")]
    assert service["spec"]["ports"][0]["port"] == gateway.port == 9200


@pytest.mark.parametrize("values", RENDERS.values(), ids=RENDERS.keys())
def test_container_arguments_are_what_the_cli_accepts(values: list[str]) -> None:
    """Parsed by the real argument parser, so a renamed flag fails here, not in a pod."""
    found = containers(values)
    parser = build_parser()
    fleet = "gateway" in deployments(values)

    operator = parser.parse_args(found["operator"]["args"])
    gateway = parser.parse_args(found["gateway"]["args"])

    assert (operator.command, gateway.command) == ("run", "gateway")
    assert operator.gateway_config_secret == gateway.config_secret
    assert operator.gateway_config_shards == gateway.config_shards
    assert operator.gateway_config_namespace == gateway.namespace == "inference-operator"
    assert operator.gateway_service == "inference-operator-gateway"
    # Fleet gateways find their peers through the headless Service of peer admission.
    assert gateway.peers_service == ("inference-operator-gateway-peers" if fleet else None)
    assert operator.gateway_status_urls == []  # found through the Service's EndpointSlices
    assert operator.anthropic_base_url == gateway.anthropic_base_url
    assert operator.gateway_public_url == "http://inference-operator-gateway.inference-operator.svc:9200"
    assert gateway.host == "0.0.0.0"
