"""What a running harness has put on this machine, written down as it happens, so the next
harness can clean up after one that died (SIGKILL, the OOM killer, a CI time-out).

One state file per running harness (a local control plane, or a node with its control
plane), JSON, in one directory every harness on this machine reads: the bridge, the
iptables chains and the cgroups belong to the machine, not to a checkout or a work dir.
It records the owner (pid, start time from /proc, boot id: a reused pid is no owner), the
work dir (mounts, network namespaces and shim bundles all live under it), every child
(name, pid, start time, process group), the harness's cgroup and, for a node, the bridge,
the iptables chains that were there before it started and containerd's socket (shims
name it). A clean stop removes the file.

Every child runs in a cgroup v2 of its own harness when the machine has a writable
cgroup2 hierarchy (pure v2 or the hybrid ``unified`` mount): ``cgroup.kill`` then stops
it as a whole, forks and containerd shims included. Without one, each child still leads
a process group of its own, which is killed as a group.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from inference_devkit.controlplane import hostcleanup, network

STATE_DIR_ENV = "INFERENCE_OPERATOR_STATE_DIR"
SUFFIX = ".json"
CLAIMED = ".cleaning-"
CGROUP_PARENT = "inference-operator"
POD_CGROUP = "kubepods"
# Chains a node's kubelet, kube-proxy and CNI make; after a dead harness only these are
# removed, as other software may have made chains since it started.
NODE_CHAIN_PREFIXES = ("KUBE-", "CNI-")


def state_dir() -> Path:
    override = os.environ.get(STATE_DIR_ENV)
    if override:
        return Path(override)
    if os.geteuid() == 0 and Path("/run").is_dir():
        return Path("/run/inference-operator")
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "inference-operator" / "run"


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def start_ticks(pid: int) -> int | None:
    """When the process started (clock ticks since boot); None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else int(fields[19])


def same_process(pid: int, ticks: int | None) -> bool:
    return ticks is not None and start_ticks(pid) == ticks


def cgroup2_root() -> Path | None:
    """The cgroup v2 hierarchy: /sys/fs/cgroup (pure v2) or its hybrid ``unified``."""
    for candidate in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
        if (candidate / "cgroup.controllers").exists():
            return candidate
    return None


def _make_cgroup(name: str) -> Path | None:
    root = cgroup2_root()
    if root is None:
        return None
    path = root / CGROUP_PARENT / name
    try:
        path.mkdir(parents=True)
    except OSError:
        return None  # read-only or not ours to write: process groups only
    return path


def kill_cgroup(path: Path) -> set[int]:
    """Kill every process in a cgroup v2 tree; returns the pids that were in it."""
    pids = hostcleanup.cgroup_pids(path)
    if pids:
        try:
            (path / "cgroup.kill").write_text("1")
        except OSError:
            pass  # a kernel before 5.14: signal each below
        hostcleanup.kill(pids)
    return pids


def remove_cgroup(path: Path, wait: float = 5.0) -> bool:
    """The harness's cgroup tree, then the shared parent once no harness uses it; True
    when the tree is gone."""
    gone = hostcleanup.remove_cgroup_tree(path, wait)
    try:
        path.parent.rmdir()
    except OSError:
        pass
    return gone


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "es" if noun.endswith("s") else "s")


@dataclass
class Child:
    name: str
    pid: int
    start: int | None
    pgid: int


