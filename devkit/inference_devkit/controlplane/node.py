"""A real one-node cluster: the control plane plus kubelet, kube-proxy (iptables mode),
kube-scheduler and the harness's own containerd, all local processes as in Kubernetes'
``hack/local-up-cluster.sh``, on a bridge and CIDRs of their own (network.py).

Order matters both ways. Up: bridge (the API server binds to its address) -> control
plane -> containerd + pause image -> scheduler, kubelet, kube-proxy -> node Ready.
Down: no new Pods (scheduler and controllers stop) -> every Pod deleted, so kubelet
tears each sandbox down through CNI (veths, IPs) -> kubelet, kube-proxy (and its
``--cleanup``) -> containerd and any shim left -> control plane, within
``STOP_BUDGET_SECONDS`` -> whatever still runs is killed -> mounts, cgroups, bridge, the
iptables chains that appeared. ``leftovers()`` says what, if anything, remains.

A state file (harnessstate.py) records all of it as it starts, so that the next start
cleans up after a harness that was killed before it could.
"""

from __future__ import annotations

import json
import os
import platform
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
from typing import IO, Any

import yaml

from inference_devkit.controlplane import (
    binaries,
    dns,
    harnessstate,
    hostcleanup,
    images,
    launcher,
    network,
)
from inference_devkit.controlplane.certs import write_client_cert
from inference_devkit.controlplane.containerd import Containerd
from inference_devkit.controlplane.kubectl import Kubectl
from inference_devkit.controlplane.launcher import ControlPlane, _Process, tail
from inference_devkit.loopback import free_port
from inference_devkit.waiting import poll

NODE_NAME = "inference-operator-node"
NODE_READY_TIMEOUT_SECONDS = 120.0
POD_TEARDOWN_TIMEOUT_SECONDS = 60.0
# Ctrl-C and SIGTERM stop everything within 60 s: the orderly part gets this long, then
# whatever is left of the harness is killed.
STOP_BUDGET_SECONDS = 40.0
HOST_TOOLS = ("containerd", "containerd-shim-runc-v2", "runc", "ctr", "iptables", "ip")


class NodeUnavailable(RuntimeError):
    """A node cannot run on this machine; the message says why and how to get one."""


class NodeError(RuntimeError):
    """The node did not come up; the message carries the components' last log lines."""


def check_supported() -> None:
    """Raise NodeUnavailable unless this machine can run a node (the e2e tests skip with
    its message)."""
    if platform.system() != "Linux":
        raise NodeUnavailable(f"a local node needs Linux (this is {platform.system()})")
    if os.geteuid() != 0:
        raise NodeUnavailable("a local node needs root (kubelet, containerd and CNI do)")
    missing = [tool for tool in HOST_TOOLS if shutil.which(tool) is None]
    if missing:
        raise NodeUnavailable(
            f"a local node needs {', '.join(missing)}: apt-get install containerd runc "
            "containernetworking-plugins iptables iproute2"
        )


def _kubeconfig(path: Path, server: str, ca: Path, cert: Path, key: Path) -> Path:
    document = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "local", "cluster": {
            "server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": "local", "user": {
            "client-certificate": str(cert), "client-key": str(key)}}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": "local"}}],
        "current-context": "local",
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    path.chmod(0o600)
    return path


