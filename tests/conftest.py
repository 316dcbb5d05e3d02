"""Shared fixtures: one real control plane per test session, a fresh namespace per test,
and one ``stack`` (emulator, gateway and operator as real processes) per session, shared
by tests/operator and tests/reliability: two operators on one cluster would fight.

``USE_EXISTING_CLUSTER=true`` with ``KUBECONFIG`` runs the same suite against a real
cluster (kind, ...); ``KUBEBUILDER_ASSETS`` supplies prebuilt binaries.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from inference_devkit.controlplane import binaries, launcher, prebuild
from inference_devkit.controlplane.kubeconfig import write_token_kubeconfig
from inference_devkit.controlplane.kubectl import Kubectl
from inference_devkit.devstack.processes import Stack
from operator_support import running_stack

REPO = Path(__file__).resolve().parents[1]

_planes: list[launcher.ControlPlane] = []  # running now: their logs go into failure reports
_started: list[launcher.ControlPlane] = []  # for the closing summary

# The tests that need a tool the session builds in the background (controlplane/prebuild.py)
# when it is missing; testpaths (pyproject.toml) runs them after those that need none.
NEEDS_TOOL = {"tests/gitops/": "flux", "tests/argocd/": "argocd",
              "tests/e2e/test_e2e_argocd.py": "argocd", "tests/tracing/": "jaeger",
              "tests/bench/": "jaeger"}
PREBUILD_LOG = binaries.cache_root() / "prebuild.log"
_prebuilding: list[subprocess.Popen[bytes]] = []


def pytest_collection_finish(session: pytest.Session) -> None:
    # In the order the tests will first need them.
    needed = dict.fromkeys(
        tool for item in session.items if item.path.is_relative_to(REPO)
        for prefix, tool in NEEDS_TOOL.items()
        if item.path.relative_to(REPO).as_posix().startswith(prefix))
    missing = prebuild.unbuilt(list(needed))
    if not missing:
        return
    PREBUILD_LOG.parent.mkdir(parents=True, exist_ok=True)
    _prebuilding.append(prebuild.start(missing, PREBUILD_LOG))
    session.config.pluginmanager.get_plugin("terminalreporter").write_line(
        f"building {', '.join(missing)} in the background at idle priority while the tests "
        f"that need none run (log: {PREBUILD_LOG})")


def pytest_sessionfinish(session: pytest.Session) -> None:
    for process in _prebuilding:
        prebuild.stop(process)


@pytest.fixture(scope="session")
def control_plane() -> Iterator[launcher.ControlPlane]:
    plane = launcher.start()
    _planes.append(plane)
    _started.append(plane)
    try:
        yield plane
    finally:
        _planes.remove(plane)
        plane.stop()


@pytest.fixture(scope="session")
def kubectl(control_plane: launcher.ControlPlane) -> Kubectl:
    return Kubectl(binaries.resolve("kubectl"), control_plane.kubeconfig)


@pytest.fixture(scope="session")
def api_client(control_plane: launcher.ControlPlane) -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(config_file=str(control_plane.kubeconfig))
    yield api
    api.close()


@pytest.fixture
def namespace(kubectl: Kubectl) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    kubectl.run("create", "namespace", name)
    yield name
    # Without a controller-manager a namespace never finishes terminating; deleting it
    # still stops the next test from seeing this one's objects through a shared name.
    kubectl.run("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def service_account_kubeconfig(
    kubectl: Kubectl, control_plane: launcher.ControlPlane, tmp_path: Path
):
    """Factory: a kubeconfig that acts as the given ServiceAccount (a real token)."""

    def make(namespace: str, name: str) -> Path:
        kubectl.run("create", "serviceaccount", name, "-n", namespace)
        token = kubectl.run("create", "token", name, "-n", namespace).stdout.strip()
        path = tmp_path / f"{namespace}-{name}.kubeconfig"
        write_token_kubeconfig(path, control_plane.kubeconfig, token)
        return path

    return make


@pytest.fixture(scope="session")
def crd_installed(kubectl: Kubectl) -> None:
    kubectl.run("apply", "-f", str(REPO / "crds"))
    kubectl.wait_for_condition(
        "crd/inferenceendpoints.inference-operator.dev", "Established", timeout=30
    )


@pytest.fixture
def folder(namespace: str) -> str:
    """The GitOps tests' (tests/gitops, tests/argocd) path of their own in a shared
    repository."""
    return f"clusters/{namespace}"


@pytest.fixture
def write_folder(git_repo, folder: str) -> Callable[..., str]:
    """Replace manifests (or, for None, delete files) in the test's folder of the
    ``git_repo`` its package provides, in one commit; its SHA."""
    def write(files: dict[str, list[dict[str, Any]] | None], message: str = "update") -> str:
        return git_repo.write_folder(folder, files, message)
    return write


@pytest.fixture(scope="session")
def stack(control_plane, crd_installed, tmp_path_factory) -> Iterator[Stack]:
    """The operator against the real control plane, a real gateway and the emulator, each
    a separate process started the way a user starts it."""
    with running_stack(tmp_path_factory.mktemp("stack"), control_plane.kubeconfig) as stack:
        yield stack


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if report.failed and _planes:
        report.sections.append(("control plane logs", _planes[-1].log_tails()))
    stack = getattr(item, "funcargs", {}).get("stack")
    if report.when == "call" and report.failed and isinstance(stack, Stack):
        report.sections.append(("stack logs", stack.log_tails()))
    return report


def pytest_terminal_summary(terminalreporter) -> None:
    if _prebuilding:
        terminalreporter.write_line(f"background build ({PREBUILD_LOG}):")
        for line in PREBUILD_LOG.read_text(errors="replace").splitlines():
            if not line.startswith("  ... "):  # the heartbeats
                terminalreporter.write_line(f"  {line}")
    for plane in _started:
        terminalreporter.write_line(
            f"control plane: ready in {plane.startup_seconds:.1f}s at {plane.server}"
            if plane.is_local else f"control plane: existing cluster from {plane.kubeconfig}"
        )
