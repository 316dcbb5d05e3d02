"""Cluster DNS (controlplane/dns.py): the manifests agree with what kubelet tells Pods, and
the pinned CoreDNS, run as a local process with the same Corefile against a real API
server and with its own RBAC, resolves a Service name. No node is started here."""

from __future__ import annotations

import dataclasses
import ipaddress
import random
import socket
import struct
import tarfile
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

from inference_devkit.controlplane import binaries, dns, images, network, node
from inference_devkit.controlplane.kubeconfig import write_token_kubeconfig
from inference_devkit.controlplane.kubectl import Kubectl
from inference_devkit.controlplane.launcher import ControlPlane, _Process
from inference_devkit.loopback import free_port
from inference_devkit.waiting import poll

NXDOMAIN = 3
A = 1  # the record type of IPv4 addresses


# --- a DNS client ---------------------------------------------------------------------
# Stdlib only: dnspython is not installed in the project's venv, and one query with its
# A records is this much code (RFC 1035 section 4).
def _name(data: bytes, offset: int) -> int:
    """The offset after the (possibly compressed) name starting at ``offset``."""
    while 0 < data[offset] < 0xC0:  # a label; 0 ends the name, 0xC0.. is a pointer
        offset += 1 + data[offset]
    return offset + (2 if data[offset] >= 0xC0 else 1)


def query(port: int, name: str, qtype: int = A, timeout: float = 2.0) -> tuple[int, list[str]]:
    """(rcode, the A records' addresses) for ``name`` from 127.0.0.1:``port`` over UDP."""
    ident = random.randrange(1 << 16)
    labels = b"".join(bytes([len(part)]) + part.encode() for part in name.strip(".").split("."))
    question = labels + b"\0" + struct.pack("!HH", qtype, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(struct.pack("!6H", ident, 0x0100, 1, 0, 0, 0) + question,
                    ("127.0.0.1", port))
        reply = sock.recv(4096)
    reply_id, flags, questions, answers = struct.unpack("!4H", reply[:8])
    assert (reply_id, questions) == (ident, 1), reply
    offset = 12 + len(question)  # the question comes back as it was sent
    addresses = []
    for _ in range(answers):
        offset = _name(reply, offset)
        rtype, _, _, length = struct.unpack("!HHIH", reply[offset:offset + 10])
        offset += 10
        if rtype == A:
            addresses.append(socket.inet_ntoa(reply[offset:offset + length]))
        offset += length
    return flags & 0xF, addresses


# --- the manifests, without any cluster -----------------------------------------------
def _objects(net: network.NodeNetwork) -> dict[str, dict]:
    return {o["kind"]: o for o in dns.manifests(net, "localhost/coredns:test")}


def test_the_dns_service_is_the_nameserver_and_domain_kubelet_gives_pods():
    net = network.NodeNetwork()
    fake = SimpleNamespace(  # just what _kubelet_config reads
        plane=SimpleNamespace(certs=SimpleNamespace(ca_cert=Path("/ca.crt"))), net=net,
        containerd=SimpleNamespace(endpoint="unix:///run/containerd.sock"),
        work_dir=Path("/work"),
    )
    kubelet = node._kubelet_config(fake, 10250, 10248)
    objects = _objects(net)
    service = objects["Service"]

    assert kubelet["clusterDNS"] == [service["spec"]["clusterIP"]]
    assert ipaddress.ip_address(service["spec"]["clusterIP"]) in ipaddress.ip_network(
        net.service_cidr)
    assert (service["metadata"]["name"], service["metadata"]["namespace"]) == (
        "kube-dns", "kube-system")
    assert kubelet["clusterDomain"] == dns.CLUSTER_DOMAIN
    corefile = objects["ConfigMap"]["data"]["Corefile"]
    assert f"kubernetes {dns.CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{" in corefile
    assert not any(line.split()[:1] == ["forward"] for line in corefile.splitlines())


def test_the_deployment_serves_what_the_service_selects_and_mounts_the_corefile():
    objects = _objects(network.NodeNetwork())
    deployment, service = objects["Deployment"], objects["Service"]
    pod = deployment["spec"]["template"]
    container = pod["spec"]["containers"][0]
    named_ports = {(p["name"], p["protocol"]) for p in container["ports"]}

    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"][
        "labels"].items()
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert {(p["targetPort"], p["protocol"]) for p in service["spec"]["ports"]} <= named_ports
    assert {p["port"] for p in service["spec"]["ports"] if p["name"].startswith("dns")} == {53}
    assert pod["spec"]["volumes"][0]["configMap"]["name"] == objects["ConfigMap"]["metadata"][
        "name"]
    assert pod["spec"]["serviceAccountName"] == objects["ServiceAccount"]["metadata"]["name"]
    assert objects["ClusterRoleBinding"]["roleRef"]["name"] == objects["ClusterRole"][
        "metadata"]["name"]
    assert container["imagePullPolicy"] == "Never"  # no registry to pull from
    assert container["image"] == "localhost/coredns:test"


