"""Images without a registry: the pause image, a Debian base image and the project's own
image from its Dockerfile, each cached outside the clone and keyed by what goes into it.

- pause: a tiny static Go program (built with the Go toolchain that builds the other
  binaries), wrapped into an OCI archive by ``oci.py``.
- base: ``mmdebstrap`` makes a minimal bookworm root filesystem with python3 and
  python3-venv from Debian's packages; passed to the Dockerfile as ``PYTHON_IMAGE``.
- project: ``buildah bud`` of the repository's Dockerfile; the host's CA bundle reaches
  pip only as a build secret, never as a layer.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from inference_devkit.checkout import checkout_path
from inference_devkit.controlplane import binaries, oci

PAUSE_REF = "localhost/inference-operator/pause:3.10"
PROJECT_REF = "localhost/inference-operator/inference-operator:dev"
BASE_SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv")
# The Dockerfile's secret id; its RUN step points pip at /run/secrets/<id> when present.
CA_SECRET_ID = "pip-ca"

# A pause container only holds the pod's namespaces: sleep until told to stop, reap
# zombies (it is PID 1 when the pod shares its PID namespace).
PAUSE_SOURCE = """package main

import (
\t"os"
\t"os/signal"
\t"syscall"
)

func main() {
\tstop := make(chan os.Signal, 1)
\tsignal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
\tchild := make(chan os.Signal, 16)
\tsignal.Notify(child, syscall.SIGCHLD)
\tfor {
\t\tselect {
\t\tcase <-stop:
\t\t\tos.Exit(0)
\t\tcase <-child:
\t\t\tfor {
\t\t\t\tvar status syscall.WaitStatus
\t\t\t\tpid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
\t\t\t\tif pid <= 0 || err != nil {
\t\t\t\t\tbreak
\t\t\t\t}
\t\t\t}
\t\t}
\t}
}
"""


class ImageError(RuntimeError):
    pass


def cache_dir() -> Path:
    return binaries.cache_root().parent / "images"


def _key(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]


@contextmanager
def step(name: str, out: IO[str]) -> Iterator[None]:
    """Print a line when a long step starts and its time when it ends."""
    print(f"==> {name}", file=out, flush=True)
    started = time.monotonic()
    yield
    print(f"<== {name}: {time.monotonic() - started:.1f}s", file=out, flush=True)


def _run(argv: list[str], out: IO[str], **kwargs) -> None:
    """Run with the output streamed to ``out`` (progress on long steps)."""
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, text=True, **kwargs)
    assert process.stdout is not None
    last: list[str] = []
    for line in process.stdout:
        print(f"    {line.rstrip()}", file=out, flush=True)
        last = [*last, line][-30:]
    if process.wait() != 0:
        raise ImageError(f"{argv[0]} failed ({process.returncode}):\n{''.join(last)}")


def pause_archive(out: IO[str] = sys.stderr) -> Path:
    go = shutil.which("go")
    version = subprocess.run([go, "version"], capture_output=True, text=True).stdout if go else ""
    target = cache_dir() / f"pause-{_key(PAUSE_SOURCE, version)}.tar"
    if target.exists():
        return target
    if go is None:
        raise ImageError("the pause image is built with Go, which is not installed")
    with step("pause image (static Go binary)", out), \
            tempfile.TemporaryDirectory() as scratch:
        source = Path(scratch) / "pause.go"
        source.write_text(PAUSE_SOURCE)
        binary = Path(scratch) / "pause"
        env = {**os.environ, "CGO_ENABLED": "0", "GOTOOLCHAIN": "local", "GO111MODULE": "off"}
        _run([go, "build", "-ldflags=-s -w", "-o", str(binary), str(source)], out,
             cwd=scratch, env=env)
        layer = oci.single_file_layer(binary, "pause", Path(scratch) / "layer.tar")
        oci.write_oci_archive(layer, target, PAUSE_REF, {"Entrypoint": ["/pause"]})
    return target


def coredns_ref() -> str:
    """Tagged with the CoreDNS pin (devkit/envtest/coredns/go.mod)."""
    sources = binaries.envtest_sources()
    tool = binaries.TOOLS[binaries.COREDNS]
    version = binaries.pinned_version(tool, sources) if sources else "local"
    return f"localhost/inference-operator/coredns:{version}"


def coredns_archive(out: IO[str] = sys.stderr) -> Path:
    """The cluster DNS image (controlplane/dns.py): one layer holding the static coredns
    binary (built with CGO off, binaries.py) at /coredns. Keyed by the binary's digest
    and the ref, so a new pin or build recipe makes a new image and nothing else does."""
    binary = binaries.resolve(binaries.COREDNS, out=out)
    sha = hashlib.sha256()
    with binary.open("rb") as source:
        for block in iter(lambda: source.read(1 << 20), b""):
            sha.update(block)
    ref = coredns_ref()
    target = cache_dir() / f"coredns-{_key(sha.hexdigest(), ref)}.tar"
    if target.exists():
        return target
    with step(f"coredns image {ref}", out), tempfile.TemporaryDirectory() as scratch:
        layer = oci.single_file_layer(binary, "coredns", Path(scratch) / "layer.tar")
        oci.write_oci_archive(layer, target, ref, {"Entrypoint": ["/coredns"]})
    return target


def _apt_sources() -> list[str]:
    """The host's own Debian sources, so mmdebstrap fetches from where apt does."""
    deb822 = Path("/etc/apt/sources.list.d/debian.sources")
    return [str(deb822)] if deb822.exists() else []