@dataclass
class Harness:
    """One running harness and what it has made; every change is saved at once."""

    kind: str  # "controlplane" or "node"
    work_dir: str
    remove_work_dir: bool
    path: str
    owner_pid: int
    owner_start: int | None
    boot: str
    cgroup: str | None = None
    children: list[Child] = field(default_factory=list)
    # A node's only:
    bridge: str | None = None
    chains_before: list[tuple[str, str]] | None = None
    containerd_socket: str | None = None
    pod_cgroup: str | None = None

    @classmethod
    def open(cls, kind: str, work_dir: Path, *, remove_work_dir: bool) -> Harness:
        directory = state_dir()
        directory.mkdir(parents=True, exist_ok=True)
        name = f"{kind}-{os.getpid()}-{secrets.token_hex(3)}"
        cgroup = _make_cgroup(name)
        harness = cls(kind=kind, work_dir=str(work_dir.resolve()),
                      remove_work_dir=remove_work_dir, path=str(directory / (name + SUFFIX)),
                      owner_pid=os.getpid(), owner_start=start_ticks(os.getpid()),
                      boot=boot_id(), cgroup=None if cgroup is None else str(cgroup))
        harness.save()
        return harness

    @classmethod
    def load(cls, path: Path) -> Harness:
        data = json.loads(path.read_text())
        data["children"] = [Child(**c) for c in data.get("children", [])]
        if data.get("chains_before") is not None:
            data["chains_before"] = [tuple(c) for c in data["chains_before"]]
        return cls(**data)

    def save(self) -> None:
        path = Path(self.path)
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(json.dumps(asdict(self), indent=1))
        os.replace(temporary, path)  # a reader never sees half a file

    def record(self, **changes: Any) -> None:
        for key, value in changes.items():
            setattr(self, key, value)
        self.save()

    def adopt(self, name: str, pid: int) -> None:
        """A child just started: into the harness's cgroup, and into the record (in place
        of an earlier child of that name, when restarted)."""
        if self.cgroup is not None:
            try:
                (Path(self.cgroup) / "cgroup.procs").write_text(str(pid))
            except OSError:
                pass  # gone already, or not movable: its process group still holds it
        try:
            pgid = os.getpgid(pid)
        except ProcessLookupError:
            pgid = pid
        self.children = [c for c in self.children if c.name != name]
        self.children.append(Child(name, pid, start_ticks(pid), pgid))
        self.save()

    def _pods_are_ours(self) -> bool:
        """kubelet's pod cgroups have a fixed name: they are this harness's unless another
        node runs now (one at a time, but a harness that keeps no record may)."""
        if not self.pod_cgroup:
            return False
        return not any(h.kind == "node" and h.path != self.path and h.owner_alive()
                       for h in running())

    def owner_alive(self) -> bool:
        return self.boot == boot_id() and same_process(self.owner_pid, self.owner_start)

    def kill_all(self) -> tuple[list[str], int, int]:
        """SIGKILL everything of this harness still running: (names of the recorded
        children that were, containerd shims, other processes: forks, containers)."""
        names = [c.name for c in self.children if same_process(c.pid, c.start)]
        pids = {c.pid for c in self.children if same_process(c.pid, c.start)}
        # The forks of a live child share its process group (each child leads one).
        groups = {c.pgid for c in self.children if same_process(c.pid, c.start)}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if os.getpgid(int(entry.name)) in groups:
                        pids.add(int(entry.name))
                except ProcessLookupError:
                    pass
        shims: set[int] = set()
        if self.containerd_socket:
            shims = set(hostcleanup.pids_with_argv(self.containerd_socket, b"containerd-shim"))
        in_cgroups: set[int] = set()
        if self.cgroup is not None:
            in_cgroups |= hostcleanup.cgroup_pids(Path(self.cgroup))
        if self._pods_are_ours():
            for top in hostcleanup.cgroup_dirs(self.pod_cgroup):
                in_cgroups |= hostcleanup.cgroup_pids(top)
        if self.cgroup is not None:
            kill_cgroup(Path(self.cgroup))
        everything = pids | shims | in_cgroups
        hostcleanup.kill(everything)
        # Pods' processes run in kubelet's cgroups, which it makes again under a new node.
        return names, len(shims), len(everything - pids - shims)

    def clean_up(self) -> str:
        """Remove everything this (dead) harness made; what went, for one line."""
        names, shims, others = self.kill_all()
        parts = []
        if names:
            parts.append(f"{_count(len(names), 'process')} ({', '.join(names)})")
        if shims:
            parts.append(_count(shims, "containerd shim"))
        if others:
            parts.append(f"{_count(others, 'other process')} (forks, containers)")
        work_dir = Path(self.work_dir)
        mounts = hostcleanup.mounts_under(work_dir)
        hostcleanup.unmount_all_under(work_dir)
        if mounts:
            netns = sum("netns" in m for m in mounts)
            parts.append(_count(len(mounts), "mount") + (f" ({netns} netns)" if netns else ""))
        links = hostcleanup.remove_container_log_links(work_dir)
        if links:
            parts.append(_count(links, "container log link"))
        cgroups = 0
        if self._pods_are_ours():
            cgroups += len(hostcleanup.cgroup_dirs(self.pod_cgroup))
            hostcleanup.remove_cgroups(self.pod_cgroup)
        if self.cgroup is not None and Path(self.cgroup).is_dir():
            cgroups += 1
            remove_cgroup(Path(self.cgroup))
        if cgroups:
            parts.append(_count(cgroups, "cgroup"))
        if (self.bridge and network.bridge_exists(self.bridge)
                and live_owner_of_bridge(self.bridge) is None):
            network.delete_bridge(network.NodeNetwork(bridge=self.bridge))
            parts.append(f"bridge {self.bridge}")
        if self.chains_before is not None:
            before = set(self.chains_before)
            new = [c for c in network.iptables_chains() - before
                   if c[1].startswith(NODE_CHAIN_PREFIXES)]
            if new:
                network.remove_new_chains(before, only=NODE_CHAIN_PREFIXES)
                parts.append(_count(len(new), "iptables chain"))
        if self.remove_work_dir and work_dir.exists():
            shutil.rmtree(work_dir, ignore_errors=True)
            parts.append(f"work dir {work_dir}")
        what = "a node" if self.kind == "node" else "a control plane"
        return (f"cleaned up after {what} whose harness died (pid {self.owner_pid}): "
                + (", ".join(parts) or "nothing was left"))

    def close(self) -> None:
        """A clean stop: anything still in the cgroup is killed, and the record goes."""
        if self.cgroup is not None:
            kill_cgroup(Path(self.cgroup))
            remove_cgroup(Path(self.cgroup))
        Path(self.path).unlink(missing_ok=True)


