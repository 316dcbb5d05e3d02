"""Fault tests against the session's real control plane and ``stack`` (tests/conftest.py).

``RELIABILITY_SCALE=N`` (``make soak`` sets it) runs the longer variants: N control-plane
restarts in a row per test, and a burst N times as big under the operator's SIGKILL.
"""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def scale() -> int:
    return max(1, int(os.environ.get("RELIABILITY_SCALE", "1")))
