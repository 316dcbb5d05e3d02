"""A process's memory and CPU time, read from /proc (Linux). The standard library only
and nothing heavy, so a child can use it while measuring what its own imports cost."""

from __future__ import annotations

import os


def rss_mib(pid: int, *, field: str = "VmRSS", session: bool = False) -> float:
    """Resident memory of a process in MiB (``field="VmHWM"``: its peak); with
    ``session``, summed over every process of the session it leads (its forks)."""
    pids = [pid]
    if session:
        pids = [int(name) for name in os.listdir("/proc")
                if name.isdigit() and _session_of(int(name)) == pid]
    kib = 0
    for each in pids:
        try:
            with open(f"/proc/{each}/status") as status:
                kib += sum(int(line.split()[1]) for line in status
                           if line.startswith(f"{field}:"))
        except OSError:
            if not session:
                raise
            # a fork gone meanwhile
    return kib / 1024


def _session_of(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far."""
    return times(pid)[1]


def times(pid: int) -> tuple[int, float]:
    """(its start, in clock ticks since boot: with the pid, what tells a process from a
    later one that got the same pid; its user plus system CPU seconds so far)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return int(fields[19]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
