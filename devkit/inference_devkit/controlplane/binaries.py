"""Find the control-plane binaries, building them from their pinned Go modules once.

Resolution order:
1. ``KUBEBUILDER_ASSETS``: a folder that already holds the binaries; nothing is built.
2. The per-user cache,
   ``${XDG_CACHE_HOME:-~/.cache}/inference-operator/envtest/<module>-<version>/``,
   keyed by the pinned version, so a fresh clone reuses what an earlier one built.
3. A build from the Go modules in the repository's ``devkit/envtest/<module>/`` (pins live in
   their go.mod files, the only place a version is written down).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inference_devkit.checkout import checkout_path

BINARY_NAMES = ("etcd", "kube-apiserver", "kubectl", "helm")
# Optional: envtest-style asset folders lack it; the harness then runs without it.
CONTROLLER_MANAGER = "kube-controller-manager"
# Only a real node needs these (controlplane/node.py); resolve_all never builds them, so
# the API-server-only tests do not pay for kubelet's build.
NODE_BINARY_NAMES = ("kubelet", "kube-proxy", "kube-scheduler")
# Cluster DNS (controlplane/dns.py): runs in the cluster from an image holding only this
# binary, so it is built static; also only for a real node.
COREDNS = "coredns"
FLUX_BINARY_NAMES = ("source-controller", "kustomize-controller")
# The Argo CD components the tests run, one binary (ARGOCD_BINARY_NAME picks the
# component), built from devkit/envtest/argocd/main.go for tests/argocd/.
ARGOCD = "argocd"
# Jaeger v2, the real OTLP receiver of the tracing tests (tests/tracing/).
JAEGER = "jaeger"


@dataclass(frozen=True)
class GoTool:
    """One binary: the Go module folder that pins it and the package to build (``.``:
    the folder's own main package)."""

    name: str
    module_dir: str
    pinned_module: str
    package: str
    # Source builds report v0.0.0 unless told their version (helm's kubeVersion checks read it).
    stamps_kubernetes_version: bool = False
    # CGO off: a static binary, for an image that holds nothing but it (no libc).
    static: bool = False
    # The Go variable a release stamps its own version into (else it reports a placeholder).
    version_variable: str | None = None
    # A module that needs a newer Go than the machine's: GOTOOLCHAIN for its build only
    # (the go command fetches that toolchain from the module proxy).
    toolchain: str | None = None
    # Compiled without optimizations (Go's debug build, -N -l): faster to build, for the
    # tools only tests run, whose speed no test measures.
    unoptimized: bool = False

    def ldflags(self, version: str) -> str:
        flags = ["-s", "-w"]
        if self.version_variable:
            flags.append(f"-X {self.version_variable}={version.lstrip('v')}")
        if self.stamps_kubernetes_version:
            major, minor = version.lstrip("v").split(".")[:2]
            flags += [
                f"-X k8s.io/component-base/version.gitVersion={version}",
                f"-X k8s.io/component-base/version.gitMajor={major}",
                f"-X k8s.io/component-base/version.gitMinor={minor}",
                "-X k8s.io/component-base/version.gitTreeState=clean",
            ]
        return " ".join(flags)

    def recipe(self, version: str) -> str:
        """What besides the version changes the binary; the cache key hashes it. A tool
        that is not static hashes its ldflags alone, as before (its cache stays valid)."""
        return (self.ldflags(version) + (" CGO_ENABLED=0" if self.static else "")
                + (f" GOTOOLCHAIN={self.toolchain}" if self.toolchain else "")
                + (f" -gcflags={self.gcflags()}" if self.unoptimized else ""))

    def gcflags(self) -> str:
        return "all=-N -l" if self.unoptimized else ""

    def build_env(self) -> dict[str, str]:
        """The caller's environment (proxy, SSL_CERT_FILE, GOPROXY... reach `go` as
        they are), plus CGO_ENABLED=0 for a static tool and the tool's own toolchain."""
        env = dict(os.environ)
        if self.static:
            env["CGO_ENABLED"] = "0"
        if self.toolchain:
            env["GOTOOLCHAIN"] = self.toolchain
        return env


TOOLS: dict[str, GoTool] = {
    tool.name: tool
    for tool in (
        GoTool("etcd", "etcd", "go.etcd.io/etcd/server/v3", "go.etcd.io/etcd/server/v3"),
        *(
            GoTool(name, "kubernetes", "k8s.io/kubernetes", f"k8s.io/kubernetes/cmd/{name}",
                   stamps_kubernetes_version=True)
            for name in ("kube-apiserver", "kubectl", CONTROLLER_MANAGER, *NODE_BINARY_NAMES)
        ),
        GoTool("helm", "helm", "helm.sh/helm/v4", "helm.sh/helm/v4/cmd/helm"),
        GoTool(COREDNS, "coredns", "github.com/coredns/coredns", "github.com/coredns/coredns",
               static=True),
        # Flux's controllers, for the GitOps tests only (controlplane/flux.py).
        *(GoTool(name, "flux", f"github.com/fluxcd/{name}", f"github.com/fluxcd/{name}",
                 static=True, unoptimized=True) for name in FLUX_BINARY_NAMES),
        # Argo CD, for the Argo CD tests only (controlplane/argocd.py).
        GoTool(ARGOCD, "argocd", "github.com/argoproj/argo-cd/v3", ".", static=True,
               version_variable="github.com/argoproj/argo-cd/v3/common.version",
               toolchain="go1.27.3", unoptimized=True),
        # Jaeger, for the tracing tests only (controlplane/jaeger.py).
        GoTool(JAEGER, "jaeger", "github.com/jaegertracing/jaeger",
               "github.com/jaegertracing/jaeger/cmd/jaeger", static=True, unoptimized=True),
    )
}


class BinaryUnavailable(RuntimeError):
    """A binary is neither supplied, cached nor buildable here."""


def envtest_sources() -> Path | None:
    """The repository's ``devkit/envtest`` folder, when running from a checkout."""
    override = os.environ.get("INFERENCE_OPERATOR_ENVTEST_DIR")
    if override:
        return Path(override)
    return checkout_path("devkit", "envtest")


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "inference-operator" / "envtest"


def pinned_version(tool: GoTool, sources: Path) -> str:
    go_mod = (sources / tool.module_dir / "go.mod").read_text()
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(tool.pinned_module)}\s+(v\S+)", go_mod, re.M)
    if not match:
        raise BinaryUnavailable(f"{tool.pinned_module} is not pinned in {tool.module_dir}/go.mod")
    return match.group(1)


