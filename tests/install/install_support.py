"""Helpers shared by the install tests (fixtures are in conftest.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from inference_devkit.controlplane import binaries


def helm(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The helm CLI against the cluster of ``kubeconfig``, as an administrator runs it."""
    return subprocess.run(
        [str(binaries.resolve("helm")), f"--kubeconfig={kubeconfig}", *args],
        capture_output=True, text=True, check=False, timeout=120,
    )


def prometheus_operator_crd(kind: str) -> dict:
    """Just enough of one of the Prometheus Operator's CRDs (ServiceMonitor,
    PrometheusRule) for the API server to accept its objects in a server-side dry run."""
    plural = kind.lower() + "s"
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.monitoring.coreos.com"},
        "spec": {
            "group": "monitoring.coreos.com",
            "names": {"kind": kind, "listKind": f"{kind}List", "plural": plural,
                      "singular": kind.lower()},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1", "served": True, "storage": True,
                "schema": {"openAPIV3Schema": {
                    "type": "object", "x-kubernetes-preserve-unknown-fields": True,
                }},
            }],
        },
    }
