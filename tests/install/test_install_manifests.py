"""manifests/ is the chart rendered with default values, and both `kubectl apply -f
manifests/install.yaml` and `kubectl apply -k manifests/` are accepted by the API server."""

from __future__ import annotations

from pathlib import Path

from inference_devkit import chart
from inference_devkit.chart import NAMESPACE, documents, install_yaml
from inference_devkit.controlplane.kubectl import Kubectl

ROOT = Path(__file__).resolve().parents[2]
INSTALL_YAML = ROOT / chart.INSTALL_YAML


def test_install_yaml_is_the_chart_rendered_with_default_values() -> None:
    assert INSTALL_YAML.read_text() == install_yaml(ROOT), (
        "manifests/install.yaml differs from the chart; edit charts/inference-operator/ and "
        "run `make generate` (`inference-operator generate`), never the file itself"
    )


def test_kustomization_builds_exactly_install_yaml(kubectl: Kubectl) -> None:
    built = kubectl.run("kustomize", str(ROOT / "manifests")).stdout

    def keyed(docs: list[dict]) -> dict:
        return {(d["kind"], d["metadata"]["name"]): d for d in docs}

    assert keyed(documents(built)) == keyed(documents(INSTALL_YAML.read_text()))


def test_both_kubectl_paths_are_accepted_by_the_api_server(kubectl: Kubectl) -> None:
    # A server-side dry run persists nothing, so the namespace the rest goes into must
    # exist first; it is the file's own first document.
    namespace, *rest = documents(INSTALL_YAML.read_text())
    assert (namespace["kind"], namespace["metadata"]["name"]) == ("Namespace", NAMESPACE)
    kubectl.apply(namespace)

    for source in (["-f", str(INSTALL_YAML)], ["-k", str(ROOT / "manifests")]):
        result = kubectl.run("apply", "--dry-run=server", *source)
        assert result.stdout.count("(server dry run)") == len(rest) + 1, result.stdout
        assert "PodSecurity" not in result.stderr, result.stderr
    assert {d["kind"] for d in rest} >= {
        "CustomResourceDefinition", "ValidatingAdmissionPolicy", "ClusterRole",
        "Deployment", "Service", "ServiceAccount",
    }
