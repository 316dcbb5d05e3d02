"""``inference-operator controlplane``: a local API server until Ctrl-C."""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import threading
from pathlib import Path

from inference_devkit.controlplane import binaries, launcher
from inference_operator.cli.options import add_log_level


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kubeconfig", default=".cache/controlplane/kubeconfig",
                        help="where to write the admin kubeconfig")
    parser.add_argument("--build-only", action="store_true",
                        help="only make sure the binaries are built (or found), then exit")
    add_log_level(parser)


def run(args: argparse.Namespace) -> int:
    from inference_operator.cli.serving import setup_logging

    setup_logging(args.log_level)
    try:
        paths = binaries.resolve_all()
    except binaries.BinaryUnavailable as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.build_only:
        for name, path in paths.items():
            print(f"{name}: {path}")
        return 0

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        plane = launcher.start()
    except launcher.ControlPlaneError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    with plane:
        kubeconfig = Path(args.kubeconfig).resolve()
        if plane.is_local:
            kubeconfig.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(plane.kubeconfig, kubeconfig)
            kubeconfig.chmod(0o600)
        else:
            kubeconfig = plane.kubeconfig
        print(f"control plane ready in {plane.startup_seconds:.1f}s at {plane.server}")
        print(f"kubeconfig: {kubeconfig}")
        if plane.work_dir is not None:
            print(f"data:       {plane.work_dir}")
        print(f"try:        {paths['kubectl']} --kubeconfig {kubeconfig} get ns")
        print("Ctrl-C stops it and removes its data.", flush=True)
        while not stop.wait(1):
            dead = [p.name for p in plane.processes if not p.running()]
            if dead:
                print(f"error: {', '.join(dead)} exited\n{plane.log_tails()}", file=sys.stderr)
                return 1
    if plane.is_local:
        kubeconfig.unlink(missing_ok=True)
    print("control plane stopped", flush=True)
    return 0
