"""Flux's source-controller and kustomize-controller, and the CRDs they serve, for the
GitOps tests (tests/gitops/): built once from the pinned Go modules in
``devkit/envtest/flux`` into the cache, like the control-plane binaries (binaries.py), and
the CRDs copied from the same modules' sources next to them, so nothing is fetched again
while the pins hold.

``python -m inference_devkit.controlplane.flux`` builds what is missing (``make flux``)
and prints the paths, or says why it cannot (then the GitOps tests skip)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from inference_devkit.controlplane import binaries
from inference_devkit.controlplane.binaries import FLUX_BINARY_NAMES

# What resolve() builds, and who needs it (prebuild.py, make test's background build).
BINARIES = FLUX_BINARY_NAMES
NEEDED_BY = "the GitOps tests (tests/gitops/)"

# Each controller's config/crd/bases: every kind a controller watches must be served, or it
# exits at start ("no matches for kind HelmRepository"), though the tests use only two.
CRDS = {
    "source-controller": tuple(f"source.toolkit.fluxcd.io_{plural}.yaml" for plural in (
        "gitrepositories", "buckets", "externalartifacts", "helmcharts", "helmrepositories",
        "ocirepositories")),
    "kustomize-controller": ("kustomize.toolkit.fluxcd.io_kustomizations.yaml",),
}


@dataclass(frozen=True)
class Flux:
    source_controller: Path
    kustomize_controller: Path
    crds: tuple[Path, ...]


def resolve(out=sys.stderr) -> Flux:
    """The two controllers and their CRDs, built or copied once; BinaryUnavailable when
    that cannot be done here (no Go, no checkout)."""
    paths = {name: binaries.resolve(name, out=out) for name in FLUX_BINARY_NAMES}
    crds = tuple(path for name in FLUX_BINARY_NAMES
                 for path in binaries.copied_from_module(name, "config/crd/bases", CRDS[name]))
    return Flux(paths["source-controller"], paths["kustomize-controller"], crds)


if __name__ == "__main__":
    binaries.print_or_skip("flux", NEEDED_BY, resolve)
