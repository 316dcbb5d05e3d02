"""The two gateway modes as rendered: which pods the Service, budgets and policies select,
the fleet's rollout, spread and autoscaling, the values checked at render time, and the
configuration shard names, which the operator, the gateways, RBAC and the Secrets must
agree on (with the contract's defaults, api/gateway_config.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from test_install_auth import gateway_pod

from inference_devkit import chart
from inference_devkit.chart import documents, helm_template
from inference_operator.api.gateway_config import DEFAULT_SECRET_NAME, DEFAULT_SHARDS, Shards
from inference_operator.cli.main import build_parser
from inference_operator.gateway.peering.identity import AUDIENCE as PEER_AUDIENCE

ROOT = Path(__file__).resolve().parents[2]
VALUES = yaml.safe_load((ROOT / chart.CHART / "values.yaml").read_text())
FLEET = "--set=gateway.mode=fleet"  # the default, said where a test is about fleet mode
SIDECAR = "--set=gateway.mode=sidecar"
MODES = {"sidecar": [SIDECAR], "fleet": []}
DELEGATOR = "inference-operator-gateway-auth-delegator"


def render(*values: str) -> list[dict]:
    return documents(helm_template(*values).stdout)


def objects(rendered: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in rendered if d["kind"] == kind}


def pod_labels(rendered: list[dict]) -> dict[str, dict]:
    """Each Deployment's pod labels, by Deployment name; and the `helm test` pod's."""
    labels = {name: d["spec"]["template"]["metadata"]["labels"]
              for name, d in objects(rendered, "Deployment").items()}
    return {**labels, "helm test": next(iter(objects(rendered, "Pod").values()))["metadata"][
        "labels"]}


def selects(selector: dict, labels: dict) -> bool:
    return selector.items() <= labels.items()


def selected(selector: dict, rendered: list[dict]) -> set[str]:
    return {name for name, labels in pod_labels(rendered).items() if selects(selector, labels)}


def args_of(rendered: list[dict], container: str) -> list[str]:
    for deployment in objects(rendered, "Deployment").values():
        for found in deployment["spec"]["template"]["spec"]["containers"]:
            if found["name"] == container:
                return found["args"]
    raise AssertionError(f"no container {container}")


def test_the_default_shard_count_is_the_contracts() -> None:
    assert VALUES["gateway"]["configShards"] == DEFAULT_SHARDS
    # The plain manifests' release is named like the chart: the contract's default names.
    (operator,) = (d for d in documents((ROOT / chart.INSTALL_YAML).read_text())
                   if d["kind"] == "Deployment"
                   and d["metadata"]["labels"]["app.kubernetes.io/component"] == "operator")
    args = build_parser().parse_args(operator["spec"]["template"]["spec"]["containers"][0]["args"])
    assert args.gateway_config_secret == DEFAULT_SECRET_NAME


@pytest.mark.parametrize("values", [[SIDECAR], [], [FLEET, "--set=gateway.configShards=3"],
                                    [SIDECAR, "--set=gateway.configShards=1",
                                     "--set=watchNamespaces={team-a}"]],
                         ids=["sidecar", "fleet", "fleet-3-shards", "namespaced-1-shard"])
def test_operator_gateway_rbac_and_secrets_name_the_same_shards(values: list[str]) -> None:
    rendered = render(*values)
    parser = build_parser()
    operator = parser.parse_args(args_of(rendered, "operator"))
    gateway = parser.parse_args(args_of(rendered, "gateway"))
    shards = Shards(operator.gateway_config_secret, operator.gateway_config_shards).names()

    assert Shards(gateway.config_secret, gateway.config_shards).names() == shards
    assert sorted(objects(rendered, "Secret")) == sorted(shards)
    assert {s["metadata"]["namespace"] for s in objects(rendered, "Secret").values()} == {
        operator.gateway_config_namespace}
    roles = objects(rendered, "Role")
    for role, verbs in (("inference-operator-operator", ["get", "update", "patch"]),
                        ("inference-operator-gateway", ["get", "list", "watch"])):
        (secrets,) = (r for r in roles[role]["rules"] if r["resources"] == ["secrets"])
        assert secrets == {"apiGroups": [""], "resources": ["secrets"],
                           "resourceNames": shards, "verbs": verbs}
        assert roles[role]["metadata"]["namespace"] == operator.gateway_config_namespace


@pytest.mark.parametrize("mode", MODES)
def test_the_service_selects_exactly_the_pods_that_serve(mode: str) -> None:
    rendered = render(*MODES[mode])
    services = objects(rendered, "Service")
    service = services["inference-operator-gateway"]
    serving = "inference-operator-gateway" if mode == "fleet" else "inference-operator"

    # In fleet mode also the gateways' own, for peer admission.
    peers = ["inference-operator-gateway-peers"] if mode == "fleet" else []
    assert sorted(services) == sorted([
        "inference-operator-gateway", "inference-operator-gateway-metrics",
        "inference-operator-operator-metrics", *peers])
    assert selected(service["spec"]["selector"], rendered) == {serving}
    # Callers' Service: the public port only; the gateways' metrics have a Service of
    # their own, on the same pods.
    assert [port["name"] for port in service["spec"]["ports"]] == ["http"]
    gateway_metrics = services["inference-operator-gateway-metrics"]
    assert selected(gateway_metrics["spec"]["selector"], rendered) == {serving}
    assert gateway_metrics["spec"]["ports"] == [{"name": "gateway-metrics", "port": 9202,
                                                 "targetPort": "gateway-metrics",
                                                 "protocol": "TCP"}]
    gateway = build_parser().parse_args(args_of(rendered, "gateway"))
    assert gateway.metrics_port == VALUES["gateway"]["metricsPort"] == 9202
    assert gateway.metrics_host == "0.0.0.0"  # Prometheus scrapes the pod's address
    # The operator reads the organisation limits from the same Service's endpoints.
    operator = build_parser().parse_args(args_of(rendered, "operator"))
    assert operator.gateway_metrics_service == "inference-operator-gateway-metrics"
    # The operator's metrics Service: the operator's pod in both modes.
    metrics = services["inference-operator-operator-metrics"]
    assert selected(metrics["spec"]["selector"], rendered) == {"inference-operator"}
    # Every selector of a Deployment picks its own pods only.
    for name, deployment in objects(rendered, "Deployment").items():
        assert selected(deployment["spec"]["selector"]["matchLabels"], rendered) == {name}
    labels = pod_labels(rendered)[serving]
    assert labels["app.kubernetes.io/component"] == ("gateway" if mode == "fleet" else "operator")


def test_fleet_mode_runs_the_gateways_apart_and_rolls_them_without_losing_capacity() -> None:
    rendered = render(FLEET)
    deployments = objects(rendered, "Deployment")
    assert sorted(deployments) == ["inference-operator", "inference-operator-gateway"]
    gateway = deployments["inference-operator-gateway"]
    spec = gateway["spec"]
    assert spec["replicas"] == VALUES["gateway"]["replicas"] == 2
    assert spec["strategy"] == {"type": "RollingUpdate",
                                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    pod = spec["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > (
        VALUES["gateway"]["shutdownDelaySeconds"] + VALUES["gateway"]["shutdownTimeoutSeconds"])
    args = build_parser().parse_args(pod["containers"][0]["args"])
    assert (args.shutdown_delay, args.shutdown_timeout) == (5, 20)
    assert pod["topologySpreadConstraints"] == [{
        "maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
        "whenUnsatisfiable": "ScheduleAnyway",
        "labelSelector": {"matchLabels": spec["selector"]["matchLabels"]}}]
    assert gateway["metadata"]["labels"]["app.kubernetes.io/component"] == "gateway"

    (budget,) = objects(rendered, "PodDisruptionBudget").values()
    assert budget["metadata"]["name"] == "inference-operator-gateway"
    assert budget["spec"]["maxUnavailable"] == 1
    assert selected(budget["spec"]["selector"]["matchLabels"], rendered) == {
        "inference-operator-gateway"}
    assert objects(rendered, "HorizontalPodAutoscaler") == {}


def test_fleet_autoscaling_leaves_the_replicas_to_the_autoscaler() -> None:
    rendered = render(FLEET, "--set=gateway.autoscaling.enabled=true",
                      "--set=gateway.autoscaling.minReplicas=3",
                      "--set=gateway.autoscaling.maxReplicas=7")
    gateway = objects(rendered, "Deployment")["inference-operator-gateway"]
    (hpa,) = objects(rendered, "HorizontalPodAutoscaler").values()

    assert "replicas" not in gateway["spec"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1", "kind": "Deployment", "name": "inference-operator-gateway"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 7)
    assert hpa["spec"]["metrics"] == [{"type": "Resource", "resource": {
        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}]


def test_a_topology_constraint_with_its_own_selector_keeps_it() -> None:
    own = [{"maxSkew": 2, "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"a": "b"}}}]
    rendered = render(FLEET, f"--set-json=gateway.topologySpreadConstraints={json.dumps(own)}")
    pod = objects(rendered, "Deployment")["inference-operator-gateway"]["spec"]["template"]
    assert pod["spec"]["topologySpreadConstraints"] == own


def test_fleet_is_the_default_mode() -> None:
    """The caller-facing gateway runs under its own narrow identity unless one opts in to
    the sidecar (docs/install.md, "Gateway modes")."""
    assert VALUES["gateway"]["mode"] == "fleet"
    rendered = render()
    assert sorted(objects(rendered, "Deployment")) == ["inference-operator",
                                                       "inference-operator-gateway"]
    operator = objects(rendered, "Deployment")["inference-operator"]["spec"]["template"]["spec"]
    assert [c["name"] for c in operator["containers"]] == ["operator"]


def test_sidecar_mode_renders_no_fleet_object_and_one_pod() -> None:
    rendered = render(SIDECAR, "--set=podDisruptionBudget.enabled=true",
                      "--set=networkPolicy.enabled=true")
    assert list(objects(rendered, "Deployment")) == ["inference-operator"]
    assert list(objects(rendered, "ServiceAccount")) == ["inference-operator"]
    assert objects(rendered, "HorizontalPodAutoscaler") == {}
    (budget,) = objects(rendered, "PodDisruptionBudget").values()  # the operator's own
    assert budget["spec"]["minAvailable"] == 1
    assert list(objects(rendered, "NetworkPolicy")) == ["inference-operator"]
    bindings = objects(rendered, "RoleBinding")
    assert {b["subjects"][0]["name"] for b in bindings.values()} == {"inference-operator"}


@pytest.mark.parametrize(("values", "message"), [
    (["--set=gateway.shutdownTimeoutSeconds=25"],
     "terminationGracePeriodSeconds (30) must exceed gateway.shutdownDelaySeconds + "
     "gateway.shutdownTimeoutSeconds (30)"),
    ([FLEET, "--set=terminationGracePeriodSeconds=10"], "must exceed"),
    ([SIDECAR, "--set=gateway.autoscaling.enabled=true"],
     "gateway.autoscaling needs gateway.mode=fleet"),
    ([FLEET, "--set=gateway.autoscaling.enabled=true", "--set=gateway.autoscaling.minReplicas=9",
      "--set=gateway.autoscaling.maxReplicas=3"], "minReplicas must not exceed"),
    ([FLEET, "--set=gateway.autoscaling.enabled=true", "--set=gateway.resources.requests=null"],
     "needs gateway.resources.requests.cpu"),
    ([FLEET, "--set=serviceAccount.create=false", "--set=serviceAccount.name=mine"],
     "gateway.serviceAccount.name is required"),
    (["--set=gateway.mode=fleets"], "value must be one of 'sidecar', 'fleet'"),
    (["--set=gateway.configShards=0"], "/gateway/configShards"),
    (["--set=gateway.autoscalling.enabled=true"], "'autoscalling' not allowed"),
])
def test_inconsistent_values_fail_the_render_with_the_reason(
    values: list[str], message: str,
) -> None:
    result = helm_template(*values, check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_the_network_policies_let_the_operator_poll_every_gateway() -> None:
    """Ingress to the public port from the allowed clients, the `helm test` pod and the
    operator (which asks each gateway which configuration it serves); the operator may
    reach exactly the serving pods' port besides DNS and the configured ports."""
    client = {"namespaceSelector": {"matchLabels": {"client": "yes"}}}
    scraper = {"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}
    for mode, extra in MODES.items():
        rendered = render(*extra, "--set=networkPolicy.enabled=true",
                          f"--set-json=networkPolicy.ingressFrom=[{json.dumps(client)}]",
                          f"--set-json=networkPolicy.metricsFrom=[{json.dumps(scraper)}]")
        policies = objects(rendered, "NetworkPolicy")
        serving = "inference-operator-gateway" if mode == "fleet" else "inference-operator"
        assert sorted(policies) == sorted({"inference-operator", serving})
        for name, policy in policies.items():
            assert selected(policy["spec"]["podSelector"]["matchLabels"], rendered) == {name}

        (ingress,) = (rule for rule in policies[serving]["spec"]["ingress"]
                      if rule["ports"] == [{"port": "http", "protocol": "TCP"}])
        peers = [p["podSelector"]["matchLabels"] for p in ingress["from"] if "podSelector" in p]
        assert client in ingress["from"]
        assert {name for peer in peers for name in selected(peer, rendered)} == {
            "inference-operator", "helm test"}
        operator = policies["inference-operator"]["spec"]
        # Prometheus, from metricsFrom only, to the operator's metrics port and the
        # gateways' (whose public port serves no /metrics with auth on); in fleet mode that
        # is all the operator's pod takes.
        metrics = {"ports": [{"port": "metrics", "protocol": "TCP"}], "from": [scraper]}
        gateway_metrics = {"ports": [{"port": "gateway-metrics", "protocol": "TCP"}],
                           "from": [scraper]}
        assert metrics in operator["ingress"]
        assert gateway_metrics in policies[serving]["spec"]["ingress"]
        if mode == "fleet":
            assert operator["ingress"] == [metrics]
        # The operator to every gateway's /healthz and metrics listener (the organisation
        # limits for status), whatever metricsFrom allows.
        (to_gateways,) = (rule for rule in operator["egress"] if "to" in rule)
        (target,) = to_gateways["to"]
        assert selected(target["podSelector"]["matchLabels"], rendered) == {serving}
        assert to_gateways["ports"] == [{"port": 9200, "protocol": "TCP"},
                                        {"port": 9202, "protocol": "TCP"}]
        (from_operator,) = (rule for rule in policies[serving]["spec"]["ingress"]
                            if rule["ports"] == gateway_metrics["ports"]
                            and rule.get("from") != [scraper])
        (source,) = from_operator["from"]
        assert selected(source["podSelector"]["matchLabels"], rendered) == {"inference-operator"}
        # The gateways reach DNS, the API server (the shards) and Anthropic.
        ports = {p["port"] for rule in policies[serving]["spec"]["egress"] for p in rule["ports"]}
        assert ports >= {53, 443, 6443}


def test_peer_admission_is_on_by_default_with_its_service_token_and_policy() -> None:
    """Gateways find each other through a headless Service that names the peer port, hold
    a token only peers accept, may review each other's (whatever the caller auth mode) and,
    with policies on, reach each other on that port and nothing else does."""
    rendered = render("--set=gateway.auth.mode=none", "--set=networkPolicy.enabled=true")
    pod = gateway_pod(rendered)
    (container,) = pod["containers"]
    gateway = build_parser().parse_args(container["args"])
    peers = objects(rendered, "Service")[gateway.peers_service]
    assert peers["spec"]["clusterIP"] == "None"
    assert selected(peers["spec"]["selector"], rendered) == {"inference-operator-gateway"}
    assert [(p["name"], p["port"], p["targetPort"]) for p in peers["spec"]["ports"]] == [
        ("peer", gateway.peer_port, "peer")]
    assert {"name": "peer", "containerPort": gateway.peer_port} in container["ports"]
    assert {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}} in (
        container["env"])

    (mount,) = (m for m in container["volumeMounts"]
                if str(gateway.peer_token_file).startswith(m["mountPath"] + "/"))
    (volume,) = (v for v in pod["volumes"] if v["name"] == mount["name"])
    (source,) = volume["projected"]["sources"]
    assert source["serviceAccountToken"]["audience"] == PEER_AUDIENCE
    assert gateway.peer_token_file.name == source["serviceAccountToken"]["path"]

    # With auth none, a binding for the peers' TokenReviews alone.
    binding = objects(rendered, "ClusterRoleBinding")["inference-operator-gateway-token-reviewer"]
    assert binding["subjects"][0]["name"] == pod["serviceAccountName"]

    policy = objects(rendered, "NetworkPolicy")["inference-operator-gateway"]["spec"]
    (inbound,) = (r for r in policy["ingress"] if r["ports"][0]["port"] == "peer")
    (outbound,) = (r for r in policy["egress"] if "to" in r)
    assert outbound["ports"] == [{"port": gateway.peer_port, "protocol": "TCP"}]
    for rule in (inbound["from"], outbound["to"]):
        (peer,) = rule
        assert selected(peer["podSelector"]["matchLabels"], rendered) == {
            "inference-operator-gateway"}


