"""A real, throwaway Kubernetes control plane on loopback: etcd + kube-apiserver.

The envtest approach: no kubelet, no controller-manager, no scheduler; just the API
server with real admission, RBAC and ServiceAccount tokens. Shared by the tests,
``make controlplane`` and ``inference-operator dev``.
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from inference_devkit.controlplane import binaries
from inference_devkit.controlplane.certs import (
    CertPaths,
    write_cert_material,
    write_client_cert,
)
from inference_devkit.controlplane.harnessstate import Harness, clean_up_dead
from inference_devkit.controlplane.kubeconfig import write_admin_kubeconfig
from inference_devkit.controlplane.network import NodeNetwork
from inference_devkit.loopback import free_port
from inference_devkit.waiting import poll

READY_TIMEOUT_SECONDS = 90.0
LOG_TAIL_LINES = 40


class ControlPlaneError(RuntimeError):
    """The control plane did not come up; the message carries both logs' last lines."""


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "".join(path.read_text(errors="replace").splitlines(keepends=True)[-lines:])
    except OSError:
        return "(no log)\n"


@dataclass
class _Process:
    name: str
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None
    _log_file: IO[bytes] | None = None
    argv: list[str] = field(default_factory=list)  # kept, so a restart reuses flags and ports
    harness: Harness | None = None  # records it, and holds it in its cgroup

    def start(self, argv: list[str] | None = None) -> None:
        """Start with ``argv``, or, without it, restart with the argv of the last start
        (its log then continues instead of starting over)."""
        if argv is not None:
            self.argv = list(argv)
        self._log_file = self.log_path.open("wb" if argv is not None else "ab")
        # A process group of its own, so Ctrl-C in a terminal reaches only our
        # launcher, which then stops the children in order.
        self.popen = subprocess.Popen(
            self.argv, stdout=self._log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        if self.harness is not None:
            self.harness.adopt(self.name, self.popen.pid)

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, grace: float = 10.0) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


@dataclass
class ControlPlane:
    """Handle on a running control plane (local, or an existing cluster)."""

    kubeconfig: Path
    server: str
    work_dir: Path | None = None
    certs: CertPaths | None = None
    startup_seconds: float = 0.0
    processes: list[_Process] = field(default_factory=list)
    keep_work_dir: bool = False
    harness: Harness | None = None  # its own (closed by stop), or a node's (None here)

    @property
    def is_local(self) -> bool:
        return self.work_dir is not None

    def logs(self) -> dict[str, Path]:
        return {process.name: process.log_path for process in self.processes}

    def log_tails(self, lines: int = LOG_TAIL_LINES) -> str:
        return "".join(
            f"--- last lines of {name} ({path}) ---\n{tail(path, lines)}"
            for name, path in self.logs().items()
        )

    def restart(self, *names: str) -> None:
        """Stop the named processes and start them again with the same argv (same ports,
        data directory and certificates), then wait until the API server is ready again.
        For fault tests: clients and watches must survive it. Stops later-started
        processes first, as ``stop`` does, and starts in the original order."""
        chosen = [process for process in self.processes if process.name in names]
        if not self.is_local or len(chosen) != len(set(names)):
            raise ValueError(
                f"cannot restart {names}: have {[p.name for p in self.processes]}"
            )
        for process in reversed(chosen):
            process.stop()
        for process in chosen:
            process.start()
        _wait_ready(self, time.monotonic() + READY_TIMEOUT_SECONDS)

    def stop(self, grace: float = 10.0) -> None:
        # API server first, so it does not spin on a vanished etcd.
        for process in reversed(self.processes):
            process.stop(grace)
        if self.work_dir is not None and not self.keep_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)
        if self.harness is not None:
            self.harness.close()
            self.harness = None

    def __enter__(self) -> ControlPlane:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _wait_ready(plane: ControlPlane, deadline: float) -> None:
    assert plane.certs is not None
    context = ssl.create_default_context(cafile=str(plane.certs.ca_cert))
    context.load_cert_chain(str(plane.certs.admin_cert), str(plane.certs.admin_key))
    last_error = ""

    def ready() -> bool:
        nonlocal last_error
        for process in plane.processes:
            if not process.running():
                raise ControlPlaneError(
                    f"{process.name} exited during startup\n{plane.log_tails()}"
                )
        try:
            with urllib.request.urlopen(f"{plane.server}/readyz", context=context, timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError) as error:
            last_error = str(error)
            return False

    try:
        poll(ready, timeout=deadline - time.monotonic(), interval=0.2)
    except TimeoutError:
        raise ControlPlaneError(
            f"kube-apiserver not ready within {READY_TIMEOUT_SECONDS:.0f}s "
            f"(last: {last_error})\n{plane.log_tails()}"
        ) from None


