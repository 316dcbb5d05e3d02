"""Flux's source-controller and kustomize-controller, and the CRDs they serve, for the
GitOps tests (tests/gitops/): built once from the pinned Go modules in
``devkit/envtest/flux`` into the cache, like the control-plane binaries (binaries.py), and
the CRDs copied from the same modules' sources next to them, so nothing is fetched again
while the pins hold.

``python -m inference_devkit.controlplane.flux`` builds what is missing (``make flux``)
and prints the paths, or says why it cannot (then the GitOps tests skip)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from inference_devkit.controlplane import binaries
from inference_devkit.controlplane.binaries import FLUX_BINARY_NAMES, BinaryUnavailable

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
    crds = tuple(path for name in FLUX_BINARY_NAMES for path in _crds(name, paths[name].parent))
    return Flux(paths["source-controller"], paths["kustomize-controller"], crds)


def _crds(name: str, cache: Path) -> list[Path]:
    folder = cache / "crds"
    wanted = [folder / file for file in CRDS[name]]
    if all(path.exists() for path in wanted):
        return wanted
    source = _module_dir(name) / "config" / "crd" / "bases"
    folder.mkdir(exist_ok=True)
    for path in wanted:
        shutil.copyfile(source / path.name, path)
    return wanted


def _module_dir(name: str) -> Path:
    """The pinned module's source, from the Go module cache (downloaded if needed)."""
    sources = binaries.envtest_sources()
    go = shutil.which("go")
    if sources is None or go is None:
        raise BinaryUnavailable(f"{name}'s CRDs: Go and the devkit/envtest modules are needed")
    tool = binaries.TOOLS[name]
    module = f"{tool.pinned_module}@{binaries.pinned_version(tool, sources)}"
    result = subprocess.run([go, "mod", "download", "-json", module], cwd=sources / "flux",
                            capture_output=True, text=True, check=False, timeout=600)
    if result.returncode != 0:
        raise BinaryUnavailable(f"go mod download {module} failed: {result.stdout[-2000:]}")
    return Path(json.loads(result.stdout)["Dir"])


if __name__ == "__main__":
    try:
        flux = resolve()
    except BinaryUnavailable as error:
        # As `make node` does where no node can run: said, and the tests that need it skip.
        print(f"flux: {error}; the GitOps tests (tests/gitops/) skip", file=sys.stderr)
        sys.exit(0)
    print(f"source-controller: {flux.source_controller}")
    print(f"kustomize-controller: {flux.kustomize_controller}")
    for crd in flux.crds:
        print(f"crd: {crd}")
