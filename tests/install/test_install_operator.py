"""The RBAC proof end to end: the real operator and gateway, each authenticated only as the
chart's ServiceAccount it runs as in a pod, the gateway with the chart's flags for its
callers, bring an endpoint to Ready (written into the chart's shard Secrets, read back by
the gateway), serve it to the caller the examples grant it to, and remove it again, in
both RBAC modes and both gateway modes, and never meet a 403."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import pytest
import yaml

from inference_devkit.chart import documents, helm_template
from inference_devkit.controlplane.kubectl import Kubectl
from inference_devkit.devstack.processes import Stack

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


# A 403 as the processes log one: the access log's "status": 403, a Kubernetes Status's
# "code": 403, aiohttp's "403, message=..."; never three digits of a timestamp (",403").
FORBIDDEN = re.compile(r"""["']?(?:status|code)["']?\s*[:=]\s*403\b|\b403, message=|Forbidden""")


def example(name: str) -> dict:
    return yaml.safe_load((EXAMPLES / name).read_text())


def caller_flags(*values: str) -> list[str]:
    """The chart's gateway flags about callers (--auth..., the access log)."""
    for document in documents(helm_template(*values).stdout):
        if document["kind"] == "Deployment":
            for container in document["spec"]["template"]["spec"]["containers"]:
                if container["name"] == "gateway":
                    return [a for a in container["args"] if a.startswith(
                        ("--auth", "--access-log", "--no-access-log", "--caller-metrics"))]
    raise AssertionError("no gateway container")


@pytest.mark.parametrize(("rbac", "mode"), [
    ("cluster-wide", "sidecar"), ("namespaced", "sidecar"), ("cluster-wide", "fleet")])
def test_the_operator_and_gateway_as_the_chart_service_accounts_serve_without_a_403(
    rbac: str, mode: str, chart_service_account, make_namespaces, control_plane,
    kubectl: Kubectl, namespace: str, release: str, tmp_path: Path,
) -> None:
    (team,) = make_namespaces(1)
    values = [f"--set=gateway.mode={mode}"]
    if rbac == "namespaced":
        values.append(f"--set=watchNamespaces={{{team}}}")
    operator_kubeconfig = chart_service_account(*values)
    # Sidecar mode: the gateway container holds the pod's only identity, the operator's.
    gateway_kubeconfig = (chart_service_account(*values, identity="gateway")
                          if mode == "fleet" else operator_kubeconfig)
    credentials = example("anthropic-credentials.secret.yaml")
    endpoint = example("anthropic-completion.yaml")
    # Unique across the shared test cluster, which the cluster-wide operator sees whole.
    endpoint["spec"]["inference_id"] = f"{team}-completion"

    # Who calls: the examples' ServiceAccount, granted invoke on the example endpoint.
    caller = [d for d in yaml.safe_load_all((EXAMPLES / "example-app.yaml").read_text()) if d]
    kubectl.apply(caller, team)
    token = kubectl.run("create", "token", "example-app", "-n", team,
                        "--audience=inference-operator").stdout.strip()
    flags = caller_flags(*values)
    assert "--auth=kubernetes" in flags

    # The chart's shard Secrets (created by chart_service_account) in the release namespace.
    stack = Stack(tmp_path / "stack", api_keys=(credentials["stringData"]["api_key"],),
                  kubeconfig=control_plane.kubeconfig, config_namespace=namespace,
                  config_secret=f"{release}-inference-operator-gateway-config")
    try:
        stack.start(stack.emulator())
        gateway = stack.gateway(*flags)
        gateway.env["KUBECONFIG"] = str(gateway_kubeconfig)
        stack.start(gateway)
        operator = stack.start(stack.operator(
            *(["--namespace", team] if rbac == "namespaced" else []),
            kubeconfig=operator_kubeconfig))
        kubectl.apply([credentials, endpoint], team)

        kubectl.wait_for_condition("iep/anthropic-completion", "Ready", team, timeout=30)
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback
        listing = urllib.request.Request(f"{stack.gateway_url}/_inference/_all",
                                         headers={"Authorization": f"Bearer {token}"})
        with direct.open(listing, timeout=5) as answer:
            served = [e["inference_id"] for e in json.load(answer)["endpoints"]]
        # Exactly the one it may invoke, of all the cluster-wide operator serves.
        assert served == [endpoint["spec"]["inference_id"]]
        # Deleting goes through the operator's finalizer: the patch that removes it is
        # the last call the operator makes for an endpoint.
        kubectl.run("delete", "iep", "anthropic-completion", "-n", team, "--timeout=30s")
    finally:
        stack.stop()
        print(stack.log_tails())  # shown by pytest only when the test fails

    for service in (operator, gateway):
        log = service.log_text()
        assert not FORBIDDEN.search(log), log
        assert "permission" not in log.lower(), log


@pytest.mark.parametrize(("line", "refused"), [
    ('{"status": 403, "path": "/_inference/x"}', True),
    ("{'kind': 'Status', 'code': 403}", True),
    ("403, message='Forbidden', url='https://127.0.0.1:6443/api'", True),
    ("APIForbiddenError: secrets is forbidden", True),
    ("2026-12-06 03:12:09,403 INFO gateway listening", False),
    ('{"status": 200, "latency_ms": 403.2}', False),
])
def test_a_403_is_read_where_it_is_logged_not_in_a_timestamp(line: str, refused: bool) -> None:
    assert bool(FORBIDDEN.search(line)) is refused