def _etcd_argv(etcd: Path, data_dir: Path, client_port: int, peer_port: int) -> list[str]:
    client = f"http://127.0.0.1:{client_port}"
    peer = f"http://127.0.0.1:{peer_port}"
    return [
        str(etcd),
        "--name=controlplane",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=controlplane={peer}",
        # A throwaway store: durability buys nothing and fsync costs seconds.
        "--unsafe-no-fsync=true",
        "--log-level=warn",
    ]


def _apiserver_argv(
    apiserver: Path, certs: CertPaths, cert_dir: Path, etcd_port: int, secure_port: int,
    node_network: NodeNetwork | None = None,
) -> list[str]:
    """Loopback only, for the API-only harness; with ``node_network`` (controlplane/node.py)
    it listens on the node's bridge address, which Pods can reach (they cannot reach
    loopback), with the real ServiceAccount admission and endpoints, the Node authorizer
    (what lets a kubelet read its own Pods' Secrets) and a client certificate for the
    kubelet (kubectl logs/exec)."""
    host = "127.0.0.1" if node_network is None else node_network.node_ip
    argv = [
        str(apiserver),
        f"--etcd-servers=http://127.0.0.1:{etcd_port}",
        f"--bind-address={host}",
        f"--advertise-address={host}",
        f"--secure-port={secure_port}",
        f"--cert-dir={cert_dir}",
        f"--tls-cert-file={certs.serving_cert}",
        f"--tls-private-key-file={certs.serving_key}",
        f"--client-ca-file={certs.ca_cert}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={certs.sa_public_key}",
        f"--service-account-signing-key-file={certs.sa_private_key}",
        "--allow-privileged=true",
        "--v=1",
    ]
    if node_network is None:
        return [
            *argv,
            "--authorization-mode=RBAC",
            "--service-cluster-ip-range=10.0.0.0/24",
            # No controller-manager runs to create each namespace's default
            # ServiceAccount, so the admission plugin that requires it would refuse pods.
            "--disable-admission-plugins=ServiceAccount",
            # The `kubernetes` Service cannot point at a loopback address; nothing needs it.
            "--endpoint-reconciler-type=none",
        ]
    kubelet_cert, kubelet_key = write_client_cert(
        certs, cert_dir.parent / "pki", "apiserver-kubelet-client",
        "kube-apiserver-kubelet-client", "system:masters",
    )
    return [
        *argv,
        "--authorization-mode=Node,RBAC",
        f"--service-cluster-ip-range={node_network.service_cidr}",
        "--enable-admission-plugins=NodeRestriction",
        f"--kubelet-client-certificate={kubelet_cert}",
        f"--kubelet-client-key={kubelet_key}",
        "--kubelet-preferred-address-types=InternalIP",
    ]


# For a cluster with a node: every controller a real cluster runs by default ("*": the
# Deployment, ReplicaSet, EndpointSlice, ServiceAccount and token, root-CA publisher...;
# the cloud ones see no cloud and stay idle). The API-only harness keeps two.
NODE_CONTROLLERS = "*"


def _controller_manager_argv(binary: Path, kubeconfig: Path, work_dir: Path,
                             certs: CertPaths | None = None,
                             network: NodeNetwork | None = None) -> list[str]:
    node_args = [] if network is None or certs is None else [
        f"--service-account-private-key-file={certs.sa_private_key}",
        f"--root-ca-file={certs.ca_cert}",
        f"--service-cluster-ip-range={network.service_cidr}",
    ]
    return [
        str(binary),
        f"--kubeconfig={kubeconfig}",
        # Namespace deletion and garbage collection make deleting a namespace real; the
        # controllers that would need nodes or a cloud stay off.
        "--controllers=" + ("namespace,garbagecollector" if not node_args else NODE_CONTROLLERS),
        *node_args,
        "--leader-elect=false",
        "--bind-address=127.0.0.1",
        f"--secure-port={free_port()}",
        f"--cert-dir={work_dir / 'controller-manager-certs'}",
        "--v=1",
    ]


