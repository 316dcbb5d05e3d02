"""`make dev --check` / `inference-operator dev --check` on this checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest


def dev(*options: str) -> str:
    """``inference-operator dev --check`` with ``options``: its output, once it passed."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("ANTHROPIC_API_KEY", "USE_EXISTING_CLUSTER")}
    result = subprocess.run(
        [sys.executable, "-m", "inference_operator.cli.main", "dev", "--check", *options],
        capture_output=True, text=True, timeout=240, env=env, check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert output.rstrip().endswith("dev --check: OK")
    return output


def test_dev_check_brings_up_everything_and_serves_a_completion_and_a_stream():
    output = dev()
    assert "check: anthropic-completion is Ready" in output
    assert "check: completion ok" in output
    assert "then [DONE]" in output
    assert "export KUBECONFIG=" in output and "curl -s -XPOST" in output


def test_dev_with_prometheus_scrapes_the_gateway_and_the_operator():
    if shutil.which("prometheus") is None:
        pytest.skip("prometheus not found: `make prometheus-packages` installs Debian's package")
    output = dev("--prometheus")
    assert "  prometheus:  http://127.0.0.1:" in output
    assert "check: prometheus scrapes the gateway and the operator" in output