def base_ref() -> str:
    return f"localhost/inference-operator/python-base:{BASE_SUITE}-{_key(*BASE_PACKAGES)}"


def base_archive(out: IO[str] = sys.stderr) -> Path:
    """A minimal bookworm with python3 + venv, as an OCI archive; keyed by suite and
    packages (rebuild by deleting the cached file to pick up Debian updates)."""
    target = cache_dir() / f"python-base-{BASE_SUITE}-{_key(BASE_SUITE, *BASE_PACKAGES)}.tar"
    if target.exists():
        return target
    mmdebstrap = shutil.which("mmdebstrap")
    if mmdebstrap is None:
        raise ImageError("mmdebstrap is needed for the base image: apt-get install mmdebstrap")
    cache_dir().mkdir(parents=True, exist_ok=True)
    with step(f"base image: mmdebstrap {BASE_SUITE} + {' '.join(BASE_PACKAGES)}", out), \
            tempfile.TemporaryDirectory(dir=cache_dir()) as scratch:
        rootfs = Path(scratch) / "rootfs.tar"
        _run([
            mmdebstrap, "--variant=minbase", "--mode=root", "--format=tar",
            f"--include={','.join(BASE_PACKAGES)}",
            # Docs and locales are dead weight in an image.
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
            "--customize-hook=rm -rf \"$1\"/var/lib/apt/lists/* \"$1\"/var/cache/apt/*",
            BASE_SUITE, str(rootfs), *_apt_sources(),
        ], out)
        oci.write_oci_archive(rootfs, target, base_ref(), {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["python3"],
        })
    return target


def host_ca_bundle() -> Path | None:
    """The CA bundle pip should trust: the one the user's environment names, else the
    system bundle (a TLS-intercepting proxy's CA lives in one of these)."""
    for candidate in (os.environ.get("PIP_CERT"), os.environ.get("SSL_CERT_FILE"),
                      "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def buildah_storage() -> list[str]:
    """buildah's own storage under the cache, so layers are reused across runs and the
    host's /var/lib/containers is left alone."""
    root = cache_dir() / "buildah"
    return ["--root", str(root / "storage"), "--runroot", str(root / "run")]


def build_project_image(out: IO[str] = sys.stderr, *, base: str | None = None,
                        ref: str = PROJECT_REF, reuse_layers: bool = True) -> Path:
    """``buildah bud`` of the checkout's Dockerfile; returns an OCI archive of the result
    (under the cache, one per ``ref``, replaced on every build). ``reuse_layers=False``
    runs every step again (a cached pip layer would not use the CA bundle given now)."""
    buildah = shutil.which("buildah")
    if buildah is None:
        raise ImageError("buildah is needed to build the image: apt-get install buildah")
    context = checkout_path()
    if context is None:
        raise ImageError("the image is built from a checkout of the repository")
    base = base or f"oci-archive:{base_archive(out)}"
    # --network=host: a RUN step (pip) then needs no bridge, iptables rules or
    # ip_forward of buildah's own (netavark would add them, host-wide).
    argv = [buildah, *buildah_storage(), "bud", f"--layers={str(reuse_layers).lower()}",
            "--pull=never", "--network=host",
            "--build-arg", f"PYTHON_IMAGE={base}", "-f", str(context / "Dockerfile"),
            "-t", ref]
    ca = host_ca_bundle()
    if ca is not None:
        argv += ["--secret", f"id={CA_SECRET_ID},src={ca}"]
    argv.append(str(context))
    try:
        with step(f"image {ref}: buildah bud (base {base})", out):
            _run(argv, out)
    finally:
        # An interrupted build leaves its working container, and with it an overlay
        # mount on the host; none may outlive the build.
        subprocess.run([buildah, *buildah_storage(), "rm", "--all"], capture_output=True,
                       check=False, timeout=120)
    archive = cache_dir() / (ref.rsplit("/", 1)[-1].replace(":", "-") + ".tar")
    with step(f"export {ref} as an OCI archive", out):
        archive.unlink(missing_ok=True)
        _run([buildah, *buildah_storage(), "push", ref, f"oci-archive:{archive}:{ref}"], out)
    return archive