@dataclass
class Node:
    plane: ControlPlane
    net: network.NodeNetwork
    work_dir: Path
    containerd: Containerd
    chains_before: set[tuple[str, str]]
    harness: harnessstate.Harness
    processes: list[_Process] = field(default_factory=list)
    ready_seconds: float = 0.0
    keep_work_dir: bool = False
    _context: ssl.SSLContext | None = None

    # --- the API, with the admin certificate (no kubectl needed in the harness) ---
    def api(self, method: str, path: str, body: Any = None) -> Any:
        certs = self.plane.certs
        assert certs is not None
        if self._context is None:
            self._context = ssl.create_default_context(cafile=str(certs.ca_cert))
            self._context.load_cert_chain(str(certs.admin_cert), str(certs.admin_key))
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.plane.server}{path}", data=data, method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, context=self._context, timeout=10) as response:
            return json.loads(response.read() or b"null")

    def log_tails(self) -> str:
        parts = [self.plane.log_tails()]
        for process in [*self.processes, self.containerd.process]:
            if process is not None:
                parts.append(f"--- last lines of {process.name} ({process.log_path}) ---\n"
                             f"{tail(process.log_path)}")
        return "".join(parts)

    def node_ready(self) -> bool:
        for process in [*self.plane.processes, *self.processes]:
            if not process.running():
                raise NodeError(f"{process.name} exited\n{self.log_tails()}")
        try:
            node = self.api("GET", f"/api/v1/nodes/{NODE_NAME}")
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return False
            raise
        conditions = node.get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def load_image(self, archive: Path) -> None:
        self.containerd.import_image(archive)

    # --- teardown ---
    def _delete_all_pods(self, timeout: float) -> None:
        try:
            namespaces = self.api("GET", "/api/v1/namespaces")["items"]
            for namespace in namespaces:
                name = namespace["metadata"]["name"]
                self.api("DELETE", f"/api/v1/namespaces/{name}/pods?gracePeriodSeconds=0")
        except (urllib.error.URLError, OSError):
            return

        def no_sandboxes() -> bool:
            pods = self.api("GET", "/api/v1/pods")["items"]
            sandboxes = self.containerd.ctr("containers", "list", "--quiet", check=False)
            return not pods and not sandboxes.stdout.split()

        try:
            poll(no_sandboxes, timeout=timeout, interval=0.5)
        except (TimeoutError, urllib.error.URLError, OSError):
            pass  # what is left is killed below

    def stop(self) -> None:
        deadline = time.monotonic() + STOP_BUDGET_SECONDS

        def grace(most: float) -> float:
            return max(1.0, min(most, deadline - time.monotonic()))

        by_name = {p.name: p for p in self.plane.processes}
        # No new Pods while the old ones go: the scheduler and the controllers first.
        for name in ("kube-scheduler",):
            for process in self.processes:
                if process.name == name:
                    process.stop(grace(5))
        if binaries.CONTROLLER_MANAGER in by_name:
            by_name[binaries.CONTROLLER_MANAGER].stop(grace(5))
        kubelet = next((p for p in self.processes if p.name == "kubelet"), None)
        if kubelet is not None and kubelet.running():
            # The rest of the teardown needs some of the budget too.
            self._delete_all_pods(min(POD_TEARDOWN_TIMEOUT_SECONDS,
                                      deadline - 20 - time.monotonic()))
        for process in reversed(self.processes):
            process.stop(grace(5))
        proxy = next((p for p in self.processes if p.name == "kube-proxy"), None)
        if proxy is not None and proxy.argv:
            # Removes every KUBE-* chain and rule it made.
            try:
                subprocess.run([proxy.argv[0], "--cleanup", "--v=0"], capture_output=True,
                               check=False, timeout=grace(15))
            except subprocess.TimeoutExpired:
                pass  # its chains go with the others below
        self.containerd.stop(deadline - 5)
        self.plane.stop(grace(5))
        # Whatever is still running now (pods' processes, a shim, a stuck child) is killed.
        self.harness.kill_all()
        hostcleanup.unmount_all_under(self.work_dir)
        hostcleanup.remove_cgroups(harnessstate.POD_CGROUP)
        hostcleanup.remove_container_log_links(self.work_dir)
        network.delete_bridge(self.net)
        network.remove_new_chains(self.chains_before)
        if not self.keep_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)
        self.harness.close()

    def leftovers(self) -> list[str]:
        """What of this node is still on the host (empty after a clean stop)."""
        found = [f"process {pid} (containerd shim)" for pid in self.containerd.shim_pids()]
        found += [f"process {p.name}" for p in [*self.processes, *self.plane.processes]
                  if p.running()]
        found += [f"mount {m}" for m in hostcleanup.mounts_under(self.work_dir)]
        if network.bridge_exists(self.net.bridge):
            found.append(f"interface {self.net.bridge}")
        found += [f"iptables chain {t}/{c}"
                  for t, c in sorted(network.iptables_chains() - self.chains_before)]
        found += [f"cgroup {p}" for p in hostcleanup.cgroup_dirs(harnessstate.POD_CGROUP)]
        if self.harness.cgroup is not None and Path(self.harness.cgroup).exists():
            found.append(f"cgroup {self.harness.cgroup}")
        if Path(self.harness.path).exists():
            found.append(f"state file {self.harness.path}")
        return found

    def __enter__(self) -> Node:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _kubelet_config(node: Node, kubelet_port: int, healthz_port: int) -> dict:
    certs = node.plane.certs
    assert certs is not None
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": node.net.node_ip,
        "port": kubelet_port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "containerRuntimeEndpoint": node.containerd.endpoint,
        "imageServiceEndpoint": node.containerd.endpoint,
        # cgroupfs: this machine has no systemd; containerd's runc uses cgroupfs too.
        "cgroupDriver": "cgroupfs",
        "failSwapOn": False,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(certs.ca_cert)},
        },
        "authorization": {"mode": "Webhook"},
        "clusterDomain": dns.CLUSTER_DOMAIN,
        "clusterDNS": [node.net.dns_service_ip],
        "podLogsDir": str(node.work_dir / "pod-logs"),
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        # Images come only from `ctr images import`: never garbage-collect them (nothing
        # could pull them back), and evict only when the disk is really full.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "2%",
                         "imagefs.available": "2%", "nodefs.inodesFree": "2%"},
        "serializeImagePulls": False,
        "registerNode": True,
        "maxPods": 110,
    }


