"""The RBAC proof end to end: the real operator, authenticated only as the chart's
ServiceAccount, brings an endpoint to Ready and removes it again, in both RBAC modes,
and never meets a 403."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from inference_operator.controlplane.kubectl import Kubectl
from inference_operator.devstack.processes import Stack

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def example(name: str) -> dict:
    return yaml.safe_load((EXAMPLES / name).read_text())


# With kopf's cluster scanning on, the operator lists and watches CRDs (and, namespaced,
# namespaces) at start: 403s the chart's RBAC rightly causes, retried for about a minute
# before kopf falls back. The operator needs `settings.scanning.disabled = True` in
# controller/lifecycle.configure(); remove this mark then (strict: it fails once fixed).
@pytest.mark.parametrize("mode", ["cluster-wide", "namespaced"])
def test_the_operator_as_the_chart_service_account_serves_without_a_403(
    mode: str, chart_service_account, make_namespaces, kubectl: Kubectl, tmp_path: Path,
) -> None:
    (team,) = make_namespaces(1)
    watch = [] if mode == "cluster-wide" else [f"--set=watchNamespaces={{{team}}}"]
    kubeconfig = chart_service_account(*watch)
    credentials = example("anthropic-credentials.secret.yaml")
    endpoint = example("anthropic-completion.yaml")
    # Unique across the shared test cluster, which the cluster-wide operator sees whole.
    endpoint["spec"]["inference_id"] = f"{team}-completion"

    stack = Stack(tmp_path / "stack", api_keys=(credentials["stringData"]["api_key"],))
    try:
        stack.start(stack.emulator())
        stack.start(stack.gateway())
        operator = stack.start(stack.operator(
            kubeconfig, *(["--namespace", team] if mode == "namespaced" else [])))
        kubectl.apply([credentials, endpoint], team)

        kubectl.wait_for_condition("iep/anthropic-completion", "Ready", team, timeout=30)
        # Deleting goes through the operator's finalizer: the patch that removes it is
        # the last call the operator makes for an endpoint.
        kubectl.run("delete", "iep", "anthropic-completion", "-n", team, "--timeout=30s")
    finally:
        stack.stop()
        print(stack.log_tails())  # shown by pytest only when the test fails

    log = operator.log_text()
    assert "403" not in log and "Forbidden" not in log and "permission" not in log.lower(), log
