"""A harness that is killed leaves nothing the next one trips over, and Ctrl-C leaves
nothing at all: `inference-operator cluster` is SIGKILLed once its node is up, a second
one comes up on its own (saying what it cleaned up after the first), and after Ctrl-C
none of either is left on the host.

The node's bridge and CIDRs are fixed, so this cannot run beside the session's node
(conftest.py's `cluster`): conftest runs this module before every other test, when no
test has asked for that node yet (it starts on first use), instead of stopping the
session's node here and starting it again for the tests after.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from inference_devkit.controlplane import harnessstate, hostcleanup, network
from inference_devkit.waiting import poll

CLI = Path(sys.executable).with_name("inference-operator")
UP_TIMEOUT_SECONDS = 300.0
STOP_TIMEOUT_SECONDS = 60.0
# Only a node runs these; the control-plane binaries also run in other harnesses (the
# tests' loopback control planes), so those count only when they name the node's work dir.
NODE_ONLY = ("containerd", "containerd-shim", "kubelet", "kube-proxy", "kube-scheduler",
             "coredns")
CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager")


def _iptables_chains() -> set[str]:
    """User-defined chains as ``table/chain``, read with iptables-save apart from the
    harness's own listing (``network.iptables_chains``, which this checks). Built-in ones
    (with a policy, not ``-``) are left out: a table the kernel had not loaded before the
    node used it lists them after, and they cannot be removed."""
    listing = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True)
    table = ""
    chains = set()
    for line in listing.stdout.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":") and line.split()[1] == "-":
            chains.add(f"{table}/{line[1:].split()[0]}")
    return chains


def _netns_under(directory: Path) -> list[str]:
    """Network namespaces mounted under it (containerd keeps pods' there, not in the
    host's /run/netns)."""
    prefix = str(directory) + "/"
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        kind = fields[fields.index("-") + 1]
        if kind == "nsfs" and fields[4].startswith(prefix) and "/netns/" in fields[4]:
            found.append(fields[4])
    return found


def _processes() -> dict[int, tuple[str, str]]:
    """pid -> (program name, argv joined by spaces)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or not hostcleanup.alive(int(entry.name)):
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0]:
            found[int(entry.name)] = (os.path.basename(argv[0].decode(errors="replace")),
                                      b" ".join(argv).decode(errors="replace"))
    return found


def _records() -> dict[str, harnessstate.Harness]:
    directory = harnessstate.state_dir()
    if not directory.is_dir():
        return {}
    return {path.name: harnessstate.Harness.load(path)
            for path in directory.glob(f"*{harnessstate.SUFFIX}")}


class Cluster:
    """`inference-operator cluster` as a subprocess, its output in files."""

    def __init__(self, directory: Path, name: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.stdout = directory / f"{name}.out"
        self.stderr = directory / f"{name}.err"
        with self.stdout.open("wb") as out, self.stderr.open("wb") as err:
            self.popen = subprocess.Popen(
                [str(CLI), "cluster", "--no-image", "--kubeconfig", str(directory / name)],
                stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=directory,
            )

    def output(self) -> str:
        return (f"--- stdout ---\n{self.stdout.read_text(errors='replace')}"
                f"--- stderr (last 4000) ---\n{self.stderr.read_text(errors='replace')[-4000:]}")

    def wait_up(self) -> None:
        def up() -> bool:
            if self.popen.poll() is not None:
                pytest.fail(f"cluster exited with {self.popen.returncode}\n{self.output()}")
            return "Ctrl-C stops it" in self.stdout.read_text(errors="replace")

        try:
            poll(up, timeout=UP_TIMEOUT_SECONDS, interval=1)
        except TimeoutError:
            self.popen.kill()
            pytest.fail(f"cluster not up within {UP_TIMEOUT_SECONDS:g}s\n{self.output()}")

    def record(self) -> harnessstate.Harness:
        mine = [r for r in _records().values()
                if r.owner_pid == self.popen.pid and r.kind == "node"]
        assert len(mine) == 1, f"no state file of the node of pid {self.popen.pid}: {_records()}"
        return mine[0]


def leftovers(records: list[harnessstate.Harness], chains_before: set[str]) -> list[str]:
    """Everything of these harnesses still on the host, each check on its own."""
    found = []
    work_dirs = [r.work_dir for r in records]
    for pid, (program, argv) in sorted(_processes().items()):
        if program.startswith(NODE_ONLY) or (
                program in CONTROL_PLANE and any(w in argv for w in work_dirs)):
            found.append(f"process {pid} {program}")
    for record in records:
        found += [f"recorded process {c.name} ({c.pid})" for c in record.children
                  if harnessstate.same_process(c.pid, c.start)]
        if record.containerd_socket:
            found += [f"shim {pid}" for pid in
                      hostcleanup.pids_with_argv(record.containerd_socket, b"containerd-shim")]
        found += [f"mount {m}" for m in hostcleanup.mounts_under(Path(record.work_dir))]
        found += [f"netns {n}" for n in _netns_under(Path(record.work_dir))]
        if Path(record.work_dir).exists():
            found.append(f"work dir {record.work_dir}")
        if record.cgroup and Path(record.cgroup).exists():
            found.append(f"cgroup {record.cgroup}")
        if Path(record.path).exists():
            found.append(f"state file {record.path}")
    found += [f"cgroup {p}" for p in hostcleanup.cgroup_dirs(harnessstate.POD_CGROUP)]
    if network.bridge_exists(network.BRIDGE):
        found.append(f"interface {network.BRIDGE}")
    found += [f"iptables chain {c}" for c in sorted(_iptables_chains() - chains_before)]
    return found


def test_a_killed_harness_is_cleaned_up_after_and_ctrl_c_leaves_nothing(
        tmp_path: Path) -> None:
    # A dead harness's node may be left: the first start below cleans it up.
    owner = harnessstate.live_owner_of_bridge(network.BRIDGE)
    assert owner is None, f"a node runs on this machine already (pid {owner.owner_pid})"
    chains_before = _iptables_chains()

    first = Cluster(tmp_path, "first")
    try:
        first.wait_up()
        killed = first.record()
        first.popen.send_signal(signal.SIGKILL)
        first.popen.wait()
    finally:
        if first.popen.poll() is None:
            first.popen.kill()
    running = [c.name for c in killed.children if harnessstate.same_process(c.pid, c.start)]
    assert {"kubelet", "containerd", "etcd"} <= set(running), (
        f"a SIGKILLed harness should have left its node running, found {running}")
    assert network.bridge_exists(network.BRIDGE)

    second = Cluster(tmp_path, "second")
    try:
        second.wait_up()  # without any command run by hand in between
        lines = [line for line in second.stderr.read_text().splitlines()
                 if line.startswith("cleaned up after ")]
        assert len(lines) == 1, second.output()
        assert re.match(
            rf"cleaned up after a node whose harness died \(pid {first.popen.pid}\): "
            r"\d+ process(es)? \(.*kubelet.*\).*bridge ioperator0.*iptables chains", lines[0]
        ), lines[0]
        survivor = second.record()
        started = time.monotonic()
        second.popen.send_signal(signal.SIGINT)
        try:
            code = second.popen.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            pytest.fail(f"Ctrl-C did not stop it within {STOP_TIMEOUT_SECONDS:g}s\n"
                        f"{second.output()}")
        stop_seconds = time.monotonic() - started
    finally:
        if second.popen.poll() is None:
            second.popen.kill()
    left = leftovers([killed, survivor], chains_before)
    assert not left, f"left behind after Ctrl-C ({stop_seconds:.1f}s): {left}\n{second.output()}"
    assert code == 0, second.output()
    print(f"cleanup line: {lines[0]}\nstopped {stop_seconds:.1f}s after Ctrl-C")
