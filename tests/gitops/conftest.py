"""GitOps for real: Flux's source-controller and kustomize-controller (built from the pinned
modules, controlplane/flux.py) run out of cluster against the session's control plane,
sync from a Git repository served on loopback, and apply to an operator, gateway and
emulator of this package's own.

Everything here is module-scoped and stopped when its module ends: the session's ``stack``
would keep its operator running into tests/install, whose operators would then fight it.
Not package-scoped: tests/ has no packages, and pytest then keeps a "package" fixture
for the whole session, which is the same problem (found by running tests/observability
after these)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import flux_waits
import pytest
from flux_objects import FLUX_NAMESPACE, SOURCE, git_repository

from git_server import GitServer
from inference_devkit.controlplane import flux
from inference_devkit.controlplane.binaries import BinaryUnavailable
from inference_devkit.controlplane.kubectl import Kubectl
from inference_devkit.controlplane.launcher import ControlPlane
from inference_devkit.devstack.processes import Service, Stack
from inference_devkit.loopback import free_port
from operator_support import assert_stopped, running_stack


@pytest.fixture(scope="module")
def flux_binaries() -> flux.Flux:
    try:
        return flux.resolve()
    except BinaryUnavailable as error:
        pytest.skip(f"Flux controllers unavailable: {error}")


@pytest.fixture(scope="module")
def stack(control_plane: ControlPlane, crd_installed: None,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """This module's own emulator, gateway (config mode) and operator, as the session's
    ``stack`` is built, but stopped when the module ends. Named ``stack`` so the session
    conftest puts its logs into failure reports."""
    with running_stack(tmp_path_factory.mktemp("gitops-stack"),
                       control_plane.kubeconfig) as stack:
        yield stack
    assert_stopped(stack.services.values())


@dataclass
class GitOps:
    """The running Flux, its Git repository, and the Kustomizations the tests created."""

    kubectl: Kubectl
    git: GitServer
    kustomizations: list[str] = field(default_factory=list)

    def commit(self, files: dict[str, str | None], message: str = "update") -> str:
        return self.git.commit(files, message)

    def create(self, kustomization: dict[str, Any]) -> str:
        self.kubectl.apply(kustomization)
        name = kustomization["metadata"]["name"]
        self.kustomizations.append(name)
        return name

    def remove(self, name: str) -> None:
        """Delete with prune, while the operator runs, so its finalizers are handled."""
        flux_waits.delete(self.kubectl, "kustomization", name)
        self.kustomizations.remove(name)


@pytest.fixture(scope="module")
def flux_system(flux_binaries: flux.Flux, stack: Stack, kubectl: Kubectl,
                control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[GitOps]:
    """Flux's two controllers as supervised processes, its CRDs, and the GitRepository
    ``platform`` on a smart-HTTP server of our own.

    The controllers use the admin kubeconfig: kustomize-controller applies with its own
    identity, and a least-privilege one would test RBAC this suite is not about."""
    work = tmp_path_factory.mktemp("flux")
    for crd in flux_binaries.crds:
        kubectl.run("apply", "--server-side", "-f", str(crd))
    for crd in flux_binaries.crds:
        kubectl.wait_for_condition(f"crd/{_crd_name(crd)}", "Established", timeout=30)
    kubectl.apply({"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": FLUX_NAMESPACE}})
    git = GitServer(work / "git").start()
    gitops = GitOps(kubectl, git)
    controllers = _controllers(flux_binaries, control_plane.kubeconfig, work)
    try:
        for service in controllers:
            stack.start(service, wait=60)
        kubectl.apply(git_repository(git.url, git.branch))
        yield gitops
    finally:
        for name in list(gitops.kustomizations):
            gitops.remove(name)
        flux_waits.delete(kubectl, "gitrepository", SOURCE)
        for service in reversed(controllers):
            service.stop()
        git.stop()
        assert_stopped(controllers)


def _controllers(binaries: flux.Flux, kubeconfig: Path, work: Path) -> list[Service]:
    # Both read their namespace from RUNTIME_NAMESPACE, as in the flux-system Pods.
    env = {"KUBECONFIG": str(kubeconfig), "RUNTIME_NAMESPACE": FLUX_NAMESPACE}
    common = ["--enable-leader-election=false", "--watch-all-namespaces=true",
              "--events-addr=", "--log-encoding=console"]
    source_health, kustomize_health, storage = free_port(), free_port(), free_port()
    (work / "storage").mkdir()  # source-controller refuses a storage path that is missing
    source = Service(
        "source-controller",
        [*common, f"--storage-path={work / 'storage'}",
         f"--storage-addr=127.0.0.1:{storage}",
         # The address artifacts are fetched from: kustomize-controller runs here too.
         f"--storage-adv-addr=127.0.0.1:{storage}",
         f"--metrics-addr=127.0.0.1:{free_port()}",
         f"--health-addr=127.0.0.1:{source_health}"],
        work / "source-controller.log", env=dict(env),
        health_url=f"http://127.0.0.1:{source_health}/healthz",
        program=(str(binaries.source_controller),))
    kustomize = Service(
        "kustomize-controller",
        [*common, f"--metrics-addr=127.0.0.1:{free_port()}",
         f"--health-addr=127.0.0.1:{kustomize_health}"],
        work / "kustomize-controller.log", env=dict(env),
        health_url=f"http://127.0.0.1:{kustomize_health}/healthz",
        program=(str(binaries.kustomize_controller),))
    return [source, kustomize]


def _crd_name(path: Path) -> str:
    # Files are named <group>_<plural>.yaml; the CRD is <plural>.<group>.
    group, _, plural = path.stem.partition("_")
    return f"{plural}.{group}"


@pytest.fixture
def gitops(flux_system: GitOps, namespace: str) -> Iterator[GitOps]:
    """Per test: the Kustomizations it creates are deleted (pruning what they applied)
    before its namespace goes, while the operator still handles the finalizers."""
    before = set(flux_system.kustomizations)
    yield flux_system
    for name in [n for n in flux_system.kustomizations if n not in before]:
        flux_system.remove(name)


@pytest.fixture
def git_repo(gitops: GitOps) -> GitServer:
    """What the session conftest's ``write_folder`` commits to."""
    return gitops.git
