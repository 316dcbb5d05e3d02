"""Argo CD for real, out of cluster, as Argo CD's own ``make start-e2e-local`` runs it: Redis,
the repo-server and the application controller (one binary built from the pinned module,
controlplane/argocd.py) as supervised processes against a control plane, the objects they
need (CRDs, a labelled ``argocd-cm`` holding the shipped health script, ``argocd-secret``, the
``default`` AppProject the API server would create), and a Git repository on loopback.

Shared by tests/argocd (endpoints from Git, against the session's control plane) and
tests/e2e (the chart as an Application, on the real node, where its Pods run).
docs/install.md, "Argo CD", quotes the objects built here."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from git_server import GitServer
from inference_devkit.controlplane import argocd, binaries
from inference_devkit.controlplane.binaries import BinaryUnavailable
from inference_devkit.controlplane.kubectl import Kubectl
from inference_devkit.devstack.processes import ProcessFailed, Service
from inference_devkit.loopback import free_port
from inference_devkit.waiting import poll
from inference_operator.api.models import GROUP, KIND

REPO = Path(__file__).resolve().parents[1]
HEALTH_LUA = REPO / "docs" / "argocd-health.lua"
HEALTH_KEY = f"resource.customizations.health.{GROUP}_{KIND}"
NAMESPACE = "argocd"
API_VERSION = "argoproj.io/v1alpha1"
IN_CLUSTER = "https://kubernetes.default.svc"
# Cascade delete: the Application's resources go before it does.
RESOURCES_FINALIZER = "resources-finalizer.argocd.argoproj.io"
REFRESH = "argocd.argoproj.io/refresh"
# The settings informer only sees argocd-cm and argocd-secret with this label.
PART_OF = {"app.kubernetes.io/part-of": "argocd"}


def unavailable() -> str | None:
    """Why Argo CD cannot run here, or None; the tests skip with it."""
    if shutil.which("redis-server") is None:
        return "redis-server is not installed (make argocd installs it)"
    if shutil.which("git") is None:
        return "git is not installed"
    try:
        argocd.resolve()
    except BinaryUnavailable as error:
        return f"Argo CD unavailable: {error}"
    return None


def argocd_cm() -> dict[str, Any]:
    """The one setting we add to argocd-cm: the health check, read from the file the docs
    ship (docs/install.md patches the same key in)."""
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "argocd-cm", "namespace": NAMESPACE, "labels": PART_OF},
            "data": {HEALTH_KEY: HEALTH_LUA.read_text()}}


def application(name: str, repo_url: str, path: str, namespace: str, *,
                helm_values: dict[str, Any] | None = None,
                sync_options: tuple[str, ...] = ()) -> dict[str, Any]:
    """An Application of one folder (plain manifests) or, with ``helm_values``, of a chart,
    synced automatically with prune and self-heal."""
    source: dict[str, Any] = {"repoURL": repo_url, "targetRevision": "main", "path": path}
    if helm_values is None:
        # An explicit type: a folder holding a kustomization.yaml would otherwise be built
        # with kustomize.
        source["directory"] = {"recurse": False}
    else:
        source["helm"] = {"releaseName": name, "valuesObject": helm_values}
    sync_policy: dict[str, Any] = {
        "automated": {"prune": True, "selfHeal": True},
        # A refused sync is retried (automated sync's default); refresh: each retry takes
        # the latest commit, so a fix lands at the next retry, not after the last one.
        "retry": {"limit": 5, "refresh": True}}
    if sync_options:
        sync_policy["syncOptions"] = list(sync_options)
    return {
        "apiVersion": API_VERSION, "kind": "Application",
        "metadata": {"name": name, "namespace": NAMESPACE, "finalizers": [RESOURCES_FINALIZER]},
        "spec": {"project": "default", "source": source,
                 "destination": {"server": IN_CLUSTER, "namespace": namespace},
                 "syncPolicy": sync_policy},
    }


@dataclass
class ArgoCD:
    """The running Argo CD, its Git repository, and the Applications the tests created."""

    kubectl: Kubectl
    git: GitServer
    services: list[Service]
    applications: list[str] = field(default_factory=list)

    def commit(self, files: dict[str, str | None], message: str = "update") -> str:
        return self.git.commit(files, message)

    def create(self, app: dict[str, Any]) -> str:
        self.kubectl.apply(app)
        name = app["metadata"]["name"]
        self.applications.append(name)
        return name

    def get(self, name: str) -> dict[str, Any]:
        return self.kubectl.get("application", name, NAMESPACE)

    def refresh(self, name: str, level: str = "normal") -> None:
        """What a Git webhook or ``argocd app get --refresh`` does: compare with the latest
        commit now instead of at the next resync (``hard``: without the manifest cache)."""
        self.kubectl.run("annotate", "--overwrite", "-n", NAMESPACE, "application", name,
                         f"{REFRESH}={level}")

    def wait(self, name: str, *, revision: str | None = None, sync: str | None = "Synced",
             health: str | None = None, timeout: float = 60) -> dict[str, Any]:
        """The Application once its last sync applied ``revision`` and its sync and health
        status are as given (None: any); refreshed first, so a new commit is seen now."""
        self.refresh(name)
        seen: dict[str, Any] = {}

        def reached() -> dict[str, Any] | None:
            app = seen["last"] = self.get(name)
            status = app.get("status") or {}
            operation = status.get("operationState") or {}
            applied = (revision is None
                       or (operation.get("syncResult") or {}).get("revision") == revision)
            settled = revision is None or operation.get("phase") in ("Succeeded", "Failed",
                                                                     "Error")
            ok = (applied and settled
                  and (sync is None or (status.get("sync") or {}).get("status") == sync)
                  and (health is None or (status.get("health") or {}).get("status") == health))
            return app if ok else None

        try:
            return poll(reached, timeout=timeout, interval=0.2,
                        message=f"Application {name} never reached revision={revision} "
                                f"sync={sync} health={health}")
        except TimeoutError as error:  # what it did instead, for the failure report
            raise TimeoutError(f"{error}; its status: {summary(seen.get('last', {}))}") from None

    def delete(self, name: str, timeout: float = 90) -> None:
        """Delete with its resources (the finalizer), while the operator still runs. A
        sync still retrying is ended first, as `argocd app terminate-op` does: the
        controller finalizes no Application with an operation running."""
        phase = ((self.get(name).get("status") or {}).get("operationState") or {}).get("phase")
        if phase == "Running":
            self.kubectl.run("patch", "application", name, "-n", NAMESPACE, "--type=merge",
                             "-p", '{"status": {"operationState": {"phase": "Terminating"}}}')
        self.kubectl.run("delete", "application", name, "-n", NAMESPACE, "--ignore-not-found",
                         f"--timeout={timeout:g}s", timeout=timeout + 10)
        self.applications.remove(name)

    def log_tails(self) -> str:
        return "".join(service.log_tail() for service in self.services)


def summary(app: dict[str, Any]) -> dict[str, Any]:
    """The parts of an Application's status a failure report needs."""
    status = app.get("status") or {}
    operation = status.get("operationState") or {}
    return {"sync": status.get("sync"), "health": status.get("health"),
            "conditions": status.get("conditions"),
            "operation": {"phase": operation.get("phase"), "message": operation.get("message"),
                          "resources": (operation.get("syncResult") or {}).get("resources")}}


