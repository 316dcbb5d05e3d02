"""Builds the tools only some tests need (Flux, Argo CD, Jaeger) in the background, at idle
CPU priority, while the tests that need none of them run: the test session starts it for
what its tests need and is not built yet (tests/conftest.py), so a fresh machine does not
wait for those builds before its first test. A test that needs a tool still being built
waits for that build (binaries.build holds a lock per binary) instead of compiling it
again.

``python -m inference_devkit.controlplane.prebuild flux argocd`` is that background
process: each tool in turn, as ``make flux`` and ``make argocd`` would build it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from inference_devkit.controlplane import argocd, binaries, flux, jaeger

# Each tool's module: its BINARIES, NEEDED_BY and resolve().
TOOLS = {"flux": flux, "argocd": argocd, "jaeger": jaeger}


def unbuilt(names: Sequence[str]) -> list[str]:
    """Those of ``names`` whose binaries are not in the cache (or not buildable at all:
    the background build then says why in its log, and their tests skip saying it too)."""
    missing = []
    for name in names:
        try:
            for binary in TOOLS[name].BINARIES:
                binaries.resolve(binary, build_missing=False)
        except binaries.BinaryUnavailable:
            missing.append(name)
    return missing


def _idle_priority() -> None:
    """In the child before exec: only the CPU the tests leave unused (inherited by go and
    its compilers)."""
    os.nice(19)
    if hasattr(os, "SCHED_IDLE"):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


def start(names: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
    """The background build of ``names``, its output in ``log``; a process group of its
    own, so ``stop`` ends go's compilers with it."""
    with log.open("wb") as output:
        return subprocess.Popen(
            [sys.executable, "-m", __name__, *names], stdout=output, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, preexec_fn=_idle_priority, start_new_session=True)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Ends a build the session no longer needs (the tests that needed it were
    deselected or have run); a finished one is left as it is."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def main(names: Sequence[str]) -> None:
    # SIGTERM unwinds like Ctrl-C: the half-built binary's scratch folder is removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    for name in names:
        started = time.monotonic()
        binaries.print_or_skip(name, TOOLS[name].NEEDED_BY, TOOLS[name].resolve)
        print(f"{name}: done in {time.monotonic() - started:.0f}s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
