"""The plain-YAML install: `kubectl apply -k` of a user's own kustomization that references
manifests/ and sets the image with kustomize `images:`, the way a user without Helm, or a
GitOps tool, installs it. manifests/install.yaml is cluster-scoped with a namespace of its
own (`inference-operator`, restricted), so it goes there, after the helm release of the
other modules is gone (one operator per cluster). The upstream is the in-cluster emulator,
set with a JSON patch on the two `--anthropic-base-url` arguments (the operator's and the
gateways', each in its own Deployment: fleet mode, the default)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from e2e_support import assert_first_endpoint_answers

from inference_devkit.checkout import checkout_path
from inference_devkit.controlplane.kubectl import Kubectl
from inference_devkit.install import (
    Installation,
    diagnostics,
    elapsed,
)

CHART_IMAGE = "ghcr.io/inference-operator/inference-operator"
BASE_URL_FLAG = "--anthropic-base-url="


def _deployments() -> list[dict]:
    documents = yaml.safe_load_all(checkout_path("manifests", "install.yaml").read_text())
    return [d for d in documents if d and d["kind"] == "Deployment"]


def _deployment() -> dict:
    """The operator's."""
    (deployment,) = [d for d in _deployments()
                     if d["metadata"]["labels"]["app.kubernetes.io/component"] == "operator"]
    return deployment


def _base_url_patch(deployment: dict, upstream: str) -> list[dict]:
    return [
        {"op": "replace", "path": f"/spec/template/spec/containers/{c}/args/{a}",
         "value": BASE_URL_FLAG + upstream}
        for c, container in enumerate(deployment["spec"]["template"]["spec"]["containers"])
        for a, arg in enumerate(container.get("args", [])) if arg.startswith(BASE_URL_FLAG)
    ]


def kustomization(directory: Path, image: str, upstream: str) -> dict:
    """What a user writes next to their copy of the repository: the image from their
    registry, the Anthropic URL of their (offline) upstream."""
    patches = {d["metadata"]["name"]: _base_url_patch(d, upstream) for d in _deployments()}
    assert sum(map(len, patches.values())) == 2, (
        "the operator and the gateway each take --anthropic-base-url")
    name, _, version = image.partition("@")
    new = {"newName": name, "digest": version} if version else dict(
        zip(("newName", "newTag"), image.rsplit(":", 1), strict=True))
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [os.path.relpath(checkout_path("manifests"), directory)],
        "images": [{"name": CHART_IMAGE, **new}],
        "patches": [{"target": {"kind": "Deployment", "name": name}, "patch": json.dumps(patch)}
                    for name, patch in patches.items() if patch],
    }


@pytest.fixture(scope="module")
def installation(cluster, kubectl: Kubectl, project_image: tuple[str, str | None],
                 emulator: str, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[Installation]:
    directory = tmp_path_factory.mktemp("kustomize")
    (directory / "kustomization.yaml").write_text(
        yaml.safe_dump(kustomization(directory, project_image[0], emulator), sort_keys=False))
    deployment = _deployment()["metadata"]
    installed = Installation(
        namespace=deployment["namespace"], deployment=deployment["name"],
        selector=f"app.kubernetes.io/instance={deployment['name']}",
        service=f"{deployment['name']}-gateway")
    started = time.monotonic()
    kubectl.run("apply", "-k", str(directory))
    for workload in _deployments():
        rollout = kubectl.run("rollout", "status", f"deployment/{workload['metadata']['name']}",
                              "-n", installed.namespace, "--timeout=180s", check=False,
                              timeout=190)
        assert rollout.returncode == 0, diagnostics(kubectl, cluster, installed.namespace)
    elapsed("kubectl apply -k + rollout status", started)
    yield installed
    # The CRD goes too (no keep policy outside Helm); the team's endpoints are gone by now.
    kubectl.run("delete", "-k", str(directory), "--timeout=120s", check=False, timeout=130)


def test_kubectl_apply_k_with_a_kustomize_image_serves_an_endpoint(
    kubectl: Kubectl, installation: Installation, team, client_namespace: str,
    project_image: tuple[str, str | None],
):
    images = {c["image"] for d in _deployments() for c in kubectl.get(
        "deployment", d["metadata"]["name"], installation.namespace)["spec"]["template"]["spec"][
        "containers"]}
    assert images == {project_image[0]}
    assert_first_endpoint_answers(kubectl, installation, team, client_namespace,
                                  project_image[0])
