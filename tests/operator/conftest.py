"""The operator against the real control plane, a real gateway and the emulator, each a
separate process started the way a user starts it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from operator_support import KEY, ROTATED_KEY

from inference_operator.controlplane.kubectl import Kubectl
from inference_operator.devstack.processes import Stack

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def crd_installed(kubectl: Kubectl) -> None:
    kubectl.run("apply", "-f", str(REPO / "crds"))
    kubectl.wait_for_condition(
        "crd/inferenceendpoints.inference-operator.dev", "Established", timeout=30
    )


@pytest.fixture(scope="session")
def stack(control_plane, crd_installed, tmp_path_factory) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("stack"), api_keys=(KEY, ROTATED_KEY))
    try:
        stack.start(stack.emulator())
        stack.start(stack.gateway())
        stack.start(stack.operator(control_plane.kubeconfig))
        yield stack
    finally:
        stack.stop()


@pytest.fixture(autouse=True)
def _stack_logs_on_failure(request):
    yield
    report = getattr(request.node, "rep_call", None)
    stack = request.node.funcargs.get("stack")
    if report is not None and report.failed and stack is not None:
        print(stack.log_tails())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.rep_call = report
    return report
