"""The Helm chart as an Argo CD Application on a real node: Argo CD (tests/argocd_support.py)
renders it with `helm template` from a Git repository, applies it (no `lookup` to lean on,
Helm hooks mapped to Argo CD's phases or skipped), its Pods run and it turns Healthy; the
endpoints a team applies are served, the `helm test` Pod is not left behind, and the CRD's
keep policy holds when the values turn `crds.install` off or the Application is deleted."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from e2e_support import assert_first_endpoint_answers

from argocd_support import NAMESPACE, ArgoCD, application, resource, running_argocd, unavailable
from inference_devkit.checkout import checkout_path
from inference_devkit.controlplane.kubectl import Kubectl
from inference_devkit.install import Installation, namespace
from inference_devkit.waiting import poll
from inference_operator.api.models import GROUP

CHART = "charts/inference-operator"
# Names of its own, not the helm modules' release: the Service they install next under the
# same name would get a new ClusterIP while cluster DNS still answers the old one (its
# cache holds an answer 30 s).
RELEASE = "argo"
RELEASE_NAMESPACE = "e2e-argocd"
CRD = f"inferenceendpoints.{GROUP}"
KEPT = "validatingadmissionpolicy,validatingadmissionpolicybinding"
PART_OF = "app.kubernetes.io/part-of=inference-operator"


def chart_files() -> dict[str, str]:
    """The checkout's chart, as files to commit."""
    root = checkout_path(*CHART.split("/"))
    assert root is not None
    return {f"{CHART}/{path.relative_to(root)}": path.read_text()
            for path in sorted(root.rglob("*")) if path.is_file()}


def values(image: str, upstream: str, **extra: Any) -> dict[str, Any]:
    """The Application's helm values: the local image, the emulator as the upstream."""
    repository, _, reference = image.partition("@")
    chosen = ({"repository": repository, "digest": reference} if reference
              else dict(zip(("repository", "tag"), image.rsplit(":", 1), strict=True)))
    return {"image": chosen, "anthropicBaseUrl": upstream, **extra}


@pytest.fixture(scope="module")
def argocd_system(cluster, kubectl: Kubectl,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArgoCD]:
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    with running_argocd(kubectl, cluster.plane.kubeconfig,
                        tmp_path_factory.mktemp("argocd")) as system:
        yield system


@pytest.fixture(scope="module")
def installation(argocd_system: ArgoCD, kubectl: Kubectl,
                 project_image: tuple[str, str | None], emulator: str
                 ) -> Iterator[Installation]:
    """The chart installed by an Application named as the release; after the module the
    Application is deleted with its resources, then the CRD and policies it keeps, as
    docs/install.md's uninstall says, so the next module's `helm install` owns them."""
    ns = namespace(kubectl, RELEASE_NAMESPACE, fixed=True)
    sha = argocd_system.commit(chart_files(), "the chart")
    argocd_system.create(application(RELEASE, argocd_system.git.url, CHART, ns,
                                     helm_values=values(project_image[0], emulator)))
    argocd_system.wait(RELEASE, revision=sha, health="Healthy", timeout=240)
    yield Installation(namespace=ns, deployment=f"{RELEASE}-inference-operator",
                       selector=f"app.kubernetes.io/instance={RELEASE}",
                       service=f"{RELEASE}-inference-operator-gateway")
    if RELEASE in argocd_system.applications:
        argocd_system.delete(RELEASE, timeout=180)
    kubectl.run("delete", "crd", CRD, "--ignore-not-found", "--timeout=60s", timeout=70)
    kubectl.run("delete", KEPT, "-l", PART_OF, "--ignore-not-found")


def test_the_chart_syncs_and_every_workload_is_healthy(
        argocd_system: ArgoCD, installation: Installation):
    app = argocd_system.wait(RELEASE, health="Healthy")

    for kind, name in (("Deployment", installation.deployment),
                       ("Deployment", f"{installation.deployment}-gateway"),
                       ("CustomResourceDefinition", CRD)):
        entry = resource(app, kind, name)
        assert entry.get("status") == "Synced", (kind, name, entry)
        if kind == "Deployment":
            assert entry["health"]["status"] == "Healthy", entry
    # Rendered by `helm template` against the live API versions: nothing needed `lookup`.
    assert app["status"]["sync"]["status"] == "Synced"


def test_the_helm_test_pod_is_not_created(
        argocd_system: ArgoCD, kubectl: Kubectl, installation: Installation):
    """`helm.sh/hook: test` has no Argo CD phase: Argo CD skips the hook instead of running
    a Pod at every sync."""
    found = json.loads(kubectl.run("get", "pods", "-n", installation.namespace,
                                   "-o", "json").stdout)["items"]
    names = [pod["metadata"]["name"] for pod in found]
    assert f"{installation.deployment}-test-gateway" not in names, names
    app = argocd_system.get(RELEASE)
    assert resource(app, "Pod", f"{installation.deployment}-test-gateway") == {}


def test_a_team_endpoint_is_served_through_the_synced_gateway(
        kubectl: Kubectl, installation: Installation, team, client_namespace: str,
        project_image: tuple[str, str | None]):
    assert_first_endpoint_answers(kubectl, installation, team, client_namespace,
                                  project_image[0])


def test_turning_crds_install_off_or_deleting_the_application_keeps_the_crd(
        argocd_system: ArgoCD, kubectl: Kubectl, installation: Installation, team,
        project_image: tuple[str, str | None], emulator: str):
    """Last in the module: it ends the installation (the fixture's teardown copes)."""
    changed = values(project_image[0], emulator, crds={"install": False})
    kubectl.run("patch", "application", RELEASE, "-n", NAMESPACE, "--type=merge", "-p",
                json.dumps({"spec": {"source": {"helm": {"valuesObject": changed}}}}))

    # Prune=false: Argo CD leaves the policies and says so, OutOfSync, instead of deleting
    # them (with prune on, it would); it no longer lists the CRD, nor deletes it.
    def synced_without_crds() -> dict[str, Any] | None:
        app = argocd_system.get(RELEASE)
        operation = (app.get("status") or {}).get("operationState") or {}
        source = (operation.get("syncResult") or {}).get("source") or {}
        done = (source.get("helm") or {}).get("valuesObject") == changed
        return app if done and operation.get("phase") == "Succeeded" else None

    app = poll(synced_without_crds, timeout=60, interval=0.2,
               message="the values without the CRDs were never synced")
    assert app["status"]["sync"]["status"] == "OutOfSync"
    policies = [r for r in app["status"]["operationState"]["syncResult"]["resources"]
                if r["group"] == "admissionregistration.k8s.io"]
    assert len(policies) == 6, policies
    assert {(r["status"], r["message"]) for r in policies} == {
        ("PruneSkipped", "ignored (no prune)")}, policies
    assert kubectl.run("get", "crd", CRD).returncode == 0
    endpoints = kubectl.run("get", "iep", "-n", team.namespace, "-o", "name").stdout.split()
    assert len(endpoints) == len(team.endpoints)

    # The endpoints go first, while the operator runs (its finalizer), then the Application
    # with its resources.
    kubectl.run("delete", "iep", "--all", "-n", team.namespace, "--timeout=60s", timeout=70)
    argocd_system.delete(RELEASE, timeout=180)

    assert kubectl.run("get", "crd", CRD).returncode == 0
    policies = kubectl.run("get", KEPT, "-l", PART_OF, "-o", "name").stdout.split()
    assert len(policies) == 6, policies
    gone = kubectl.run("get", "deployment", installation.deployment, "-n",
                       installation.namespace, check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr
