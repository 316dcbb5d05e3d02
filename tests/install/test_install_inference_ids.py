"""Inference ids reserved through the chart (values `admission.*`, docs/install.md
"Reserving inference ids"): a real release binds its prefixes, `helm upgrade` with other
values changes them, and the default render (manifests/install.yaml) reserves nothing
until the administrator edits its ConfigMap."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from install_support import helm

from inference_operator import chart
from inference_operator.api import policies
from inference_operator.api.generate import POLICIES_FILE
from inference_operator.chart import documents, helm_template
from inference_operator.controlplane.kubectl import Kubectl
from inference_operator.waiting import poll
from operator_support import endpoint

ROOT = Path(__file__).resolve().parents[2]


def _prefixes(*pairs: tuple[str, list[str]]) -> str:
    listed = [{"prefix": prefix, "namespaces": namespaces} for prefix, namespaces in pairs]
    return f"--set-json=admission.inferenceIdPrefixes={json.dumps(listed)}"


def _admission(*values: str) -> list[dict]:
    return documents(helm_template("--show-only=templates/admission.yaml", *values).stdout)


def _create(kubectl: Kubectl, namespace: str, inference_id: str | None, name: str = "",
            *extra: str) -> subprocess.CompletedProcess[str]:
    """Create an endpoint; without ``inference_id`` its id is ``name``."""
    document = endpoint(name or f"r-{uuid.uuid4().hex[:8]}", inference_id=inference_id)
    return kubectl.apply(document, namespace, *extra, check=False)


def _refused(kubectl: Kubectl, namespace: str, inference_id: str) -> bool:
    return _create(kubectl, namespace, inference_id, "", "--dry-run=server").returncode != 0


def test_the_default_render_reserves_nothing_and_binds_the_generated_policy() -> None:
    configmap, binding = _admission()

    assert configmap["kind"] == "ConfigMap" and "data" not in configmap
    assert binding["spec"] == {
        "policyName": policies.ID_PREFIX_POLICY,
        "validationActions": ["Deny"],
        "paramRef": {"name": configmap["metadata"]["name"], "namespace": chart.NAMESPACE,
                     "parameterNotFoundAction": "Allow"},
    }
    installed = {(d["kind"], d["metadata"]["name"]) for d in
                 documents((ROOT / chart.INSTALL_YAML).read_text())}
    assert {(d["kind"], d["metadata"]["name"]) for d in (configmap, binding)} <= installed


def test_values_become_one_key_per_prefix_and_the_strict_mode_a_second_binding() -> None:
    configmap, *bindings = _admission(
        _prefixes(("team-a-", ["team-a"]), ("shared.", ["team-a", "team-b"]),
                  ("team-a-", ["team-a", "ops"])),
        "--set=admission.requireNamespacePrefix=true")

    assert configmap["data"] == {"team-a-": "team-a,ops", "shared.": "team-a,team-b"}
    assert [b["spec"]["policyName"] for b in bindings] == [
        policies.ID_NAMESPACE_POLICY, policies.ID_PREFIX_POLICY]
    generated = {d["metadata"]["name"] for d in
                 yaml.safe_load_all((ROOT / "crds" / POLICIES_FILE).read_text()) if d}
    assert {policies.ID_NAMESPACE_POLICY, policies.ID_PREFIX_POLICY} <= generated


@pytest.mark.parametrize("entry", [
    {"prefix": "Team-A-", "namespaces": ["team-a"]},  # ids are lowercase
    {"prefix": "-team-a", "namespaces": ["team-a"]},  # and start with a letter or digit
    {"prefix": "team-a-", "namespaces": []},
    {"prefix": "team-a-", "namespaces": ["Team_A"]},
    {"prefix": "team-a-"},
], ids=["uppercase", "leading-dash", "no-namespace", "bad-namespace", "namespaces-missing"])
def test_a_prefix_that_could_never_match_or_allow_stops_the_install(entry: dict) -> None:
    result = helm_template(f"--set-json=admission.inferenceIdPrefixes={json.dumps([entry])}",
                           check=False)

    assert result.returncode != 0
    assert "/admission/inferenceIdPrefixes/0" in result.stderr, result.stderr


@pytest.fixture
def tenants(make_namespaces) -> list[str]:
    return make_namespaces(3)  # team a, team b, the release's


@pytest.fixture
def installed(
    control_plane, crd_installed: None, tenants: list[str], release: str
) -> Iterator[tuple[str, str]]:
    """A release reserving ``<release>-team-a-`` for team a; (release namespace, prefix)."""
    team_a, _, namespace = tenants
    prefix = f"{release}-team-a-"
    result = helm(control_plane.kubeconfig, "install", release, str(ROOT / chart.CHART),
                  f"--namespace={namespace}", "--set=crds.install=false",
                  _prefixes((prefix, [team_a])))
    assert result.returncode == 0, result.stderr
    yield namespace, prefix
    helm(control_plane.kubeconfig, "uninstall", release, f"--namespace={namespace}")


def test_a_release_reserves_its_prefixes_and_an_upgrade_changes_them(
    control_plane, kubectl: Kubectl, tenants: list[str], release: str,
    installed: tuple[str, str],
) -> None:
    team_a, team_b, namespace = tenants
    _, prefix = installed
    poll(lambda: _refused(kubectl, team_b, f"{prefix}probe"), timeout=30,
         message="the release's binding is in force")

    refused = _create(kubectl, team_b, f"{prefix}chat")
    named = _create(kubectl, team_b, None, f"{prefix}named")  # the name is the id

    assert refused.returncode != 0
    assert (f"spec.inference_id: inference id '{prefix}chat' starts with '{prefix}', a prefix "
            f"reserved for namespace {team_a} (ConfigMap {namespace}/{release}-inference-operator"
            f"-inference-ids); choose an id outside it or ask an administrator to allow "
            f"namespace {team_b}") in refused.stderr, refused.stderr
    assert named.returncode != 0
    assert f"metadata.name (the default inference_id): inference id '{prefix}named'" in (
        named.stderr)
    assert _create(kubectl, team_a, f"{prefix}chat").returncode == 0
    assert _create(kubectl, team_a, None, f"{prefix}named").returncode == 0
    assert _create(kubectl, team_b, f"{release}-team-b-chat").returncode == 0

    upgraded = helm(control_plane.kubeconfig, "upgrade", release, str(ROOT / chart.CHART),
                    f"--namespace={namespace}", "--reuse-values",
                    _prefixes((prefix, [team_a, team_b])))
    assert upgraded.returncode == 0, upgraded.stderr
    poll(lambda: not _refused(kubectl, team_b, f"{prefix}chat"), timeout=30,
         message="the upgraded ConfigMap is in force")
    assert _create(kubectl, team_b, f"{prefix}chat").returncode == 0


def test_prefixes_added_to_the_plain_manifests_survive_applying_them_again(
    kubectl: Kubectl,
) -> None:
    """docs/install.md: with manifests/install.yaml, prefixes are patched into its
    ConfigMap; a later `kubectl apply` of the file (client- or server-side) keeps them."""
    rendered = documents((ROOT / chart.INSTALL_YAML).read_text())
    namespace = next(d for d in rendered if d["kind"] == "Namespace")
    configmap = next(d for d in rendered if d["kind"] == "ConfigMap"
                     and d["metadata"]["name"].endswith("-inference-ids"))
    name, prefix = configmap["metadata"]["name"], f"{uuid.uuid4().hex[:8]}-"

    def patch(namespaces: str | None) -> None:
        kubectl.run("patch", "configmap", name, "-n", chart.NAMESPACE, "--type=merge",
                    "-p", json.dumps({"data": {prefix: namespaces}}))

    kubectl.apply([namespace, configmap])
    patch("team-a")
    try:
        for extra in ([], ["--server-side", "--force-conflicts"]):
            kubectl.apply([namespace, configmap], None, *extra)
            data = kubectl.get("configmap", name, chart.NAMESPACE)["data"]
            assert data[prefix] == "team-a", extra
    finally:
        patch(None)
