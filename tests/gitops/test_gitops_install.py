"""Flux installs the operator itself from manifests/install.yaml (server-side apply, as
Flux always applies) over a cluster where the operator already runs and endpoints serve:
no field-manager conflict with what the operator writes (status, finalizer)."""

from __future__ import annotations

from pathlib import Path

import flux_waits
import pytest
from flux_objects import kustomization

from operator_support import complete, condition
from resources import endpoint, secret

ROOT = Path(__file__).resolve().parents[2]
FINALIZER = "inference-operator.dev/finalizer"


def test_flux_applies_install_yaml_and_the_endpoints_keep_status_finalizer_and_service(
        stack, kubectl, control_plane, namespace, gitops, folder, write_folder):
    if not control_plane.is_local:
        # On a real cluster its Deployment would run a second operator beside ours.
        pytest.skip("applies manifests/install.yaml: only on the local control plane")
    iid = f"{namespace}-kept"
    endpoints = gitops.create(kustomization(namespace, folder, target_namespace=namespace))
    sha = write_folder({"endpoint.yaml": [secret("anthropic"),
                                          endpoint("kept", inference_id=iid)]})
    flux_waits.fetch_source(kubectl, sha)
    flux_waits.request_reconcile(kubectl, "kustomization", endpoints)
    flux_waits.wait_ready(kubectl, endpoints, flux_waits.revision(sha))
    before = kubectl.get("iep", "kept", namespace)

    path = f"{folder}-operator"
    sha = gitops.commit({f"{path}/{name}": (ROOT / "manifests" / name).read_text()
                         for name in ("install.yaml", "kustomization.yaml")}, "operator")
    # wait: false, its Deployment cannot run here (no node); prune: false, deleting this
    # Kustomization must never delete the CRD and with it every endpoint of the session.
    operator = gitops.create(kustomization(
        f"{namespace}-operator", path, wait=False, prune=False))
    ks = flux_waits.sync(kubectl, operator, sha)

    assert condition(ks)["status"] == "True", condition(ks)
    assert ks["status"]["lastAppliedRevision"] == flux_waits.revision(sha)
    crd = kubectl.run("get", "crd", "inferenceendpoints.inference-operator.dev", "-o",
                      "jsonpath={.metadata.labels}").stdout
    assert f'"kustomize.toolkit.fluxcd.io/name":"{operator}"' in crd  # Flux applied it
    # A sync of the endpoints' own Kustomization after the CRD changed hands, as well.
    ks = flux_waits.sync(kubectl, endpoints, sha)
    assert condition(ks)["status"] == "True", condition(ks)

    after = kubectl.get("iep", "kept", namespace)
    assert after["metadata"]["finalizers"] == [FINALIZER]
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert after["status"] == before["status"]
    assert complete(stack, iid)[0] == 200