def _claim(path: Path) -> Path | None:
    """Rename a dead harness's file to ours, so two harnesses starting at once do not
    both clean after it; None when another got it first."""
    claimed = path.with_name(f"{path.name.split(CLAIMED)[0]}{CLAIMED}{os.getpid()}")
    try:
        os.rename(path, claimed)
    except FileNotFoundError:
        return None
    return claimed


def clean_up_dead(out: IO[str] = sys.stderr) -> list[str]:
    """Before anything starts: clean after every harness whose owner is gone, one line
    each on ``out``; returns the lines."""
    directory = state_dir()
    if not directory.is_dir():
        return []
    lines = []
    for path in sorted(directory.iterdir()):
        if path.name.endswith(SUFFIX):
            try:
                harness = Harness.load(path)
            except (OSError, ValueError, TypeError):
                continue  # not ours to judge
            if harness.owner_alive():
                continue
        elif CLAIMED in path.name:
            cleaner = int(path.name.rsplit(CLAIMED, 1)[1] or 0)
            if cleaner == os.getpid() or hostcleanup.alive(cleaner):
                continue  # being cleaned now
            try:
                harness = Harness.load(path)
            except (OSError, ValueError, TypeError):
                continue
        else:
            continue
        claimed = _claim(path)
        if claimed is None:
            continue
        line = harness.clean_up()
        claimed.unlink(missing_ok=True)
        print(line, file=out, flush=True)
        lines.append(line)
    return lines


def running() -> list[Harness]:
    """The harnesses whose owners run now."""
    directory = state_dir()
    found = []
    for path in sorted(directory.glob(f"*{SUFFIX}")) if directory.is_dir() else []:
        try:
            harness = Harness.load(path)
        except (OSError, ValueError, TypeError):
            continue
        if harness.owner_alive():
            found.append(harness)
    return found


def live_owner_of_bridge(bridge: str) -> Harness | None:
    """The running harness whose record names ``bridge``, if any."""
    return next((h for h in running() if h.bridge == bridge), None)
