"""Helpers shared by the install tests (fixtures are in conftest.py)."""

from __future__ import annotations


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