def resource(app: dict[str, Any], kind: str, name: str) -> dict[str, Any]:
    """One entry of the Application's ``status.resources`` (health included: the controller
    runs with --persist-resource-health)."""
    for item in (app.get("status") or {}).get("resources") or ():
        if item["kind"] == kind and item["name"] == name:
            return item
    return {}


@contextmanager
def running_argocd(kubectl: Kubectl, kubeconfig: Path, work: Path) -> Iterator[ArgoCD]:
    """Argo CD against the cluster of ``kubeconfig``, with a Git repository of its own;
    everything stopped on leaving (the Applications deleted first, with their resources)."""
    built = argocd.resolve()
    for crd in built.crds:
        # Over 256 KiB: client-side apply's last-applied annotation cannot hold them.
        kubectl.run("apply", "--server-side", "--force-conflicts", "-f", str(crd))
    for crd in ("applications.argoproj.io", "appprojects.argoproj.io"):
        # Polled: `kubectl wait` fails outright on a CRD created a moment ago, whose
        # status has no conditions yet.
        poll(lambda crd=crd: any(
            c["type"] == "Established" and c["status"] == "True"
            for c in (kubectl.get("crd", crd).get("status") or {}).get("conditions") or ()),
            timeout=30, interval=0.1, message=f"{crd} never Established")
    kubectl.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    kubectl.apply([
        argocd_cm(),
        {"apiVersion": "v1", "kind": "Secret",
         "metadata": {"name": "argocd-secret", "namespace": NAMESPACE, "labels": PART_OF},
         # What the API server would generate at its first start; the controller needs it.
         "stringData": {"server.secretkey": secrets.token_urlsafe(32)}},
        {"apiVersion": API_VERSION, "kind": "AppProject",
         "metadata": {"name": "default", "namespace": NAMESPACE},
         # The API server's own default project (server.go initializeDefaultProject).
         "spec": {"sourceRepos": ["*"], "destinations": [{"server": "*", "namespace": "*"}],
                  "clusterResourceWhitelist": [{"group": "*", "kind": "*"}]}},
    ])
    git = GitServer(work / "git").start()
    redis_port = free_port()
    services = _services(built, kubeconfig, work, redis_port)
    system = ArgoCD(kubectl, git, services)
    try:
        redis, repo_server, controller = services
        redis.start()
        _wait_listening(redis, redis_port)
        repo_server.start(wait=60)
        controller.start(wait=60)
        yield system
    finally:
        try:
            for name in list(system.applications):
                system.delete(name)
        finally:
            for service in reversed(services):
                service.stop()
            git.stop()


