"""A real one-node cluster for the end-to-end tests (controlplane/node.py), with the image
built from the working tree's Dockerfile and loaded into the node; the Anthropic emulator
runs in it as a Deployment + Service, the upstream of every install.

Not part of a plain `pytest` run: `make e2e` sets INFERENCE_OPERATOR_E2E=1. Where a node
cannot start (not Linux, not root, no containerd/runc/iptables) every test is skipped with
one line saying why and what to install.

`USE_EXISTING_CLUSTER=true` (with KUBECONFIG) and `E2E_IMAGE` (an image that cluster can
pull) run the same tests against an existing cluster: nothing is built or started then
(docs/install.md, "End to end on a real node").
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from inference_devkit.controlplane import binaries, images, launcher, node
from inference_devkit.controlplane.kubectl import Kubectl
from inference_devkit.install import (
    Installation,
    deploy_emulator,
    elapsed,
    grant_invoke,
    install_chart,
    namespace,
)
from resources import endpoint, secret

ENABLED = os.environ.get("INFERENCE_OPERATOR_E2E") == "1"
EXISTING = os.environ.get("USE_EXISTING_CLUSTER", "").lower() == "true"
# Only with an existing cluster: the local node has no registry to pull it from.
IMAGE = os.environ.get("E2E_IMAGE", "") if EXISTING else ""


def _unavailable() -> str | None:
    if not ENABLED:
        return "end-to-end tests run with `make e2e` (INFERENCE_OPERATOR_E2E=1)"
    if EXISTING:
        return None if IMAGE else (
            "USE_EXISTING_CLUSTER=true needs E2E_IMAGE, an image the cluster can pull")
    try:
        node.check_supported()
    except node.NodeUnavailable as error:
        return f"no local node here: {error}"
    return None


# Starts and kills nodes of its own: it runs first, before any test has started the
# session's node (`cluster`, started on first use), as only one node fits on a machine.
HARNESS_CLEANUP = "tests/e2e/test_e2e_harness_cleanup.py"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    first = [i for i in items if str(i.fspath).replace(os.sep, "/").endswith(HARNESS_CLEANUP)]
    items[:] = first + [i for i in items if i not in first]
    reason = _unavailable()
    if reason is None:
        return
    marker = pytest.mark.skip(reason=reason)
    for item in items:
        if "tests/e2e/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(marker)


@pytest.fixture(scope="session")
def project_image() -> Iterator[tuple[str, str | None]]:
    """(image ref, OCI archive path) built from the working tree; (E2E_IMAGE, None) when
    that names one."""
    if IMAGE:
        yield IMAGE, None
        return
    archive = images.build_project_image(sys.stderr)
    yield images.PROJECT_REF, str(archive)


@dataclass(frozen=True)
class ExistingCluster:
    """USE_EXISTING_CLUSTER=true: the cluster KUBECONFIG names, left as it was found."""

    plane: launcher.ControlPlane

    def log_tails(self) -> str:
        return ""


@pytest.fixture(scope="session")
def cluster(project_image: tuple[str, str | None]) -> Iterator[node.Node | ExistingCluster]:
    if EXISTING:
        yield ExistingCluster(launcher.existing_cluster())
        return
    running = node.start(out=sys.stderr)
    _started_nodes.append(running)
    try:
        if project_image[1] is not None:
            running.load_image(Path(project_image[1]))
        yield running
    finally:
        running.stop()
        left = running.leftovers()
        assert not left, f"the node left behind: {left}"


_started_nodes: list[node.Node] = []  # for the closing summary


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for started in _started_nodes:
        terminalreporter.write_line(f"local node: Ready in {started.ready_seconds:.1f}s")


@pytest.fixture(scope="session")
def kubectl(cluster: node.Node | ExistingCluster) -> Kubectl:
    return Kubectl(binaries.resolve("kubectl"), cluster.plane.kubeconfig)


@pytest.fixture(scope="session")
def emulator(cluster, kubectl: Kubectl, project_image: tuple[str, str | None]) -> str:
    """The Anthropic emulator as a Deployment + Service from the project image; its URL."""
    return deploy_emulator(kubectl, cluster, project_image[0], namespace(kubectl, "e2e-emulator"))


@pytest.fixture(scope="module")
def installation(cluster, kubectl: Kubectl, project_image: tuple[str, str | None],
                 emulator: str) -> Iterator[Installation]:
    """The chart, installed with helm (image: the local one; upstream: the emulator, still
    verified through its Models API); uninstalled when the module is done. Modules that
    install otherwise override this fixture."""
    yield from install_chart(cluster, kubectl, project_image[0], emulator)


@dataclass(frozen=True)
class Team:
    namespace: str
    endpoints: dict[str, str]  # resource name -> inference_id


@pytest.fixture(scope="module")
def team(kubectl: Kubectl, installation: Installation, client_namespace: str) -> Iterator[Team]:
    """A Secret and two InferenceEndpoints in a team namespace, Ready, which the client
    namespace's default ServiceAccount may call; deleted (while the operator still runs,
    so the finalizer is released) before the install goes."""
    ns = namespace(kubectl, "e2e-team")
    grant_invoke(kubectl, installation, ns, client_namespace)
    suffix = ns.rsplit("-", 1)[1]
    names = {name: f"{name}-{suffix}" for name in ("e2e-a", "e2e-b")}
    kubectl.apply([secret("anthropic-credentials", f"sk-ant-e2e-{suffix}")]
                  + [endpoint(name, "anthropic-credentials", inference_id=iid)
                     for name, iid in names.items()], ns)
    started = time.monotonic()
    for name in names:
        kubectl.wait_for_condition(f"iep/{name}", "Ready", ns, timeout=90)
    elapsed(f"{len(names)} InferenceEndpoints Ready", started)
    yield Team(ns, names)
    kubectl.run("delete", "iep", "--all", "-n", ns, "--timeout=60s", check=False, timeout=70)
    kubectl.run("delete", "namespace", ns, "--wait=false", check=False)


@pytest.fixture(scope="module")
def client_namespace(kubectl: Kubectl) -> Iterator[str]:
    """Where the applications run: not the team's namespace, not the operator's."""
    ns = namespace(kubectl, "e2e-client")
    yield ns
    kubectl.run("delete", "namespace", ns, "--wait=false", check=False)
