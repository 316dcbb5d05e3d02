"""A real one-node cluster for the end-to-end tests (controlplane/node.py), with the image
built from the working tree's Dockerfile and loaded into the node.

Not part of a plain `pytest` run: `make e2e` sets INFERENCE_OPERATOR_E2E=1. Where a node
cannot start (not Linux, not root, no containerd/runc/iptables) every test is skipped with
one line saying why and what to install.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from inference_operator.controlplane import images, node

ENABLED = os.environ.get("INFERENCE_OPERATOR_E2E") == "1"


def _unavailable() -> str | None:
    if not ENABLED:
        return "end-to-end tests run with `make e2e` (INFERENCE_OPERATOR_E2E=1)"
    try:
        node.check_supported()
    except node.NodeUnavailable as error:
        return f"no local node here: {error}"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _unavailable()
    if reason is None:
        return
    marker = pytest.mark.skip(reason=reason)
    for item in items:
        if "tests/e2e/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(marker)


@pytest.fixture(scope="session")
def project_image() -> Iterator[tuple[str, str]]:
    """(image ref, OCI archive path) built from the working tree."""
    archive = images.build_project_image(sys.stderr)
    yield images.PROJECT_REF, str(archive)


@pytest.fixture(scope="session")
def cluster(project_image: tuple[str, str]) -> Iterator[node.Node]:
    running = node.start(out=sys.stderr)
    try:
        running.load_image(Path(project_image[1]))
        yield running
    finally:
        running.stop()
        left = running.leftovers()
        assert not left, f"the node left behind: {left}"