def start(
    work_dir: Path | None = None, out: IO[str] = sys.stderr, *, controllers: bool = True,
    node_network: NodeNetwork | None = None, harness: Harness | None = None,
) -> ControlPlane:
    """Start etcd and kube-apiserver on free loopback ports; returns once /readyz is ok.
    With ``controllers`` (and the binary at hand) kube-controller-manager runs the
    namespace and garbage-collector controllers too, started without waiting for it.

    With ``node_network`` (controlplane/node.py makes its bridge first) the API server
    listens on the node's address and serves a cluster a real kubelet can join, and the
    controller-manager runs the controllers Pods need.

    A harness of its own (harnessstate.py) records what it starts, after cleaning up
    after any harness that died; a node passes its own ``harness`` instead, and it has
    cleaned up already.

    Honours ``USE_EXISTING_CLUSTER=true`` (with ``KUBECONFIG``): nothing is started.
    """
    if os.environ.get("USE_EXISTING_CLUSTER", "").lower() == "true":
        return existing_cluster()
    if harness is None:
        clean_up_dead(out)

    paths = binaries.resolve_all(out=out)
    began = time.monotonic()
    keep = work_dir is not None
    work_dir = Path(work_dir or tempfile.mkdtemp(prefix="inference-operator-cp-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    own = None if harness is not None else Harness.open(
        "controlplane", work_dir, remove_work_dir=not keep)
    harness = harness or own
    extra_ips = () if node_network is None else (
        node_network.node_ip, node_network.kubernetes_service_ip)
    certs = write_cert_material(work_dir / "pki", extra_ips)
    etcd_port, etcd_peer_port, secure_port = free_port(), free_port(), free_port()
    host = "127.0.0.1" if node_network is None else node_network.node_ip
    server = f"https://{host}:{secure_port}"
    plane = ControlPlane(
        kubeconfig=work_dir / "kubeconfig",
        server=server,
        work_dir=work_dir,
        certs=certs,
        keep_work_dir=keep,
        harness=own,
    )
    etcd = _Process("etcd", work_dir / "etcd.log", harness=harness)
    apiserver = _Process("kube-apiserver", work_dir / "kube-apiserver.log", harness=harness)
    plane.processes = [etcd, apiserver]
    try:
        etcd.start(_etcd_argv(paths["etcd"], work_dir / "etcd-data", etcd_port, etcd_peer_port))
        apiserver.start(_apiserver_argv(
            paths["kube-apiserver"], certs, work_dir / "apiserver-certs", etcd_port,
            secure_port, node_network,
        ))
        _wait_ready(plane, time.monotonic() + READY_TIMEOUT_SECONDS)
        write_admin_kubeconfig(plane.kubeconfig, server, certs)
        manager = _optional_binary(binaries.CONTROLLER_MANAGER) if controllers else None
        if manager is not None:
            controller_manager = _Process(
                binaries.CONTROLLER_MANAGER, work_dir / "kube-controller-manager.log",
                harness=harness,
            )
            plane.processes.append(controller_manager)
            controller_manager.start(
                _controller_manager_argv(manager, plane.kubeconfig, work_dir, certs, node_network)
            )
    except BaseException:
        plane.keep_work_dir = True  # leave the logs for the error message's reader
        plane.stop()
        raise
    plane.startup_seconds = time.monotonic() - began
    return plane


def _optional_binary(name: str) -> Path | None:
    try:
        return binaries.resolve(name)
    except binaries.BinaryUnavailable:
        return None


def existing_cluster() -> ControlPlane:
    kubeconfig = os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
    if not Path(kubeconfig).exists():
        raise ControlPlaneError(
            f"USE_EXISTING_CLUSTER=true but the kubeconfig {kubeconfig} does not exist"
        )
    return ControlPlane(kubeconfig=Path(kubeconfig), server="")
