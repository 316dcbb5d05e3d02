"""A real trace receiver, Jaeger v2 (controlplane/jaeger.py), for this directory's tests;
they skip, saying why, where it cannot be built."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from inference_devkit.controlplane.jaeger import RunningJaeger, running_jaeger
from tracing_support import unavailable


@pytest.fixture(scope="module")
def jaeger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningJaeger]:
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    with running_jaeger(tmp_path_factory.mktemp("jaeger")) as running:
        yield running
