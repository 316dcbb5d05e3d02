"""The Argo CD binary: the components the tests run, pinned in devkit/envtest/argocd, built
with Go 1.27 for itself only (the machine's Go and every other build keep theirs), and
telling their real version."""

from __future__ import annotations

import dataclasses
import os
import shutil
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


def test_a_change_to_the_main_package_builds_anew(tmp_path):
    sources = binaries.envtest_sources()
    assert sources is not None
    shutil.copytree(sources / "argocd", tmp_path / "argocd")
    tool = binaries.TOOLS[ARGOCD]
    before = binaries.cached_path(tool, tmp_path)
    with (tmp_path / "argocd" / "main.go").open("a") as main:
        main.write("\n// changed\n")
    assert binaries.cached_path(tool, tmp_path) != before


def _built() -> argocd.ArgoCD:
    try:
        return argocd.resolve()
    except BinaryUnavailable as error:
        pytest.skip(f"Argo CD unavailable: {error}")


def _run(component: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(_built().binary), *args],
                          env={**os.environ, "ARGOCD_BINARY_NAME": component},
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("component", ["argocd-application-controller", "argocd-repo-server"])
def test_each_component_reports_the_pinned_release(component: str):
    result = _run(component, "version", "--short")
    # No Git commit in a module zip: "+unknown" says so, instead of a made-up one.
    assert result.stdout.split() == [f"{component}:", "v3.6.2+unknown"], result


def test_a_component_left_out_of_the_build_is_named_as_such():
    result = _run("argocd-server", "version")
    assert result.returncode == 2
    assert "argocd-server: not a component of this build" in result.stderr
    assert "argocd-application-controller" in result.stderr