def test_coredns_is_pinned_and_its_static_build_has_a_cache_key_of_its_own():
    sources = binaries.envtest_sources()
    assert sources is not None
    tool = binaries.TOOLS[binaries.COREDNS]
    version = binaries.pinned_version(tool, sources)
    assert version.startswith("v1.") and images.coredns_ref().endswith(f":{version}")
    assert tool.build_env()["CGO_ENABLED"] == "0"
    dynamic = dataclasses.replace(tool, static=False)
    assert binaries.cached_path(tool, sources) != binaries.cached_path(dynamic, sources)
    # The other tools' keys are what they were before `static` existed: no rebuilds.
    apiserver = binaries.TOOLS["kube-apiserver"]
    assert apiserver.recipe(version) == apiserver.ldflags(version)


def test_the_api_server_accepts_every_object(kubectl: Kubectl):
    objects = dns.manifests(network.NodeNetwork(), "localhost/coredns:test")
    service = next(o for o in objects if o["kind"] == "Service")
    # This control plane's service range is not the node's, so only the fixed address
    # is left out; everything else (schemas, priority class, named ports) is checked.
    service["spec"].pop("clusterIP")
    result = kubectl.apply(objects, None, "--dry-run=server")
    assert result.stdout.count("(server dry run)") == len(objects)


# --- the real CoreDNS -----------------------------------------------------------------
@pytest.fixture(scope="module")
def coredns_binary() -> Path:
    try:
        # Cached, or built once (~3 min on 2 cores); without Go this says so and skips.
        return binaries.resolve(binaries.COREDNS)
    except binaries.BinaryUnavailable as missing:
        pytest.skip(f"coredns unavailable: {missing}")


def _is_static(binary: Path) -> bool:
    """No ELF program header of type PT_INTERP: no dynamic loader, no libc needed."""
    data = binary.read_bytes()[:1 << 16]
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    return data[:4] == b"\x7fELF" and all(
        struct.unpack_from("<I", data, phoff + i * phentsize)[0] != 3 for i in range(phnum))


def test_the_coredns_image_holds_only_the_static_binary(coredns_binary: Path, tmp_path: Path):
    archive = images.coredns_archive()
    assert _is_static(coredns_binary)
    with tarfile.open(archive) as oci_archive:
        oci_archive.extractall(tmp_path, filter="data")
    layers = [m for m in (tmp_path / "blobs" / "sha256").iterdir() if tarfile.is_tarfile(m)]
    assert len(layers) == 1
    with tarfile.open(layers[0]) as layer:
        members = layer.getmembers()
    assert [(m.name, m.mode) for m in members] == [("coredns", 0o755)]
    assert images.coredns_archive() == archive  # cached: the same inputs, no rebuild


def test_coredns_resolves_service_names_with_its_own_rbac(
    coredns_binary: Path, control_plane: ControlPlane, kubectl: Kubectl, namespace: str,
    tmp_path: Path,
):
    # The ServiceAccount and ClusterRole the Deployment gets: CoreDNS runs with their token,
    # so missing rules would show here (the admin's certificate could read anything).
    kubectl.apply(dns.rbac())
    token = kubectl.run("create", "token", dns.NAME, "-n", dns.NAMESPACE).stdout.strip()
    kubeconfig = tmp_path / "coredns.kubeconfig"
    write_token_kubeconfig(kubeconfig, control_plane.kubeconfig, token)
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
               "spec": {"ports": [{"port": 80}]}}
    kubectl.apply(service, namespace)

    port, ready = free_port(), free_port()
    conf = tmp_path / "Corefile"
    conf.write_text(dns.corefile(
        port=port, bind="127.0.0.1", kubeconfig=kubeconfig, health=f"127.0.0.1:{free_port()}",
        ready=f"127.0.0.1:{ready}", metrics=None))
    process = _Process("coredns", tmp_path / "coredns.log")
    process.start([str(coredns_binary), "-conf", str(conf)])

    def synced() -> bool:
        assert process.running(), (tmp_path / "coredns.log").read_text()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{ready}/ready", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    domain = dns.CLUSTER_DOMAIN
    try:
        poll(synced, timeout=30, interval=0.2, message="coredns /ready")
        web_ip = kubectl.get("service", "web", namespace)["spec"]["clusterIP"]
        assert query(port, f"web.{namespace}.svc.{domain}") == (0, [web_ip])

        # A Service made later comes through the watch (negative answers are cached for
        # the plugin's 30s TTL at most, hence the timeout).
        kubectl.apply({**service, "metadata": {"name": "later"}}, namespace)
        later_ip = kubectl.get("service", "later", namespace)["spec"]["clusterIP"]
        assert poll(lambda: query(port, f"later.{namespace}.svc.{domain}") == (0, [later_ip]),
                    timeout=45, interval=0.5, message="the later Service resolves")

        assert query(port, f"nosuch.{namespace}.svc.{domain}")[0] == NXDOMAIN
        # Nothing is forwarded: an outside name fails at once, it does not time out.
        assert query(port, "example.com", timeout=1.0) == (NXDOMAIN, [])
    finally:
        process.stop()
        for obj in reversed(dns.rbac()):
            kubectl.run("delete", obj["kind"], obj["metadata"]["name"], "-n", dns.NAMESPACE,
                        "--ignore-not-found", check=False)