def _kube_proxy_config(node: Node, kubeconfig: Path) -> dict:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": NODE_NAME,
        "mode": "iptables",
        "clusterCIDR": node.net.pod_cidr,
        "bindAddress": node.net.node_ip,
        "metricsBindAddress": f"127.0.0.1:{free_port()}",
        "healthzBindAddress": f"127.0.0.1:{free_port()}",
        # NodePorts only on the node's own bridge address, never on the host's eth0.
        "nodePortAddresses": [f"{node.net.node_ip}/32"],
        # No host-wide sysctls (conntrack sizes, route_localnet).
        "conntrack": {"maxPerCore": 0, "tcpEstablishedTimeout": "0s",
                      "tcpCloseWaitTimeout": "0s"},
        "iptables": {"localhostNodePorts": False},
    }


def _set_forwarding(bridge: str) -> None:
    """IPv4 forwarding on the bridge only (Pod -> Service -> Pod is routed back out of
    it); the host-wide ip_forward stays as it is, and the setting goes with the bridge.
    Pods have no default route (network.py), so nothing is forwarded off this machine."""
    Path(f"/proc/sys/net/ipv4/conf/{bridge}/forwarding").write_text("1")


def prepare(out: IO[str] = sys.stderr) -> tuple[dict[str, Path], Path, Path]:
    """What a node start needs that is built once and cached: the node binaries, the
    pause and CoreDNS images."""
    return binaries.resolve_node(out=out), images.pause_archive(out), images.coredns_archive(out)