def cached_path(tool: GoTool, sources: Path) -> Path:
    """Keyed by the pinned version, the build flags and the Go sources of a main package
    kept beside the pin (Argo CD's): a change of any builds anew."""
    version = pinned_version(tool, sources)
    key = hashlib.sha256(tool.recipe(version).encode())
    for source in sorted((sources / tool.module_dir).glob("*.go")):
        key.update(source.read_bytes())
    recipe = key.hexdigest()[:8]
    return cache_root() / f"{tool.module_dir}-{version}-{recipe}" / tool.name


def module_source(name: str) -> Path:
    """A pinned tool's module source, from the Go module cache (downloaded if needed):
    where the CRDs a controller serves are copied from."""
    sources = envtest_sources()
    go = shutil.which("go")
    if sources is None or go is None:
        raise BinaryUnavailable(f"{name}'s sources: Go and the devkit/envtest modules are needed")
    tool = TOOLS[name]
    module = f"{tool.pinned_module}@{pinned_version(tool, sources)}"
    result = subprocess.run([go, "mod", "download", "-json", module],
                            cwd=sources / tool.module_dir, env=tool.build_env(),
                            capture_output=True, text=True, check=False, timeout=600)
    if result.returncode != 0:
        raise BinaryUnavailable(f"go mod download {module} failed: {result.stdout[-2000:]}")
    return Path(json.loads(result.stdout)["Dir"])


def copied_from_module(name: str, folder: str, files: tuple[str, ...],
                       into: str = "crds") -> list[Path]:
    """Files of a tool's pinned module source (its CRDs, its helper scripts), copied once
    into a folder beside the built binary, so nothing is fetched again while the pin
    holds."""
    sources = envtest_sources()
    if sources is None:
        raise BinaryUnavailable(f"{name}'s sources: no devkit/envtest Go modules")
    target = cached_path(TOOLS[name], sources).parent / into
    wanted = [target / file for file in files]
    if all(path.exists() for path in wanted):
        return wanted
    source = module_source(name) / folder
    target.mkdir(parents=True, exist_ok=True)
    for path in wanted:
        # Whole or absent: the background build (prebuild.py) and a test may copy at once.
        partial = path.with_name(f".{path.name}.{os.getpid()}")
        shutil.copyfile(source / path.name, partial)
        partial.replace(path)
    return wanted


def print_or_skip(label: str, tests: str, resolve: Callable[[], Any]) -> None:
    """The ``python -m`` entry of an optional tool (``make flux``, ``make argocd``): what
    ``resolve`` found, field by field, or why it cannot be had here, and then the tests that
    need it skip; exits 0 either way, as ``make node`` does where no node can run."""
    try:
        found = resolve()
    except BinaryUnavailable as error:
        print(f"{label}: {error}; {tests} skip", file=sys.stderr)
        return
    for item in dataclasses.fields(found):
        value = getattr(found, item.name)
        for path in value if isinstance(value, tuple) else (value,):
            print(f"{item.name}: {path}")


