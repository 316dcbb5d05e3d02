"""GitOps health: the shipped Argo CD Lua check, run by a Lua 5.1 interpreter (Argo CD's
gopher-lua dialect) against statuses the operator's own condition builder writes; the
documented argocd-cm install; the Flux and Argo CD examples' contracts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from lupa.lua51 import LuaRuntime

import resources
from argocd_support import HEALTH_KEY as ARGOCD_KEY
from argocd_support import HEALTH_LUA, application
from inference_devkit.controlplane.kubectl import Kubectl
from inference_operator.api.models import GROUP, KIND, VERSION, Reason
from inference_operator.controller.conditions import Outcome, build_conditions

ROOT = Path(__file__).resolve().parents[2]

# Argo CD runs health scripts without Lua's open libraries (no string, os, io, ...); the
# script gets this much and `obj`.
SANDBOX = """
local script, obj = ...
local chunk = assert(loadstring(script, "argocd-health.lua"))
setfenv(chunk, {obj = obj, ipairs = ipairs, pairs = pairs, tostring = tostring,
                type = type, next = next, table = table})
local hs = chunk()
return hs.status, hs.message
"""


def health(endpoint: dict) -> tuple[str, str]:
    lua = LuaRuntime()
    return lua.execute(SANDBOX, HEALTH_LUA.read_text(), lua.table_from(endpoint, recursive=True))


def endpoint(generation: int = 2, outcome: Outcome | None = None,
             observed: int | None = None) -> dict:
    """The example endpoint with the status the operator writes for ``outcome``."""
    status = None
    if outcome is not None:
        seen = generation if observed is None else observed
        status = {"observedGeneration": seen, "conditions": build_conditions(outcome, seen, None)}
    return resources.endpoint("anthropic-completion", generation=generation, status=status)


def test_a_serving_endpoint_is_healthy() -> None:
    status, message = health(endpoint(outcome=Outcome.serving("served at http://gw/x")))
    assert status == "Healthy"
    assert message == "Serving: served at http://gw/x"


def test_an_endpoint_that_needs_a_human_is_degraded() -> None:
    outcome = Outcome.needs_human(Reason.UPSTREAM_AUTH_FAILED, "Anthropic refused the key")
    assert health(endpoint(outcome=outcome)) == (
        "Degraded", "UpstreamAuthFailed: Anthropic refused the key")


def test_an_endpoint_waiting_for_its_secret_is_progressing_not_degraded() -> None:
    outcome = Outcome.waiting(Reason.SECRET_NOT_FOUND, "Secret 'creds' not found")
    assert health(endpoint(outcome=outcome)) == (
        "Progressing", "SecretNotFound: Secret 'creds' not found")


def test_a_generation_not_yet_observed_is_progressing_even_if_it_was_ready() -> None:
    stale = endpoint(generation=3, observed=2, outcome=Outcome.serving("served"))
    assert health(stale) == (
        "Progressing", "Waiting for the operator to observe generation 3")


def test_an_endpoint_without_status_is_progressing() -> None:
    assert health(endpoint()) == (
        "Progressing", "Waiting for the operator to report status")


def test_ready_false_without_reconciling_or_stalled_is_progressing() -> None:
    outcome = Outcome(ready=False, reason="GatewayUnavailable", message="gateway restarting")
    assert health(endpoint(outcome=outcome)) == (
        "Progressing", "GatewayUnavailable: gateway restarting")


def test_the_documented_argocd_cm_patch_adds_the_check_and_keeps_other_settings(
    kubectl: Kubectl, namespace: str
) -> None:
    """docs/install.md's two kubectl calls, against the real API server: a merge patch of
    one key, so Argo CD's own settings survive however argocd-cm was applied. (A
    server-side apply would not: kubectl hands it the fields of an earlier client-side
    apply, and it drops those it does not list.)"""
    kubectl.apply({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "argocd-cm", "namespace": namespace},
                   "data": {"url": "https://argocd.example.com"}})

    data = kubectl.run("create", "configmap", "health", "--dry-run=client",
                       f"--from-file={ARGOCD_KEY}={HEALTH_LUA}", "-o", "jsonpath={.data}").stdout
    kubectl.run("patch", "configmap", "argocd-cm", "-n", namespace, "--type=merge",
                "-p", f'{{"data": {data}}}')

    data = kubectl.get("configmap", "argocd-cm", namespace)["data"]
    assert data == {"url": "https://argocd.example.com", ARGOCD_KEY: HEALTH_LUA.read_text()}


def flux_documents() -> dict[str, dict]:
    path = ROOT / "examples" / "flux" / "inference-operator.yaml"
    return {d["metadata"]["name"]: d for d in yaml.safe_load_all(path.read_text()) if d}


def test_flux_installs_manifests_and_waits_for_them() -> None:
    operator = flux_documents()["inference-operator"]["spec"]
    assert operator["wait"] is True and operator["prune"] is True
    path = Path(operator["path"])
    assert (ROOT / path / "kustomization.yaml").exists(), path


def test_flux_health_checks_the_endpoints_through_kstatus() -> None:
    endpoints = flux_documents()["inference-endpoints"]["spec"]
    assert endpoints["dependsOn"] == [{"name": "inference-operator"}]
    assert "healthCheckExprs" not in endpoints  # kstatus reads our conditions as they are
    (check,) = endpoints["healthChecks"]
    assert (check["apiVersion"], check["kind"]) == (f"{GROUP}/{VERSION}", KIND)


def argocd_documents() -> dict[str, dict]:
    path = ROOT / "examples" / "argocd" / "inference-operator.yaml"
    return {d["metadata"]["name"]: d for d in yaml.safe_load_all(path.read_text()) if d}


def test_the_argocd_example_syncs_endpoints_as_the_argocd_tests_do() -> None:
    """The example's endpoints Application has the shape tests/argocd syncs for real."""
    example = argocd_documents()["team-a-inference"]
    spec = example["spec"]
    tested = application("x", spec["source"]["repoURL"], spec["source"]["path"],
                         spec["destination"]["namespace"])
    assert example["metadata"]["finalizers"] == tested["metadata"]["finalizers"]
    assert spec["source"]["directory"] == tested["spec"]["source"]["directory"]
    assert spec["destination"] == tested["spec"]["destination"]
    assert spec["syncPolicy"] == tested["spec"]["syncPolicy"]


def test_the_argocd_example_installs_the_chart_as_the_e2e_test_does() -> None:
    example = argocd_documents()["inference-operator"]["spec"]
    assert (ROOT / example["source"]["path"] / "Chart.yaml").exists()
    assert set(example["source"]["helm"]) == {"releaseName", "valuesObject"}
    assert example["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}


@pytest.mark.parametrize("reason", [Reason.SPEC_INVALID, Reason.MODEL_NOT_FOUND])
def test_stalled_wins_over_a_stale_ready_message(reason: str) -> None:
    outcome = Outcome.needs_human(reason, "fix the spec")
    status, _ = health(endpoint(outcome=outcome))
    assert status == "Degraded"