def start(work_dir: Path | None = None, out: IO[str] = sys.stderr,
          net: network.NodeNetwork | None = None) -> Node:
    """Start a control plane and one node; returns once the node is Ready."""
    check_supported()
    net = net or network.NodeNetwork()
    node_binaries, pause, coredns = prepare(out)
    began = time.monotonic()
    keep = work_dir is not None
    # Before anything starts: what a harness that died left (its bridge first of all).
    harnessstate.clean_up_dead(out)
    if network.bridge_exists(net.bridge):
        raise NodeError(_bridge_taken(net.bridge))
    work_dir = Path(work_dir or tempfile.mkdtemp(prefix="inference-operator-node-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    harness = harnessstate.Harness.open("node", work_dir, remove_work_dir=not keep)
    chains_before = network.iptables_chains()
    harness.record(chains_before=sorted(chains_before), pod_cgroup=harnessstate.POD_CGROUP)
    try:
        network.create_bridge(net)
        harness.record(bridge=net.bridge)
        _set_forwarding(net.bridge)
        plane = launcher.start(work_dir / "controlplane", out, node_network=net,
                               harness=harness)
    except BaseException:
        network.delete_bridge(net)
        harness.close()
        raise
    plane.keep_work_dir = False  # the node's work dir goes as a whole (or is kept)
    node = Node(plane=plane, net=net, work_dir=work_dir,
                containerd=Containerd(work_dir / "containerd", net, images.PAUSE_REF,
                                      harness=harness),
                chains_before=chains_before, harness=harness, keep_work_dir=keep)
    try:
        _start_components(node, node_binaries, pause, out)
        poll(node.node_ready, timeout=NODE_READY_TIMEOUT_SECONDS, interval=0.5,
             message=f"node {NODE_NAME} Ready")
    except TimeoutError as error:
        log_tails = node.log_tails()
        node.keep_work_dir = True
        node.stop()
        raise NodeError(f"{error}\n{log_tails}") from None
    except BaseException:
        node.keep_work_dir = True  # the logs stay for whoever reads the error
        node.stop()
        raise
    node.ready_seconds = time.monotonic() - began
    print(f"node {NODE_NAME} Ready in {node.ready_seconds:.1f}s", file=out, flush=True)
    try:
        # Cluster DNS runs in the cluster, as in a real one; it needs a Ready node.
        node.load_image(coredns)
        dns.install(Kubectl(binaries.resolve("kubectl"), plane.kubeconfig), net,
                    images.coredns_ref())
    except BaseException:
        node.keep_work_dir = True
        node.stop()
        raise
    print(f"cluster DNS serving at {net.dns_service_ip} after "
          f"{time.monotonic() - began:.1f}s", file=out, flush=True)
    return node


def _bridge_taken(bridge: str) -> str:
    owner = harnessstate.live_owner_of_bridge(bridge)
    if owner is not None:
        return (f"interface {bridge} already exists: it is the node of a running harness "
                f"(pid {owner.owner_pid}, state file {owner.path}); stop that one first "
                "(Ctrl-C or SIGTERM): one node at a time")
    return (f"interface {bridge} already exists, and no running harness's state file in "
            f"{harnessstate.state_dir()} names it (a dead one's was cleaned up just now): "
            "something else made it, or a harness from before state files; what a node "
            "leaves is in docs/node.md, 'After a harness that died'")


def _start_components(node: Node, paths: dict[str, Path], pause: Path, out: IO[str]) -> None:
    certs = node.plane.certs
    assert certs is not None
    pki = node.work_dir / "pki"
    server = node.plane.server

    def client(name: str, common_name: str, organization: str | None = None) -> Path:
        cert, key = write_client_cert(certs, pki, name, common_name, organization)
        return _kubeconfig(pki / f"{name}.kubeconfig", server, certs.ca_cert, cert, key)

    def launch(name: str, args: list[str]) -> None:
        process = _Process(name, node.work_dir / f"{name}.log", harness=node.harness)
        node.processes.append(process)
        process.start([str(paths[name]), *args])

    node.containerd.start(out)
    node.load_image(pause)

    scheduler_kubeconfig = client("kube-scheduler", "system:kube-scheduler")
    launch("kube-scheduler", [
        f"--kubeconfig={scheduler_kubeconfig}",
        f"--authentication-kubeconfig={scheduler_kubeconfig}",
        f"--authorization-kubeconfig={scheduler_kubeconfig}",
        "--leader-elect=false", "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
        "--v=1",
    ])

    # The Node authorizer and NodeRestriction know a kubelet by this name and group.
    kubelet_kubeconfig = client("kubelet", f"system:node:{NODE_NAME}", "system:nodes")
    config = node.work_dir / "kubelet-config.yaml"
    config.write_text(yaml.safe_dump(_kubelet_config(node, free_port(), free_port())))
    launch("kubelet", [
        f"--config={config}",
        f"--kubeconfig={kubelet_kubeconfig}",
        f"--hostname-override={NODE_NAME}",
        f"--node-ip={node.net.node_ip}",
        f"--root-dir={node.work_dir / 'kubelet'}",
        f"--cert-dir={node.work_dir / 'kubelet' / 'pki'}",
        # cAdvisor's own containerd client: ours, never a system containerd's socket.
        f"--containerd={node.containerd.socket}",
        "--v=1",
    ])

    proxy_kubeconfig = client("kube-proxy", "system:kube-proxy")
    proxy_config = node.work_dir / "kube-proxy-config.yaml"
    proxy_config.write_text(yaml.safe_dump(_kube_proxy_config(node, proxy_kubeconfig)))
    launch("kube-proxy", [f"--config={proxy_config}", "--v=1"])
