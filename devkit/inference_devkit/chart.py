"""The Helm chart rendered with ``helm template``: the one way manifests/install.yaml
(written by ``inference-operator generate``) and the install tests turn the chart into
objects. Needs the helm binary (``controlplane.binaries``) and a source checkout."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from inference_devkit.checkout import checkout_path
from inference_devkit.controlplane import binaries

CHART = Path("charts/inference-operator")  # relative to the repository root
INSTALL_YAML = Path("manifests/install.yaml")
# Release and namespace of the plain-manifest install: with the release named like the
# chart, objects are called "inference-operator" and the Service "inference-operator-gateway".
RELEASE = NAMESPACE = "inference-operator"

HEADER = (
    "# Generated from charts/inference-operator (default values) by `make generate`; "
    "do not edit.\n"
    "# kubectl apply -f manifests/install.yaml   (or: kubectl apply -k manifests/)\n"
)


def source_root() -> Path | None:
    """The repository this package runs from (an editable install); None in a wheel."""
    chart = checkout_path(*CHART.parts)
    return chart.parents[len(CHART.parts) - 1] if chart else None


def _chart(root: Path | None) -> Path:
    root = root or source_root()
    if root is None:
        raise FileNotFoundError(f"no {CHART}: not running from a source checkout")
    return root / CHART


def helm_template(
    *args: str, root: Path | None = None, release: str = RELEASE, namespace: str = NAMESPACE,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """``helm template`` of the chart under ``root`` (default: this checkout); ``args``
    adds ``--values``/``--set`` and the like."""
    return subprocess.run(
        [str(binaries.resolve("helm")), "template", release, str(_chart(root)),
         f"--namespace={namespace}", *args],
        capture_output=True, text=True, check=check, timeout=60,
    )


def ci_values_files(root: Path | None = None) -> list[Path]:
    """The chart's ci/*.yaml: each must render, and each render must be accepted."""
    return sorted((_chart(root) / "ci").glob("*.yaml"))


def documents(rendered: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def namespace_document(name: str) -> str:
    # Helm leaves the release namespace to `--create-namespace`; plain manifests bring it,
    # with Pod Security "restricted" enforced, which the chart's pods satisfy.
    return yaml.safe_dump({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "labels": {
                "app.kubernetes.io/part-of": "inference-operator",
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/warn": "restricted",
            },
        },
    }, sort_keys=False)


def install_yaml(root: Path | None = None) -> str:
    """What manifests/install.yaml must hold: the chart under ``root`` rendered with its
    default values, after its namespace."""
    # --skip-tests: the `helm test` pod is for Helm only; kubectl would start it at once.
    chart = helm_template("--skip-tests", root=root).stdout
    return f"{HEADER}---\n{namespace_document(NAMESPACE)}{chart}"
