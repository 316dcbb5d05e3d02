"""The node's own network: a bridge, a pod CIDR and a service CIDR nothing else here uses.

The API server and the kubelet listen on the bridge's address (not on loopback): a Pod
cannot reach the host's 127.0.0.1, but it can reach its own gateway, so the `kubernetes`
Service and `kubectl logs/exec` both work while nothing listens on a public interface.
The bridge is made before the API server starts (so it can bind there) and CNI's bridge
plugin reuses it. Teardown removes the bridge, and every iptables chain that appeared
while the node ran (kube-proxy's KUBE-*, CNI's CNI-*), and nothing that was there before.
"""

from __future__ import annotations

import ipaddress
import json
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

# TEST-NET-like private ranges chosen to clash with nothing on this machine (containerd's
# default is 10.88.0.0/16, docker's 172.17.0.0/16, local-up-cluster's 10.0.0.0/24).
POD_CIDR = "10.213.0.0/16"
SERVICE_CIDR = "10.214.0.0/16"
BRIDGE = "ioperator0"
IPTABLES_TABLES = ("filter", "nat", "mangle")


class NetworkError(RuntimeError):
    pass


@dataclass(frozen=True)
class NodeNetwork:
    pod_cidr: str = POD_CIDR
    service_cidr: str = SERVICE_CIDR
    bridge: str = BRIDGE

    @property
    def node_ip(self) -> str:
        """The bridge's (gateway's) address: the API server and kubelet bind here."""
        return str(next(ipaddress.ip_network(self.pod_cidr).hosts()))

    @property
    def kubernetes_service_ip(self) -> str:
        return str(next(ipaddress.ip_network(self.service_cidr).hosts()))

    @property
    def dns_service_ip(self) -> str:
        return str(ipaddress.ip_network(self.service_cidr).network_address + 10)

    def cni_conflist(self) -> dict:
        """bridge + host-local + portmap (+ loopback, which containerd adds itself)."""
        return {
            "cniVersion": "0.4.0",
            "name": "inference-operator-node",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge,
                    "isGateway": True,
                    # Pod -> Service -> a Pod on the same bridge needs the reply to come
                    # back through the bridge, hence hairpin mode.
                    "hairpinMode": True,
                    # No masquerade: Pods talk only to each other and to the node's own
                    # address; nothing should leave this machine.
                    "ipMasq": False,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": self.pod_cidr, "gateway": self.node_ip}]],
                        "routes": [{"dst": f"{self.node_ip}/32"}, {"dst": self.service_cidr}],
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }

    def write_cni_config(self, conf_dir: Path) -> Path:
        conf_dir.mkdir(parents=True, exist_ok=True)
        path = conf_dir / "10-inference-operator.conflist"
        path.write_text(json.dumps(self.cni_conflist(), indent=2))
        return path


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise NetworkError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
    return result


def bridge_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def create_bridge(network: NodeNetwork) -> None:
    """The bridge with the node address, up, before anything binds to that address."""
    if bridge_exists(network.bridge):
        # node.start says whose it is before it gets here.
        raise NetworkError(f"interface {network.bridge} already exists")
    prefix = ipaddress.ip_network(network.pod_cidr).prefixlen
    _run("ip", "link", "add", network.bridge, "type", "bridge")
    _run("ip", "addr", "add", f"{network.node_ip}/{prefix}", "dev", network.bridge)
    _run("ip", "link", "set", network.bridge, "up")


def delete_bridge(network: NodeNetwork) -> None:
    if bridge_exists(network.bridge):
        _run("ip", "link", "del", network.bridge, check=False)


def veths_on_bridge(network: NodeNetwork) -> list[str]:
    ports = Path("/sys/class/net", network.bridge, "brif")
    return sorted(p.name for p in ports.iterdir()) if ports.exists() else []


def iptables_chains() -> set[tuple[str, str]]:
    """(table, chain) pairs that exist now, for a before/after comparison."""
    chains: set[tuple[str, str]] = set()
    if shutil.which("iptables") is None:
        return chains
    for table in IPTABLES_TABLES:
        result = _run("iptables", "-w", "-t", table, "-S", check=False)
        for line in result.stdout.splitlines():
            if line.startswith("-N "):
                chains.add((table, line.split()[1]))
    return chains


def remove_new_chains(before: set[tuple[str, str]], only: tuple[str, ...] = ("",)
                      ) -> list[tuple[str, str]]:
    """Remove the chains created since ``before`` whose names start with one of ``only``
    (and the rules that jump to them from chains that were there already). Returns what
    is still left."""
    new = {c for c in iptables_chains() - before if c[1].startswith(only)}
    for table in {t for t, _ in new}:
        mine = {chain for t, chain in new if t == table}
        listing = _run("iptables", "-w", "-t", table, "-S", check=False).stdout.splitlines()
        for line in listing:
            parts = shlex.split(line)  # comments are quoted and may hold spaces
            # A jump from a chain that existed before (e.g. nat PREROUTING -> KUBE-SERVICES).
            if parts[:1] == ["-A"] and parts[1] not in mine and any(
                j in parts and parts[parts.index(j) + 1] in mine for j in ("-j", "-g")
            ):
                _run("iptables", "-w", "-t", table, "-D", *parts[1:], check=False)
        for chain in mine:
            _run("iptables", "-w", "-t", table, "-F", chain, check=False)
        for chain in mine:
            _run("iptables", "-w", "-t", table, "-X", chain, check=False)
    return sorted(c for c in iptables_chains() - before if c[1].startswith(only))
