"""Render the chart with ``helm template``: the one way install.yaml, the tests and
``make generate`` turn the chart into manifests.

``python tests/install/chart_render.py`` (run by ``make generate``) rewrites
manifests/install.yaml; tests/install/test_install_manifests.py fails when it drifts.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from inference_operator.controlplane import binaries

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "inference-operator"
INSTALL_YAML = ROOT / "manifests" / "install.yaml"
# Release and namespace of the plain-manifest install: with the release named like the
# chart, objects are called "inference-operator" and the Service "inference-operator-gateway".
RELEASE = NAMESPACE = "inference-operator"

HEADER = (
    "# Generated from charts/inference-operator (default values) by `make generate`; "
    "do not edit.\n"
    "# kubectl apply -f manifests/install.yaml   (or: kubectl apply -k manifests/)\n"
)


def helm_template(
    *args: str, release: str = RELEASE, namespace: str = NAMESPACE, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``helm template`` of the chart; ``args`` adds ``--values``/``--set`` and the like."""
    return subprocess.run(
        [str(binaries.resolve("helm")), "template", release, str(CHART),
         f"--namespace={namespace}", *args],
        capture_output=True, text=True, check=check, timeout=60,
    )


def ci_values_files() -> list[Path]:
    """The chart's ci/*.yaml: each must render, and each render must be accepted."""
    return sorted((CHART / "ci").glob("*.yaml"))


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


def install_yaml() -> str:
    # --skip-tests: the `helm test` pod is for Helm only; kubectl would start it at once.
    chart = helm_template("--skip-tests").stdout
    return f"{HEADER}---\n{namespace_document(NAMESPACE)}{chart}"


def main() -> int:
    INSTALL_YAML.write_text(install_yaml())
    print(f"wrote {INSTALL_YAML.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
