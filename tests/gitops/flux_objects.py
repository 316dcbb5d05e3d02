"""The Flux objects the GitOps tests create, and the files they commit: what a user would
write (docs/install.md, "Flux", quotes these shapes)."""

from __future__ import annotations

from typing import Any

from inference_operator.api.models import API_VERSION, KIND

FLUX_NAMESPACE = "flux-system"
SOURCE = "platform"
SOURCE_API = "source.toolkit.fluxcd.io/v1"
KUSTOMIZE_API = "kustomize.toolkit.fluxcd.io/v1"


def git_repository(url: str, branch: str) -> dict[str, Any]:
    # A long interval: the tests ask for each sync (as `flux reconcile` does), so a
    # periodic one never lands in the middle of what a test observes.
    return {
        "apiVersion": SOURCE_API, "kind": "GitRepository",
        "metadata": {"name": SOURCE, "namespace": FLUX_NAMESPACE},
        "spec": {"interval": "10m", "url": url, "ref": {"branch": branch}, "timeout": "20s"},
    }


def kustomization(name: str, path: str, *, target_namespace: str | None = None,
                  wait: bool = True, prune: bool = True, timeout: str = "30s",
                  health_checks: list[dict[str, str]] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "interval": "10m",
        # A failed apply or health check is retried this soon, not after the interval.
        "retryInterval": "2s",
        # Bounds apply and health checks; kustomize-controller raises anything below 30s.
        "timeout": timeout,
        "sourceRef": {"kind": "GitRepository", "name": SOURCE},
        "path": f"./{path}",
        "prune": prune,
        "wait": wait,
    }
    if target_namespace:
        spec["targetNamespace"] = target_namespace
    if health_checks:
        spec["healthChecks"] = health_checks
    return {"apiVersion": KUSTOMIZE_API, "kind": "Kustomization",
            "metadata": {"name": name, "namespace": FLUX_NAMESPACE}, "spec": spec}


def endpoint_check(name: str, namespace: str) -> dict[str, str]:
    return {"apiVersion": API_VERSION, "kind": KIND, "name": name, "namespace": namespace}
