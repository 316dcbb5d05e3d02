"""The harness's own containerd: its own socket, root, state and CNI config under the
node's work dir, never a system containerd a user may already run.

Debian's containerd 1.6 speaks CRI v1, which is all kubelet 1.34 needs (kubelet only warns
that it cannot ask this runtime for its cgroup driver, and uses the configured one).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from inference_devkit.controlplane import hostcleanup
from inference_devkit.controlplane.harnessstate import Harness
from inference_devkit.controlplane.launcher import _Process, tail
from inference_devkit.controlplane.network import NodeNetwork
from inference_devkit.waiting import poll

NAMESPACE = "k8s.io"  # the containerd namespace the CRI plugin (and so kubelet) uses
CNI_BIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")
READY_TIMEOUT_SECONDS = 30.0


class ContainerdError(RuntimeError):
    pass


def find_cni_bin_dir() -> Path:
    for candidate in CNI_BIN_DIRS:
        if all((Path(candidate) / p).exists() for p in ("bridge", "host-local", "loopback")):
            return Path(candidate)
    raise ContainerdError(
        "no CNI plugins (bridge, host-local, loopback) in " + " or ".join(CNI_BIN_DIRS)
        + ": apt-get install containernetworking-plugins"
    )


def _toml_string(value: str | Path) -> str:
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class Containerd:
    work_dir: Path
    network: NodeNetwork
    sandbox_image: str
    process: _Process | None = None
    harness: Harness | None = None

    @property
    def socket(self) -> Path:
        return self.work_dir / "containerd.sock"

    @property
    def endpoint(self) -> str:
        return f"unix://{self.socket}"

    @property
    def root(self) -> Path:
        return self.work_dir / "root"

    @property
    def state(self) -> Path:
        return self.work_dir / "state"

    def config(self, cni_bin_dir: Path, runc: str) -> str:
        """Config format version 2 (containerd 1.6/1.7). Every path is under work_dir;
        the debug/metrics endpoints stay off so nothing else listens."""
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        return "\n".join([
            "version = 2",
            f"root = {_toml_string(self.root)}",
            f"state = {_toml_string(self.state)}",
            # Plugins that would touch the host's /opt or need a kernel module we lack.
            'disabled_plugins = ["io.containerd.snapshotter.v1.aufs", '
            '"io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", '
            '"io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp"]',
            "[grpc]",
            f"  address = {_toml_string(self.socket)}",
            "[ttrpc]",
            f"  address = {_toml_string(self.work_dir / 'containerd-ttrpc.sock')}",
            "[debug]",
            '  address = ""',
            '  level = "info"',
            "[metrics]",
            '  address = ""',
            '[plugins."io.containerd.internal.v1.opt"]',
            f"  path = {_toml_string(self.work_dir / 'opt')}",
            f"[{cri}]",
            f"  sandbox_image = {_toml_string(self.sandbox_image)}",
            '  stream_server_address = "127.0.0.1"',
            '  stream_server_port = "0"',
            "  enable_selinux = false",
            # Lowering a process's oom_score_adj needs CAP_SYS_RESOURCE, which a harness in
            # a container (CI) may lack: every pod sandbox then fails in runc ("failed to
            # update /proc/self/oom_score_adj: Permission denied"). This caps each
            # container's value at containerd's own, as for rootless containerd.
            "  restrict_oom_score_adj = true",
            # Pod network namespaces under our state dir, not the host's /var/run/netns.
            "  netns_mounts_under_state_dir = true",
            # Images come only from `ctr images import`; a pull would go to a registry.
            f"[{cri}.containerd]",
            '  snapshotter = "overlayfs"',
            '  default_runtime_name = "runc"',
            f"[{cri}.containerd.runtimes.runc]",
            '  runtime_type = "io.containerd.runc.v2"',
            f"[{cri}.containerd.runtimes.runc.options]",
            f"  BinaryName = {_toml_string(runc)}",
            "  SystemdCgroup = false",
            f"[{cri}.cni]",
            f"  bin_dir = {_toml_string(cni_bin_dir)}",
            f"  conf_dir = {_toml_string(self.work_dir / 'cni')}",
            "  max_conf_num = 1",
            "",
        ])

    def start(self, out: IO[str]) -> None:
        containerd = shutil.which("containerd")
        runc = shutil.which("runc")
        if containerd is None or runc is None:
            raise ContainerdError(
                "containerd and runc are needed: apt-get install containerd runc"
            )
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.network.write_cni_config(self.work_dir / "cni")
        config_path = self.work_dir / "config.toml"
        config_path.write_text(self.config(find_cni_bin_dir(), runc))
        if self.harness is not None:
            self.harness.record(containerd_socket=str(self.socket))
        self.process = _Process("containerd", self.work_dir / "containerd.log",
                                harness=self.harness)
        self.process.start([containerd, "--config", str(config_path)])
        try:
            poll(self._serving, timeout=READY_TIMEOUT_SECONDS, interval=0.2,
                 message="containerd socket")
        except TimeoutError:
            raise ContainerdError(
                f"containerd did not serve {self.socket}\n{tail(self.process.log_path)}"
            ) from None
        print(f"containerd serving {self.socket}", file=out, flush=True)

    def _serving(self) -> bool:
        assert self.process is not None
        if not self.process.running():
            raise ContainerdError(f"containerd exited\n{tail(self.process.log_path)}")
        if not self.socket.exists():
            return False
        return self.ctr("version", check=False).returncode == 0

    def ctr(self, *args: str, check: bool = True, timeout: float = 600
            ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["ctr", "--address", str(self.socket), "--namespace", NAMESPACE, *args],
            capture_output=True, text=True, check=False, timeout=timeout,
        )
        if check and result.returncode != 0:
            raise ContainerdError(f"ctr {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def import_image(self, archive: Path) -> None:
        """Load an OCI/docker archive; the CRI plugin sees it at once (same namespace)."""
        self.ctr("images", "import", "--no-unpack=false", str(archive))

    def has_image(self, ref: str) -> bool:
        listing = self.ctr("images", "list", "--quiet", check=False).stdout.split()
        return ref in listing

    def shim_pids(self) -> list[int]:
        """The runc shims of this containerd: started with its socket in their argv
        (shims daemonize, so they are not our children)."""
        return hostcleanup.pids_with_argv(str(self.socket), b"containerd-shim")

    def remove_all_containers(self, deadline: float) -> None:
        """Last resort after kubelet has stopped its pods: kill what is left, so no
        shim outlives the node; until ``deadline`` (monotonic), then the caller kills."""
        def ctr(*args: str) -> None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise subprocess.TimeoutExpired(["ctr", *args], 0)
            self.ctr(*args, check=False, timeout=min(30, remaining))

        tasks = self.ctr("tasks", "list", "--quiet", check=False, timeout=10).stdout.split()
        for task in tasks:
            ctr("tasks", "kill", "--signal", "SIGKILL", task)
        for task in tasks:
            ctr("tasks", "delete", "--force", task)
        for container in self.ctr("containers", "list", "--quiet", check=False,
                                  timeout=10).stdout.split():
            ctr("containers", "delete", container)

    def stop(self, deadline: float | None = None) -> None:
        deadline = time.monotonic() + 60 if deadline is None else deadline
        if self.process is not None and self.process.running():
            try:
                self.remove_all_containers(deadline)
            except (subprocess.TimeoutExpired, OSError):
                pass
        if self.process is not None:
            self.process.stop(grace=max(1.0, min(10.0, deadline - time.monotonic())))
        for pid in self.shim_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while self.shim_pids() and time.monotonic() < deadline:
            time.sleep(0.1)
