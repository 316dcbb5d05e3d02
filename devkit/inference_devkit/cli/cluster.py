"""``inference-operator cluster``: a control plane plus one real node (kubelet, kube-proxy,
kube-scheduler, the harness's own containerd), with the project's image built from the
Dockerfile and loaded, until Ctrl-C; then nothing of it is left on the host.

``--image-only`` builds the image (no node) and prints where its archive is.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

from inference_devkit.controlplane import binaries, images, node
from inference_operator.cli.options import add_log_level


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kubeconfig", default=".cache/cluster/kubeconfig",
                        help="where to write the admin kubeconfig")
    parser.add_argument("--no-image", action="store_true",
                        help="start the node without building and loading the project's image")
    parser.add_argument("--image-only", action="store_true",
                        help="only build the project's image (buildah), print it, and exit")
    parser.add_argument("--build-only", action="store_true",
                        help="only build (or find cached) what a node needs (binaries, the pause, "
                             "CoreDNS and base images), then exit; where no node can run here, "
                             "say why and exit 0")
    parser.add_argument("--base-image", default=None,
                        help="the Dockerfile's PYTHON_IMAGE (default: a Debian base made "
                             "locally with mmdebstrap, since no registry is reachable)")
    add_log_level(parser)


def _build_image(args: argparse.Namespace) -> tuple[str, Path]:
    started = time.monotonic()
    archive = images.build_project_image(sys.stderr, base=args.base_image)
    print(f"image built in {time.monotonic() - started:.1f}s", file=sys.stderr, flush=True)
    return images.PROJECT_REF, archive


def run(args: argparse.Namespace) -> int:
    if args.image_only:
        try:
            ref, archive = _build_image(args)
        except images.ImageError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        print(f"image: {ref}")
        print(f"archive: {archive}", flush=True)
        return 0
    try:
        node.check_supported()
    except node.NodeUnavailable as error:
        if args.build_only:  # make test: its e2e tests skip with the same reason
            print(f"no local node: {error}", file=sys.stderr)
            return 0
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.build_only:
        try:
            node.prepare(sys.stderr)
            if args.base_image is None:
                images.base_archive(sys.stderr)
        except (images.ImageError, binaries.BinaryUnavailable) as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        # The project's image is not built here: whoever starts a node builds it from
        # the working tree as it is then (on these cached layers and base).
        print("node prerequisites ready", flush=True)
        return 0

    stop = threading.Event()
    up = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        # While starting, stop at once (node.start stops what it has started); once up,
        # the loop below tears down; a second signal then changes nothing.
        if not up.is_set():
            raise KeyboardInterrupt
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    cluster: node.Node | None = None
    try:
        # Built before the node starts, so a failed build leaves nothing to clean up.
        built = None if args.no_image else _build_image(args)
        cluster = node.start(out=sys.stderr)
        up.set()
    except (node.NodeError, images.ImageError, binaries.BinaryUnavailable) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        up.set()
        if cluster is not None:  # the signal came just after the start
            cluster.stop()
        print("interrupted while starting; stopped", file=sys.stderr)
        return 130
    assert cluster is not None
    kubeconfig = Path(args.kubeconfig).resolve()
    try:
        if built is not None:
            ref, archive = built
            started = time.monotonic()
            cluster.load_image(archive)
            print(f"image {ref} loaded into the node in {time.monotonic() - started:.1f}s",
                  file=sys.stderr, flush=True)
        kubeconfig.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(cluster.plane.kubeconfig, kubeconfig)
        kubeconfig.chmod(0o600)
        print(f"node {node.NODE_NAME} Ready in {cluster.ready_seconds:.1f}s; "
              f"API server {cluster.plane.server}")
        print(f"kubeconfig: {kubeconfig}")
        if built is not None:
            print(f"image: {built[0]}")
        print("Ctrl-C stops it and removes everything it made.", flush=True)
        while not stop.wait(1):
            dead = [p.name for p in [*cluster.processes, *cluster.plane.processes]
                    if not p.running()]
            if dead:
                print(f"error: {', '.join(dead)} exited\n{cluster.log_tails()}",
                      file=sys.stderr)
                return 1
    finally:
        print("stopping the node ...", file=sys.stderr, flush=True)
        cluster.stop()
        kubeconfig.unlink(missing_ok=True)
        left = cluster.leftovers()
        if left:
            print("error: left behind: " + "; ".join(left), file=sys.stderr)
    print("cluster stopped, nothing left behind" if not left else "cluster stopped",
          flush=True)
    return 0 if not left else 1
