"""What a node leaves on the host if its processes do not clean up after themselves:
mounts under its work dir (overlay rootfs, shm, projected volumes, network namespaces)
and the cgroups kubelet made. Used after the processes have stopped, as a last resort,
and by the check that nothing is left."""

from __future__ import annotations

import subprocess
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


def remove_cgroups(name: str) -> list[Path]:
    """rmdir the cgroup trees kubelet made (empty once their processes are gone),
    deepest first; returns what could not be removed."""
    left = []
    for top in cgroup_dirs(name):
        for directory in sorted((p for p in top.rglob("*") if p.is_dir()),
                                key=lambda p: len(p.parts), reverse=True):
            try:
                directory.rmdir()
            except OSError:
                pass
        try:
            top.rmdir()
        except OSError:
            left.append(top)
    return left
