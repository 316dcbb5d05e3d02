"""promtool, Prometheus's own checker, for the alert and dashboard tests; without it they
skip, saying what installs it."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

Promtool = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="session")
def promtool() -> Promtool:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.skip("promtool not found: `make prometheus-packages` installs Debian's "
                    "prometheus (as root), or install Prometheus's promtool")

    def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([binary, *args], cwd=cwd, capture_output=True, text=True,
                              check=False, timeout=120)

    return run
