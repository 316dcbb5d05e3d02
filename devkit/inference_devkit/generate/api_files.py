"""Every file (or block of one) rendered from the API models, by path relative to the
repository root.

``make generate`` writes them; a test renders them afresh and fails on any difference.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from inference_operator.api.manifests import (
    CRD_FILE,
    POLICIES_FILE,
    crd_yaml,
    policies_yaml,
    to_yaml,
)
from inference_operator.api.reference import fields_markdown, splice


def kustomization_yaml() -> str:
    return to_yaml([
        {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [CRD_FILE, POLICIES_FILE],
        }
    ])


GENERATED: dict[str, Callable[[], str]] = {
    f"crds/{CRD_FILE}": crd_yaml,
    f"crds/{POLICIES_FILE}": policies_yaml,
    # Not the chart's crds/ folder, which Helm installs once and never upgrades: the
    # chart's templates/crds.yaml reads these and adds its labels and keep policy.
    f"charts/inference-operator/files/crds/{CRD_FILE}": crd_yaml,
    f"charts/inference-operator/files/crds/{POLICIES_FILE}": policies_yaml,
    f"manifests/crds/{CRD_FILE}": crd_yaml,
    f"manifests/crds/{POLICIES_FILE}": policies_yaml,
    "manifests/crds/kustomization.yaml": kustomization_yaml,
}


# Hand-written documents with a generated block between markers.
SPLICED: dict[str, Callable[[], str]] = {"docs/api.md": fields_markdown}


def render_all(root: Path) -> dict[str, str]:
    """What every generated file under ``root`` must contain."""
    rendered = {path: render() for path, render in GENERATED.items()}
    for path, render in SPLICED.items():
        rendered[path] = splice((root / path).read_text(), render())
    return rendered


def write_files(root: Path, rendered: dict[str, str]) -> list[Path]:
    """Write each rendered file (relative path -> content) under ``root``."""
    written = []
    for relative, content in rendered.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        written.append(path)
    return written


def write_all(root: Path) -> list[Path]:
    return write_files(root, render_all(root))
