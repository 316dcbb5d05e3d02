"""Cluster DNS for the harness's node: CoreDNS running in the cluster as in a real one.

A Deployment in kube-system behind the Service ``kube-dns`` at the address kubelet gives
every Pod as its nameserver (``NodeNetwork.dns_service_ip``), a ConfigMap with the
Corefile, and RBAC for the kubernetes plugin. The image holds only the static coredns
binary (``images.coredns_archive``): there is no registry, so it is loaded into the node's
containerd and never pulled.

Only cluster names are answered. There is no ``forward``: Pods here have no route off the
machine (network.py), so there is no upstream to ask; any other name gets NXDOMAIN at
once from a catch-all block instead of a timeout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from inference_devkit.controlplane.kubectl import Kubectl
from inference_devkit.controlplane.network import NodeNetwork

# What kubelet's clusterDomain must be too (node.py); tests/test_dns.py checks they agree.
CLUSTER_DOMAIN = "cluster.local"
NAMESPACE = "kube-system"
NAME = "coredns"
SERVICE_NAME = "kube-dns"  # the name every cluster gives its DNS Service
LABELS = {"k8s-app": "kube-dns"}
# Inside the Pod CoreDNS listens on an unprivileged port, so it runs as non-root with
# every capability dropped (binding 53 would need NET_BIND_SERVICE, which a non-root
# process gets only from file capabilities our one-file image does not carry); the
# Service maps port 53 to it.
CONTAINER_DNS_PORT = 1053
HEALTH_PORT = 8080
READY_PORT = 8181
METRICS_PORT = 9153
RUN_AS = 65532  # "nonroot" as in distroless images
READY_TIMEOUT_SECONDS = 120.0


def corefile(cluster_domain: str = CLUSTER_DOMAIN, *, port: int = CONTAINER_DNS_PORT,
             bind: str | None = None, kubeconfig: Path | None = None,
             health: str = f":{HEALTH_PORT}", ready: str = f":{READY_PORT}",
             metrics: str | None = f":{METRICS_PORT}") -> str:
    """The Corefile. Defaults are the in-cluster ones (in-cluster API access through the
    ServiceAccount); ``bind``/``kubeconfig``/addresses let the same text run as a local
    process against a control plane (tests/test_dns.py)."""
    zones = (cluster_domain, "in-addr.arpa", "ip6.arpa")
    bind_line = [f"    bind {bind}"] if bind else []
    kubeconfig_line = [f"        kubeconfig {kubeconfig}"] if kubeconfig else []
    metrics_line = [f"    prometheus {metrics}"] if metrics else []
    lines = [
        "# Cluster names only: the kubernetes plugin answers these zones (services, pods,",
        "# reverse lookups of their addresses); no fallthrough, nothing is forwarded.",
        " ".join(f"{zone}:{port}" for zone in zones) + " {",
        *bind_line,
        "    errors",
        f"    health {health} {{",
        "        lameduck 5s",
        "    }",
        # 200 once the kubernetes plugin has synced its caches: the readiness probe.
        f"    ready {ready}",
        f"    kubernetes {' '.join(zones)} {{",
        *kubeconfig_line,
        # `insecure`: answers pod A records without watching every Pod (no RBAC on pods).
        "        pods insecure",
        "        ttl 30",
        "    }",
        *metrics_line,
        "    cache 30",
        "    loadbalance",
        "    reload",
        "}",
        "# No forward plugin on purpose: there is no outside network to forward to. Every",
        "# other name fails fast with NXDOMAIN instead of waiting for a timeout.",
        f".:{port} {{",
        *bind_line,
        "    errors",
        "    template ANY ANY {",
        "        rcode NXDOMAIN",
        "    }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def _meta(name: str, namespaced: bool = True, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": dict(LABELS), **extra}
    if namespaced:
        meta["namespace"] = NAMESPACE
    return meta


def rbac() -> list[dict[str, Any]]:
    """What the kubernetes plugin lists and watches (v1.15, ``pods insecure``): Services,
    Namespaces and EndpointSlices; read-only, cluster-wide."""
    role_name = f"system:{NAME}"
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(NAME)},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": _meta(role_name, namespaced=False),
            "rules": [
                {"apiGroups": [""], "resources": ["services", "namespaces"],
                 "verbs": ["list", "watch"]},
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                 "verbs": ["list", "watch"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": _meta(role_name, namespaced=False),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": role_name},
            "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}],
        },
    ]


def _deployment(image: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": _meta(NAME),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": dict(LABELS)},
            "template": {
                "metadata": {"labels": dict(LABELS)},
                "spec": {
                    "serviceAccountName": NAME,
                    "priorityClassName": "system-cluster-critical",
                    # CoreDNS must not be its own nameserver; it asks no one anyway.
                    "dnsPolicy": "Default",
                    "securityContext": {
                        "runAsNonRoot": True, "runAsUser": RUN_AS, "runAsGroup": RUN_AS,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [{
                        "name": NAME,
                        "image": image,
                        # Loaded into containerd by the harness; no registry to pull from.
                        "imagePullPolicy": "Never",
                        "args": ["-conf", "/etc/coredns/Corefile"],
                        "ports": [
                            {"name": "dns", "containerPort": CONTAINER_DNS_PORT,
                             "protocol": "UDP"},
                            {"name": "dns-tcp", "containerPort": CONTAINER_DNS_PORT,
                             "protocol": "TCP"},
                            {"name": "metrics", "containerPort": METRICS_PORT,
                             "protocol": "TCP"},
                        ],
                        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"},
                                      "limits": {"memory": "170Mi"}},
                        "securityContext": {
                            "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]},
                            "readOnlyRootFilesystem": True,
                        },
                        "livenessProbe": {
                            "httpGet": {"path": "/health", "port": HEALTH_PORT},
                            "initialDelaySeconds": 30, "timeoutSeconds": 5,
                            "failureThreshold": 5,
                        },
                        "readinessProbe": {
                            "httpGet": {"path": "/ready", "port": READY_PORT},
                            "periodSeconds": 2,
                        },
                        "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns",
                                          "readOnly": True}],
                    }],
                    "volumes": [{"name": "config", "configMap": {
                        "name": NAME, "items": [{"key": "Corefile", "path": "Corefile"}]}}],
                },
            },
        },
    }


def _service(cluster_ip: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": _meta(SERVICE_NAME, labels={
            **LABELS, "kubernetes.io/name": "CoreDNS",
            "kubernetes.io/cluster-service": "true"}),
        "spec": {
            "selector": dict(LABELS),
            # Fixed: kubelet's clusterDNS already names it for every Pod.
            "clusterIP": cluster_ip,
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": "dns"},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": "dns-tcp"},
                {"name": "metrics", "port": METRICS_PORT, "protocol": "TCP",
                 "targetPort": "metrics"},
            ],
        },
    }


def manifests(net: NodeNetwork, image: str,
              cluster_domain: str = CLUSTER_DOMAIN) -> list[dict[str, Any]]:
    """Every object, in apply order (RBAC and config before the Pods that need them)."""
    config_map = {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(NAME),
        "data": {"Corefile": corefile(cluster_domain)},
    }
    return [*rbac(), config_map, _deployment(image), _service(net.dns_service_ip)]


def install(kubectl: Kubectl, net: NodeNetwork, image: str,
            cluster_domain: str = CLUSTER_DOMAIN, *, wait: bool = True,
            timeout: float = READY_TIMEOUT_SECONDS) -> None:
    """Apply the manifests once the API is up (the image must already be loaded into the
    node's containerd); with ``wait``, return when the Deployment is rolled out, i.e.
    CoreDNS is Ready and serving."""
    kubectl.apply(manifests(net, image, cluster_domain))
    if wait:
        kubectl.run("rollout", "status", f"deployment/{NAME}", "-n", NAMESPACE,
                    f"--timeout={timeout:g}s", timeout=timeout + 10)
