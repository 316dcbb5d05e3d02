"""Inference ids reserved through the chart (values `admission.*`, docs/install.md
"Reserving inference ids"): the values become the settings of the id policy the chart
installs with the CRD, the API server enforces what the chart renders, and a render with
other values (`helm upgrade`) changes it. The plain manifests carry the policy reserving
nothing."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from inference_devkit import chart
from inference_devkit.chart import documents, helm_template
from inference_devkit.controlplane.kubectl import Kubectl
from inference_devkit.waiting import poll
from inference_operator.api import policies
from resources import endpoint

ROOT = Path(__file__).resolve().parents[2]


def _prefixes(*pairs: tuple[str, list[str]]) -> str:
    listed = [{"prefix": prefix, "namespaces": namespaces} for prefix, namespaces in pairs]
    return f"--set-json=admission.inferenceIdPrefixes={json.dumps(listed)}"


def _id_policy(*values: str) -> tuple[dict, dict]:
    """The id policy and its binding as the chart renders them with ``values``."""
    rendered = documents(helm_template("--show-only=templates/crds.yaml", *values).stdout)
    (policy,) = [d for d in rendered if d["kind"] == "ValidatingAdmissionPolicy"
                 and d["metadata"]["name"] == policies.ID_POLICY]
    (binding,) = [d for d in rendered if d["kind"] == "ValidatingAdmissionPolicyBinding"
                  and d["spec"]["policyName"] == policies.ID_POLICY]
    return policy, binding


def _settings(policy: dict) -> dict[str, str]:
    wanted = (policies.PREFIXES_VARIABLE, policies.STRICT_VARIABLE)
    return {v["name"]: v["expression"] for v in policy["spec"]["variables"] if v["name"] in wanted}


def _create(kubectl: Kubectl, namespace: str, inference_id: str | None, name: str = "",
            *extra: str) -> subprocess.CompletedProcess[str]:
    """Create an endpoint; without ``inference_id`` its id is ``name``."""
    document = endpoint(name or f"r-{uuid.uuid4().hex[:8]}", inference_id=inference_id)
    return kubectl.apply(document, namespace, *extra, check=False)


def _refused(kubectl: Kubectl, namespace: str, inference_id: str) -> bool:
    return _create(kubectl, namespace, inference_id, "", "--dry-run=server").returncode != 0


def test_the_default_render_reserves_nothing_and_binds_the_policy() -> None:
    policy, binding = _id_policy()

    assert _settings(policy) == {"prefixes": "{}", "requireNamespacePrefix": "false"}
    assert binding["spec"]["validationActions"] == ["Deny"]
    installed = {(d["kind"], d["metadata"]["name"]) for d in
                 documents((ROOT / chart.INSTALL_YAML).read_text())}
    assert {(d["kind"], d["metadata"]["name"]) for d in (policy, binding)} <= installed


def test_values_become_the_policys_settings_with_duplicates_merged() -> None:
    policy, _ = _id_policy(
        _prefixes(("team-a-", ["team-a"]), ("shared.", ["team-a", "team-b"]),
                  ("team-a-", ["team-a", "ops"])),
        "--set=admission.requireNamespacePrefix=true")

    assert _settings(policy) == {
        "prefixes": '{"shared.":["team-a","team-b"],"team-a-":["team-a","ops"]}',
        "requireNamespacePrefix": "true",
    }


def test_values_without_the_policy_in_the_release_stop_the_install() -> None:
    result = helm_template("--set=crds.install=false", _prefixes(("team-a-", ["team-a"])),
                           check=False)

    assert result.returncode != 0
    assert "which this release installs only with crds.install=true" in result.stderr


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
def release_policy(kubectl: Kubectl, crd_installed: None, release: str) -> Iterator:
    """Applies the chart's id policy rendered with some values, under a name of this test's
    own (the session's API server has the shared one), as `helm install`/`upgrade` would."""
    name = f"{release}-ids"

    def apply(*values: str) -> None:
        policy, binding = _id_policy(*values)
        policy["metadata"]["name"] = binding["metadata"]["name"] = name
        binding["spec"]["policyName"] = name
        kubectl.apply([policy, binding])

    yield apply
    kubectl.run("delete", "validatingadmissionpolicybinding", name, check=False)
    kubectl.run("delete", "validatingadmissionpolicy", name, check=False)


def test_the_rendered_policy_reserves_the_prefixes_and_new_values_change_them(
    kubectl: Kubectl, make_namespaces, release: str, release_policy,
) -> None:
    team_a, team_b = make_namespaces(2)
    prefix = f"{release}-team-a-"
    release_policy(_prefixes((prefix, [team_a])))
    poll(lambda: _refused(kubectl, team_b, f"{prefix}probe"), timeout=30,
         message="the rendered policy is in force")

    refused = _create(kubectl, team_b, f"{prefix}chat")
    named = _create(kubectl, team_b, None, f"{prefix}named")  # the name is the id

    assert refused.returncode != 0
    assert (f"spec.inference_id: inference id '{prefix}chat' starts with '{prefix}', a prefix "
            f"reserved for namespace {team_a}; choose an id outside it or ask an "
            f"administrator to allow namespace {team_b}") in refused.stderr, refused.stderr
    assert named.returncode != 0
    assert f"metadata.name (the default inference_id): inference id '{prefix}named'" in (
        named.stderr)
    assert _create(kubectl, team_a, f"{prefix}chat").returncode == 0
    assert _create(kubectl, team_a, None, f"{prefix}named").returncode == 0
    assert _create(kubectl, team_b, f"{release}-team-b-chat").returncode == 0

    release_policy(_prefixes((prefix, [team_a, team_b])))  # helm upgrade --set-json ...
    poll(lambda: not _refused(kubectl, team_b, f"{prefix}chat"), timeout=30,
         message="the new values are in force")
    assert _create(kubectl, team_b, f"{prefix}chat").returncode == 0
