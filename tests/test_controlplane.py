"""The control plane the rest of the suite relies on is a real Kubernetes API server."""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from inference_devkit.controlplane import binaries, harnessstate, launcher
from inference_devkit.controlplane.kubectl import Kubectl, KubectlError
from inference_devkit.devstack.processes import Service
from inference_devkit.waiting import poll

WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.harness.example.test"},
    "spec": {
        "group": "harness.example.test",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["size"],
                                "properties": {
                                    "size": {"type": "integer", "minimum": 1},
                                },
                            }
                        },
                    }
                },
            }
        ],
    },
}


def widget(name: str, size: object) -> dict:
    return {
        "apiVersion": "harness.example.test/v1",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": {"size": size},
    }


@pytest.fixture(scope="module")
def widget_crd(kubectl: Kubectl) -> None:
    kubectl.apply(WIDGET_CRD)
    kubectl.wait_for_condition("crd/widgets.harness.example.test", "Established", timeout=30)


def test_a_namespaced_crd_is_installed_and_served(widget_crd, kubectl, namespace):
    kubectl.apply(widget("w1", 3), namespace)

    stored = kubectl.get("widgets", "w1", namespace)

    assert stored["spec"] == {"size": 3}
    assert stored["metadata"]["namespace"] == namespace
    assert stored["metadata"]["uid"]  # assigned by the API server, not echoed back


def test_the_api_server_rejects_an_object_that_violates_the_schema(
    widget_crd, kubectl, namespace
):
    with pytest.raises(KubectlError) as wrong_type:
        kubectl.apply(widget("w2", "big"), namespace)
    assert 'spec.size: Invalid value: "string": spec.size in body must be of type integer' in (
        wrong_type.value.stderr
    )

    with pytest.raises(KubectlError) as below_minimum:
        kubectl.apply(widget("w3", 0), namespace)
    assert "spec.size in body should be greater than or equal to 1" in below_minimum.value.stderr

    listed = json.loads(kubectl.run("get", "widgets", "-n", namespace, "-o", "json").stdout)
    assert listed["items"] == []


def test_rbac_denies_a_service_account_until_a_role_binding_grants_it(
    kubectl, namespace, service_account_kubeconfig
):
    sa_kubeconfig = service_account_kubeconfig(namespace, "reader")
    api = config.new_client_from_config(config_file=str(sa_kubeconfig))
    core = client.CoreV1Api(api)

    with pytest.raises(ApiException) as denied:
        core.list_namespaced_secret(namespace)
    assert denied.value.status == 403
    assert f"system:serviceaccount:{namespace}:reader" in denied.value.body

    kubectl.run("create", "role", "secret-reader", "--verb=list", "--resource=secrets",
                "-n", namespace)
    kubectl.run("create", "rolebinding", "secret-reader", "--role=secret-reader",
                f"--serviceaccount={namespace}:reader", "-n", namespace)

    def can_list() -> bool:
        try:
            core.list_namespaced_secret(namespace)
        except ApiException as error:
            if error.status != 403:
                raise
            return False
        return True

    poll(can_list, timeout=10, message="RoleBinding not honoured")
    # The grant is exactly what was bound: other namespaces stay closed.
    with pytest.raises(ApiException) as elsewhere:
        core.list_namespaced_secret("default")
    assert elsewhere.value.status == 403
    api.close()


def test_cached_binaries_are_reused_without_building(control_plane):
    if os.environ.get("KUBEBUILDER_ASSETS"):
        pytest.skip("binaries come from KUBEBUILDER_ASSETS")
    for name in binaries.BINARY_NAMES:
        path = binaries.resolve(name, build_missing=False)
        assert path.is_file() and os.access(path, os.X_OK)
        assert binaries.cache_root() in path.parents


def test_versions_are_pinned_in_the_go_modules():
    sources = binaries.envtest_sources()
    assert sources is not None
    versions = {
        name: binaries.pinned_version(tool, sources) for name, tool in binaries.TOOLS.items()
    }
    assert versions["kube-apiserver"] == versions["kubectl"]
    major_minor = tuple(int(part) for part in versions["kube-apiserver"][1:].split(".")[:2])
    assert major_minor >= (1, 34)
    assert versions["etcd"].startswith(("v3.5", "v3.6", "v3.7"))
    assert versions["helm"].startswith("v4.")
    # The cache path is keyed by that version, so a pin change means a new build.
    apiserver = binaries.TOOLS["kube-apiserver"]
    assert versions["kube-apiserver"] in str(binaries.cached_path(apiserver, sources))


def test_kubebuilder_assets_is_used_as_is(tmp_path, monkeypatch):
    for name in binaries.BINARY_NAMES:
        (tmp_path / name).write_text("#!/bin/sh\n")
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(tmp_path))
    assert binaries.resolve("kube-apiserver") == tmp_path / "kube-apiserver"

    (tmp_path / "etcd").unlink()
    with pytest.raises(binaries.BinaryUnavailable, match=r"KUBEBUILDER_ASSETS=.* has no etcd"):
        binaries.resolve("etcd")


