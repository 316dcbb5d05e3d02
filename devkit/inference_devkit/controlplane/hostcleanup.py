"""What a node leaves on the host if its processes do not clean up after themselves:
mounts under its work dir (overlay rootfs, shm, projected volumes, network namespaces),
the cgroups kubelet made and the processes in them, containerd shims (they daemonize, so
no process group holds them) and kubelet's log links. Used after the processes have
stopped, as a last resort, after a harness that died (harnessstate.py), and by the check
that nothing is left."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _unescape(field: str) -> str:
    # /proc/self/mountinfo escapes space, tab, newline and backslash as octal.
    return field.encode().decode("unicode_escape")


def mounts_under(directory: Path) -> list[str]:
    prefix = str(directory.resolve())
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = _unescape(line.split()[4])
        if point == prefix or point.startswith(prefix + "/"):
            found.append(point)
    return found


def unmount_all_under(directory: Path) -> list[str]:
    """Unmount deepest first (lazily if busy); returns what is still mounted."""
    for _ in range(3):
        points = mounts_under(directory)
        if not points:
            break
        for point in sorted(points, key=len, reverse=True):
            if subprocess.run(["umount", point], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", point], capture_output=True)
    return mounts_under(directory)


def cgroup_dirs(name: str) -> list[Path]:
    """The ``name`` cgroup in every v1 hierarchy (or the v2 one)."""
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        candidates = [CGROUP_ROOT / name]
    else:
        candidates = [h / name for h in CGROUP_ROOT.iterdir() if h.is_dir()]
    return [c for c in candidates if c.is_dir()]


def remove_cgroup_tree(top: Path, wait: float = 0.0) -> bool:
    """rmdir a cgroup tree, deepest first; True when it is gone. A cgroup whose processes
    were just killed stays busy for a moment after they are gone: ``wait`` seconds of
    retries cover that."""
    deadline = time.monotonic() + wait
    while top.is_dir():
        for directory in sorted((p for p in top.rglob("*") if p.is_dir()),
                                key=lambda p: len(p.parts), reverse=True):
            try:
                directory.rmdir()
            except OSError:
                pass
        try:
            top.rmdir()
        except OSError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
    return True


def remove_cgroups(name: str) -> list[Path]:
    """rmdir the cgroup trees kubelet made (empty once their processes are gone); returns
    what could not be removed."""
    return [top for top in cgroup_dirs(name) if not remove_cgroup_tree(top)]


def cgroup_pids(top: Path) -> set[int]:
    """Every process in a cgroup tree (any hierarchy)."""
    pids: set[int] = set()
    for directory in [top, *(p for p in top.rglob("*") if p.is_dir())]:
        try:
            pids.update(int(line) for line in (directory / "cgroup.procs").read_text().split())
        except (OSError, ValueError):
            pass
    return pids


def pids_with_argv(marker: str, program: bytes = b"") -> list[int]:
    """Processes whose argv holds ``marker`` (and ``program``): how a containerd shim is
    found, as it names its containerd's socket."""
    wanted = marker.encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if wanted in argv and program in argv:
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """Running (a zombie, which only waits for its parent to reap it, is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def kill(pids: Iterable[int], wait: float = 10.0) -> list[int]:
    """SIGKILL each and wait until they are gone; returns those still alive."""
    pids = set(pids)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + wait
    while (left := [pid for pid in pids if alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def remove_container_log_links(work_dir: Path) -> int:
    """kubelet links each container's log into /var/log/containers (a fixed path);
    returns how many links went."""
    links = Path("/var/log/containers")
    if not links.is_dir():
        return 0
    removed = 0
    for link in links.iterdir():
        if link.is_symlink() and str(work_dir) in os.readlink(link):
            link.unlink(missing_ok=True)
            removed += 1
    return removed