def _report_progress(name: str, log: Path, done: threading.Event, out) -> None:
    """Go prints one line per compiled package with -v; turn that into a heartbeat."""
    started = time.monotonic()
    while not done.wait(15):
        try:
            packages = sum(1 for _ in log.open())
        except OSError:
            packages = 0
        elapsed = int(time.monotonic() - started)
        print(
            f"  ... {name}: {packages} packages compiled, {elapsed // 60}m{elapsed % 60:02d}s",
            file=out, flush=True,
        )


@contextlib.contextmanager
def _build_lock(target: Path, out) -> Iterator[None]:
    """One build of a binary at a time: a test that needs what the background build
    (prebuild.py) is making waits for it rather than compiling it a second time."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / f".{target.name}.lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for the build of {target.name} under way elsewhere",
                  file=out, flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def build(tool: GoTool, sources: Path, out=sys.stderr) -> Path:
    """Build one binary into the cache, atomically; returns its path."""
    target = cached_path(tool, sources)
    if target.exists():
        return target
    with _build_lock(target, out):
        if target.exists():  # built while this one waited
            return target
        return _compile(tool, sources, target, out)


def _compile(tool: GoTool, sources: Path, target: Path, out) -> Path:
    go = shutil.which("go")
    if go is None:
        raise BinaryUnavailable(
            f"{tool.name} is not in {target.parent} and Go is not installed to build it; "
            "install Go or set KUBEBUILDER_ASSETS to a folder holding "
            + ", ".join(BINARY_NAMES)
        )
    print(
        f"building {tool.name} {pinned_version(tool, sources)} from its Go module "
        f"(first time only; several minutes on 2 cores) -> {target}",
        file=out, flush=True,
    )
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        log = Path(scratch) / "build.log"
        partial = Path(scratch) / tool.name
        done = threading.Event()
        reporter = threading.Thread(
            target=_report_progress, args=(tool.name, log, done, out), daemon=True
        )
        reporter.start()
        with log.open("w") as log_file:
            result = subprocess.run(
                [go, "build", "-v", f"-ldflags={tool.ldflags(pinned_version(tool, sources))}",
                 f"-gcflags={tool.gcflags()}", "-o", str(partial), tool.package],
                cwd=sources / tool.module_dir,
                env=tool.build_env(),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                check=False,
            )
        done.set()
        reporter.join()
        if result.returncode != 0:
            tail = "".join(log.read_text().splitlines(keepends=True)[-30:])
            raise BinaryUnavailable(f"go build {tool.package} failed:\n{tail}")
        partial.replace(target)
    print(f"built {tool.name} in {time.monotonic() - started:.0f}s", file=out, flush=True)
    return target


def resolve(name: str, *, build_missing: bool = True, out=sys.stderr) -> Path:
    """Path of one control-plane binary, building it if needed and allowed."""
    if name not in TOOLS:
        raise KeyError(name)
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets:
        path = Path(assets) / name
        if not path.exists():
            raise BinaryUnavailable(f"KUBEBUILDER_ASSETS={assets} has no {name}")
        return path
    sources = envtest_sources()
    if sources is None:
        raise BinaryUnavailable(
            f"{name}: no KUBEBUILDER_ASSETS and no devkit/envtest Go modules to build from"
        )
    tool = TOOLS[name]
    target = cached_path(tool, sources)
    if target.exists():
        return target
    if not build_missing:
        raise BinaryUnavailable(f"{name} is not built yet ({target})")
    return build(tool, sources, out=out)


def resolve_all(out=sys.stderr) -> dict[str, Path]:
    """The required binaries, plus kube-controller-manager unless an asset folder
    without it was given."""
    found = {name: resolve(name, out=out) for name in BINARY_NAMES}
    try:
        found[CONTROLLER_MANAGER] = resolve(CONTROLLER_MANAGER, out=out)
    except BinaryUnavailable:
        if not os.environ.get("KUBEBUILDER_ASSETS"):
            raise
    return found


def resolve_node(out=sys.stderr) -> dict[str, Path]:
    """The node's binaries, each built once: kubelet, kube-proxy and kube-scheduler
    from the same pinned k8s.io/kubernetes module as kube-apiserver, and CoreDNS (for
    its image, controlplane/dns.py) from devkit/envtest/coredns."""
    return {name: resolve(name, out=out) for name in (*NODE_BINARY_NAMES, COREDNS)}