def test_a_startup_failure_shows_the_last_lines_of_both_logs(tmp_path, monkeypatch):
    real = {name: binaries.resolve(name) for name in binaries.BINARY_NAMES}
    assets = tmp_path / "assets"
    assets.mkdir()
    for name, path in real.items():
        (assets / name).symlink_to(path)
    (assets / "etcd").unlink()
    broken = assets / "etcd"
    broken.write_text("#!/bin/sh\necho 'etcd: cannot open data dir: disk on fire' >&2\nexit 3\n")
    broken.chmod(0o755)
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(assets))
    monkeypatch.delenv("USE_EXISTING_CLUSTER", raising=False)

    with pytest.raises(launcher.ControlPlaneError) as failure:
        launcher.start()

    message = str(failure.value)
    assert "etcd exited during startup" in message
    assert "disk on fire" in message
    assert "--- last lines of kube-apiserver" in message


def test_use_existing_cluster_starts_nothing(control_plane, monkeypatch, kubectl):
    monkeypatch.setenv("USE_EXISTING_CLUSTER", "true")
    monkeypatch.setenv("KUBECONFIG", str(control_plane.kubeconfig))

    plane = launcher.start()

    assert not plane.is_local and plane.processes == []
    assert plane.kubeconfig == control_plane.kubeconfig
    Kubectl(kubectl.binary, plane.kubeconfig).run("get", "ns", "default")


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if text.encode() in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def test_controlplane_command_serves_until_ctrl_c_and_leaves_nothing(tmp_path, kubectl):
    kubeconfig = tmp_path / "kubeconfig"
    command = Service("controlplane", ["controlplane", "--kubeconfig", str(kubeconfig)],
                      tmp_path / "controlplane.log", env={"USE_EXISTING_CLUSTER": None})
    command.start()
    try:
        output = poll(lambda: "Ctrl-C" in command.log_text() and command.log_text(),
                      timeout=120, message="controlplane never said it was ready")
        assert f"kubeconfig: {kubeconfig}" in output, output
        data_dir = next(line.split(":", 1)[1].strip()
                        for line in output.splitlines() if line.startswith("data:"))

        namespaces = Kubectl(kubectl.binary, kubeconfig).run("get", "ns").stdout
        assert "kube-system" in namespaces
        assert _processes_mentioning(data_dir), "etcd and kube-apiserver should be running"

        assert command.popen is not None
        command.popen.send_signal(signal.SIGINT)
        assert command.popen.wait(60) == 0
    finally:
        command.kill()
    assert "control plane stopped" in command.log_text()
    assert _processes_mentioning(data_dir) == []
    assert not Path(data_dir).exists()
    assert not kubeconfig.exists()


def test_the_next_controlplane_command_cleans_up_after_a_killed_one(tmp_path):
    state = tmp_path / "state"  # its own: harnesses of other sessions stay out of it
    env = {"USE_EXISTING_CLUSTER": None, harnessstate.STATE_DIR_ENV: str(state)}

    def start(name: str) -> tuple[Service, str]:
        command = Service(name, ["controlplane", "--kubeconfig", str(tmp_path / name)],
                          tmp_path / f"{name}.log", env=env)
        command.start()
        output = poll(lambda: "Ctrl-C" in command.log_text() and command.log_text(),
                      timeout=120, message=f"{name} controlplane never said it was ready")
        return command, next(line.split(":", 1)[1].strip()
                             for line in output.splitlines() if line.startswith("data:"))

    first, first_dir = start("first")
    try:
        first.kill()  # SIGKILL; its children lead sessions of their own and stay
        assert _processes_mentioning(first_dir), "a killed harness leaves its processes"
        second, second_dir = start("second")
        try:
            assert re.search(
                rf"^cleaned up after a control plane whose harness died \(pid {first.pid}\): "
                r"\d processes \(etcd, kube-apiserver.*\).*, work dir ", second.log_text(),
                re.M), second.log_text()
            assert _processes_mentioning(first_dir) == []
            assert not Path(first_dir).exists()
            assert second.popen is not None
            second.popen.send_signal(signal.SIGINT)
            assert second.popen.wait(60) == 0
        finally:
            second.kill()
    finally:
        first.kill()
    assert _processes_mentioning(second_dir) == []
    assert list(state.iterdir()) == []
    cgroups = harnessstate.cgroup2_root()
    if cgroups is not None:
        parent = cgroups / harnessstate.CGROUP_PARENT
        mine = [p for p in parent.glob("controlplane-*")
                if p.name.split("-")[1] in (str(first.pid), str(second.pid))]
        assert mine == []