def test_without_peer_admission_the_gateways_share_each_limit_by_the_service() -> None:
    rendered = render("--set=gateway.peerAdmission.enabled=false", "--set=gateway.auth.mode=none")
    (container,) = gateway_pod(rendered)["containers"]
    gateway = build_parser().parse_args(container["args"])
    assert gateway.peer_port is None
    assert gateway.peers_service == "inference-operator-gateway"
    assert "inference-operator-gateway-peers" not in objects(rendered, "Service")
    assert DELEGATOR not in objects(rendered, "ClusterRoleBinding")
    assert "env" not in container


def test_declared_organisation_limits_reach_every_gateway_as_options() -> None:
    ceilings = {"sonnet-4": {"output-tokens": 80_000, "input-tokens": 400_000},
                "opus-4": {"requests": 50}}
    for extra in MODES.values():
        rendered = render(*extra, f"--set-json=gateway.orgLimitCeilings={json.dumps(ceilings)}")
        gateway = build_parser().parse_args(args_of(rendered, "gateway"))
        assert {(c.model_class, c.limit, c.per_minute) for c in gateway.org_limit_ceilings} == {
            ("sonnet-4", "output-tokens", 80_000), ("sonnet-4", "input-tokens", 400_000),
            ("opus-4", "requests", 50)}
    assert build_parser().parse_args(args_of(render(), "gateway")).org_limit_ceilings == []


def test_a_declared_limit_that_is_no_limit_fails_the_render() -> None:
    for ceilings in ({"sonnet-4": {"tokens": 5}}, {"sonnet-4": {"requests": 0}}):
        result = helm_template(f"--set-json=gateway.orgLimitCeilings={json.dumps(ceilings)}",
                               check=False)
        assert result.returncode != 0 and "orgLimitCeilings" in result.stderr, result.stderr
