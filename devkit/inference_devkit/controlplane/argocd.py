"""The Argo CD components the tests run (one binary: ``devkit/envtest/argocd/main.go``) and
the CRDs its application controller serves, for the Argo CD tests (tests/argocd/): built
once from the pinned Go module in ``devkit/envtest/argocd`` into the cache, like the
control-plane binaries (binaries.py), with Go 1.27 fetched for that build alone; the CRDs
copied from the same module's source.

``python -m inference_devkit.controlplane.argocd`` builds what is missing (``make argocd``)
and prints the paths, or says why it cannot (then the Argo CD tests skip)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from inference_devkit.controlplane import binaries
from inference_devkit.controlplane.binaries import ARGOCD

# What resolve() builds, and who needs it (prebuild.py, make test's background build).
BINARIES = (ARGOCD,)
NEEDED_BY = "the Argo CD tests (tests/argocd/)"

# The ApplicationSet CRD is only for its own controller, which the tests do not run.
CRDS = ("application-crd.yaml", "appproject-crd.yaml")
# The repo-server runs this script of Argo CD's image (from its PATH) for every revision
# it checks out, GPG verification on or off.
HELPERS = ("git-verify-wrapper.sh",)


@dataclass(frozen=True)
class ArgoCD:
    binary: Path
    crds: tuple[Path, ...]
    helpers: Path  # a folder for the repo-server's PATH


def resolve(out=sys.stderr) -> ArgoCD:
    """The binary and its CRDs, built or copied once; BinaryUnavailable when that cannot
    be done here (no Go, no checkout, no module proxy)."""
    binary = binaries.resolve(ARGOCD, out=out)
    crds = tuple(binaries.copied_from_module(ARGOCD, "manifests/crds", CRDS))
    (helper,) = binaries.copied_from_module(ARGOCD, "hack", HELPERS, into="bin")
    helper.chmod(0o755)  # Go's module cache keeps no executable bits
    return ArgoCD(binary, crds, helper.parent)


if __name__ == "__main__":
    binaries.print_or_skip("argocd", NEEDED_BY, resolve)
