"""Asking Flux for a sync and waiting for its outcome, bounded: what `flux reconcile
kustomization --with-source` does, with the status fields it reads."""

from __future__ import annotations

import time
from typing import Any

from flux_objects import FLUX_NAMESPACE, SOURCE

from inference_devkit.controlplane.kubectl import Kubectl
from inference_devkit.waiting import poll
from operator_support import condition

REQUESTED_AT = "reconcile.fluxcd.io/requestedAt"


def revision(sha: str, branch: str = "main") -> str:
    return f"{branch}@sha1:{sha}"


def request_reconcile(kubectl: Kubectl, kind: str, name: str) -> str:
    """The annotation Flux's CLI sets; a controller reconciles at once when it changes.
    Returns the token, which the status echoes in ``lastHandledReconcileAt``."""
    token = f"{time.time_ns()}"
    kubectl.run("annotate", "--overwrite", "-n", FLUX_NAMESPACE, kind, name,
                f"{REQUESTED_AT}={token}")
    return token


def fetch_source(kubectl: Kubectl, sha: str, timeout: float = 30) -> None:
    """source-controller has the commit as its artifact."""
    request_reconcile(kubectl, "gitrepository", SOURCE)
    wanted = revision(sha)

    def fetched() -> bool:
        obj = kubectl.get("gitrepository", SOURCE, FLUX_NAMESPACE)
        return ((obj.get("status") or {}).get("artifact") or {}).get("revision") == wanted

    poll(fetched, timeout=timeout, interval=0.2,
         message=f"GitRepository never fetched {wanted}")


def kustomization(kubectl: Kubectl, name: str) -> dict[str, Any]:
    return kubectl.get("kustomization", name, FLUX_NAMESPACE)


def sync(kubectl: Kubectl, name: str, sha: str, timeout: float = 60) -> dict[str, Any]:
    """Fetch ``sha`` and reconcile Kustomization ``name`` against it; the Kustomization
    once that reconcile has finished (Ready True or False, not Unknown)."""
    fetch_source(kubectl, sha)
    return reconciled(kubectl, name, request_reconcile(kubectl, "kustomization", name),
                      revision(sha), timeout)


def reconciled(kubectl: Kubectl, name: str, token: str, wanted: str,
               timeout: float = 60) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def done() -> dict[str, Any] | None:
        obj = seen["last"] = kustomization(kubectl, name)
        status = obj.get("status") or {}
        # Not status.observedGeneration: Flux leaves it at -1 after a failed attempt (it is
        # the generation last reconciled successfully); Ready is Unknown while one runs.
        finished = (status.get("lastHandledReconcileAt") == token
                    and status.get("lastAttemptedRevision") == wanted
                    and condition(obj).get("status") in ("True", "False"))
        return obj if finished else None

    try:
        return poll(done, timeout=timeout, interval=0.2,
                    message=f"Kustomization {name} never finished reconciling {wanted}")
    except TimeoutError as error:  # what it did instead, for the failure report
        raise TimeoutError(f"{error}; its status: {seen.get('last', {}).get('status')}") from None


def wait_ready(kubectl: Kubectl, name: str, wanted: str, timeout: float = 60
               ) -> dict[str, Any]:
    """Ready=True with ``wanted`` applied (a failed sync is retried at retryInterval)."""
    def ready() -> dict[str, Any] | None:
        obj = kustomization(kubectl, name)
        applied = (obj.get("status") or {}).get("lastAppliedRevision") == wanted
        return obj if applied and condition(obj).get("status") == "True" else None

    return poll(ready, timeout=timeout, interval=0.2,
                message=f"Kustomization {name} never Ready at {wanted}")


def delete(kubectl: Kubectl, kind: str, name: str, timeout: float = 60) -> None:
    """Delete and wait until gone: the controllers' finalizers prune what it applied."""
    kubectl.run("delete", kind, name, "-n", FLUX_NAMESPACE, "--ignore-not-found",
                f"--timeout={timeout:g}s", timeout=timeout + 10)
