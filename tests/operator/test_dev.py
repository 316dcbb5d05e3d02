"""`make dev --check` / `inference-operator dev --check` on this checkout."""

from __future__ import annotations

import os
import subprocess
import sys


def test_dev_check_brings_up_everything_and_serves_a_completion_and_a_stream():
    env = {k: v for k, v in os.environ.items()
           if k not in ("ANTHROPIC_API_KEY", "USE_EXISTING_CLUSTER")}
    result = subprocess.run(
        [sys.executable, "-m", "inference_operator.cli.main", "dev", "--check"],
        capture_output=True, text=True, timeout=240, env=env, check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "check: anthropic-completion is Ready" in output
    assert "check: completion ok" in output
    assert "then [DONE]" in output
    assert output.rstrip().endswith("dev --check: OK")
    assert "export KUBECONFIG=" in output and "curl -s -XPOST" in output