def _services(built: argocd.ArgoCD, kubeconfig: Path, work: Path,
              redis_port: int) -> list[Service]:
    repo_port = free_port()
    repo_metrics, controller_metrics = free_port(), free_port()
    data = {variable: work / folder for variable, folder in (
        ("ARGOCD_TLS_DATA_PATH", "tls"), ("ARGOCD_SSH_DATA_PATH", "ssh"),
        ("ARGOCD_GNUPGHOME", "gnupg"), ("ARGOCD_GPG_DATA_PATH", "gpg-keys"),
        ("ARGOCD_PLUGINSOCKFILEPATH", "plugins"), ("TMPDIR", "tmp"))}
    for folder in data.values():
        folder.mkdir(parents=True, exist_ok=True)
    helm = binaries.resolve("helm")
    common_env: dict[str, str | None] = {
        # TMPDIR too: the repo-server clones into $TMPDIR/_argocd-repo.
        **{variable: str(folder) for variable, folder in data.items()},
        # The repo-server runs git, helm and Argo CD's own scripts: the project's helm
        # first (v4.3.2, the one Argo CD v3.6 is released with).
        "PATH": os.pathsep.join((str(built.helpers), str(helm.parent),
                                 os.environ.get("PATH", "/usr/bin:/bin"))),
        # Loopback only: never through a proxy from the environment.
        "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
        "HOME": str(work / "home"),
    }
    redis = Service("redis", ["--bind", "127.0.0.1", "--port", str(redis_port), "--save", "",
                              "--appendonly", "no", "--dir", str(work)],
                    work / "redis.log", program=(shutil.which("redis-server") or "redis-server",))
    repo_server = Service(
        "argocd-repo-server",
        ["--address", "127.0.0.1", "--port", str(repo_port), "--disable-tls",
         # No mTLS either: its client CA path defaults to a file in the Pod.
         "--client-ca-path", "",
         "--metrics-address", "127.0.0.1", "--metrics-port", str(repo_metrics),
         "--redis", f"127.0.0.1:{redis_port}", "--loglevel", "info"],
        work / "argocd-repo-server.log",
        env={**common_env, "ARGOCD_BINARY_NAME": "argocd-repo-server",
             "ARGOCD_GPG_ENABLED": "false"},
        health_url=f"http://127.0.0.1:{repo_metrics}/healthz", program=(str(built.binary),))
    controller = Service(
        "argocd-application-controller",
        [f"--kubeconfig={kubeconfig}", "--namespace", NAMESPACE,
         "--redis", f"127.0.0.1:{redis_port}", "--repo-server", f"127.0.0.1:{repo_port}",
         "--repo-server-plaintext", "--metrics-port", str(controller_metrics),
         # Each endpoint's health in status.resources, where kubectl (and the tests) read it.
         "--persist-resource-health",
         # The tests ask for each refresh; no periodic one lands mid-observation.
         "--app-resync", "600", "--status-processors", "2", "--operation-processors", "2",
         "--loglevel", "info"],
        work / "argocd-application-controller.log",
        # The in-cluster destination reads $KUBECONFIG, not the flag, out of a Pod.
        env={**common_env, "ARGOCD_BINARY_NAME": "argocd-application-controller",
             "ARGOCD_FAKE_IN_CLUSTER": "true", "KUBECONFIG": str(kubeconfig),
             "HOSTNAME": "argocd-application-controller-0"},
        health_url=f"http://127.0.0.1:{controller_metrics}/healthz", program=(str(built.binary),))
    return [redis, repo_server, controller]


def _wait_listening(service: Service, port: int) -> None:
    def listening() -> bool:
        if not service.running():
            raise ProcessFailed(f"{service.name} exited\n{service.log_tail()}")
        with socket.socket() as probe:
            probe.settimeout(0.5)
            return probe.connect_ex(("127.0.0.1", port)) == 0

    poll(listening, timeout=20, interval=0.05, message=f"{service.name} never listened")
