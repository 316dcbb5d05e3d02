"""The Argo CD binary: pinned in devkit/envtest/argocd, built with Go 1.27 for itself only
(the machine's Go and every other build keep theirs), and telling its real version."""

from __future__ import annotations

import dataclasses
import os
import subprocess

import pytest

from inference_devkit.controlplane import argocd, binaries
from inference_devkit.controlplane.binaries import ARGOCD, BinaryUnavailable


def test_only_the_argocd_build_selects_go_1_27_and_it_is_part_of_the_cache_key():
    sources = binaries.envtest_sources()
    assert sources is not None
    tool = binaries.TOOLS[ARGOCD]
    assert binaries.pinned_version(tool, sources) == "v3.6.2"
    assert tool.build_env()["GOTOOLCHAIN"] == "go1.27.3"
    for other in ("helm", "kube-apiserver", "source-controller"):
        assert binaries.TOOLS[other].build_env().get("GOTOOLCHAIN") == os.environ.get(
            "GOTOOLCHAIN"), other
    local = dataclasses.replace(tool, toolchain=None)
    assert binaries.cached_path(tool, sources) != binaries.cached_path(local, sources)


def test_the_built_binary_reports_the_pinned_release():
    try:
        built = argocd.resolve()
    except BinaryUnavailable as error:
        pytest.skip(f"Argo CD unavailable: {error}")
    result = subprocess.run([str(built.binary), "version", "--client", "--short"],
                            env={**os.environ, "ARGOCD_BINARY_NAME": "argocd"},
                            capture_output=True, text=True, timeout=60, check=True)
    # No Git commit in a module zip: "+unknown" says so, instead of a made-up one.
    assert result.stdout.split() == ["argocd:", "v3.6.2+unknown"], result.stdout
