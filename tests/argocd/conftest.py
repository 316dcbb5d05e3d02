"""Argo CD for real (tests/argocd_support.py) against the session's control plane, syncing
InferenceEndpoints from a Git repository served on loopback to an operator, gateway and
emulator of this package's own.

Module-scoped and stopped when the module ends, as tests/gitops is: the session's ``stack``
would keep its operator running into tests/install, whose operators would then fight it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from argocd_support import ArgoCD, running_argocd, unavailable
from git_server import GitServer
from inference_devkit.controlplane.kubectl import Kubectl
from inference_devkit.controlplane.launcher import ControlPlane
from inference_devkit.devstack.processes import Stack
from operator_support import assert_stopped, running_stack


@pytest.fixture(scope="module")
def stack(control_plane: ControlPlane, crd_installed: None,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """This module's own emulator, gateway and operator (named ``stack`` so the session
    conftest puts its logs into failure reports)."""
    with running_stack(tmp_path_factory.mktemp("argocd-stack"),
                       control_plane.kubeconfig) as stack:
        yield stack
    assert_stopped(stack.services.values())


@pytest.fixture(scope="module")
def argocd_system(stack: Stack, kubectl: Kubectl, control_plane: ControlPlane,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArgoCD]:
    """Redis, the repo-server and the application controller, with the admin kubeconfig
    (what Argo CD applies is not the RBAC under test here)."""
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    with running_argocd(kubectl, control_plane.kubeconfig,
                        tmp_path_factory.mktemp("argocd")) as system:
        # Their logs join the stack's in failure reports (the session conftest's hook).
        stack.services.update({service.name: service for service in system.services})
        yield system
    assert_stopped(system.services)


@pytest.fixture
def argo(argocd_system: ArgoCD, namespace: str) -> Iterator[ArgoCD]:
    """Per test: the Applications it creates are deleted with their resources before its
    namespace goes, while the operator still handles the finalizers."""
    before = set(argocd_system.applications)
    yield argocd_system
    for name in [n for n in argocd_system.applications if n not in before]:
        argocd_system.delete(name)


@pytest.fixture
def git_repo(argo: ArgoCD) -> GitServer:
    """What the session conftest's ``write_folder`` commits to."""
    return argo.git
