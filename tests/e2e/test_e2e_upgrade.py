"""`helm upgrade` while a client Pod sends a completion every 100 ms. First from the chart
as it was when sidecar mode was its default (the gateway then ran as the operator's
ServiceAccount) to this chart's defaults, fleet mode, as a user who runs `helm upgrade`
with the values they gave at install: the data plane must come back, now served by
gateways that cannot read Secrets cluster-wide. Then an upgrade that changes a pod
annotation, rolled by the fleet. Then `helm uninstall` leaves no Pod of the release and
keeps the CRD (docs/install.md, crds.keep). The figures of both go to docs/install.md."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from e2e_support import (
    Disruption,
    Request,
    caller_facing_service_accounts,
    can_i,
    completion,
    logs,
    parse_loop,
    start_client,
)

from inference_devkit.checkout import checkout_path
from inference_devkit.controlplane.kubectl import Kubectl
from inference_devkit.install import (
    Installation,
    helm,
    image_values,
    install_chart,
    pods,
)
from inference_devkit.waiting import poll

INTERVAL = 0.1
MAX_REQUESTS = 1200
MAX_SECONDS = 120.0
CALM = 30  # successes in a row after the upgrade that end the measurement
CRD = "crd/inferenceendpoints.inference-operator.dev"
# The last commit whose chart defaulted to sidecar mode.
SIDECAR_DEFAULT_CHART = "e866e508e457a2567f3cfc4efaa4e11bbd38279d"


def previous_chart(directory: Path) -> Path:
    """The chart of SIDECAR_DEFAULT_CHART, from the repository's history (a shallow clone
    or an exported tree has none: the upgrade tests skip there, saying so)."""
    found = subprocess.run(
        ["git", "-C", str(checkout_path()), "archive", "--format=tar", SIDECAR_DEFAULT_CHART,
         "charts/inference-operator"], capture_output=True, timeout=60)
    if found.returncode != 0:
        pytest.skip(f"the previous chart (commit {SIDECAR_DEFAULT_CHART[:7]}) is not in this "
                    f"checkout's history: {found.stderr.decode().strip()}")
    archive = found.stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(directory, filter="data")
    return directory / "charts" / "inference-operator"


@pytest.fixture(scope="module")
def installation(cluster, kubectl: Kubectl, project_image: tuple[str, str | None],
                 emulator: str, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[Installation]:
    """The release installed with the previous chart's defaults (sidecar mode)."""
    chart = previous_chart(tmp_path_factory.mktemp("previous-chart"))
    yield from install_chart(cluster, kubectl, project_image[0], emulator, chart=chart)


def upgrade(cluster, installation: Installation, *values: str) -> None:
    """``helm upgrade --wait`` of the release to the checkout's chart with ``values``."""
    result = helm(cluster, "upgrade", "e2e", str(checkout_path("charts", "inference-operator")),
                  "--namespace", installation.namespace, *values, "--wait", "--timeout=180s")
    assert result.returncode == 0, result.stderr


def measured(kubectl: Kubectl, client_namespace: str, image: str, url: str,
             upgrade: Callable[[], None], label: str) -> Disruption:
    """A client Pod calling ``url`` every INTERVAL before, during and after ``upgrade``,
    until CALM successes in a row after it: what it saw."""
    request = completion(url)
    loop = start_client(kubectl, client_namespace, image, "loop", json.dumps({
        "url": request["url"], "body": request["body"], "interval": INTERVAL,
        "count": MAX_REQUESTS, "seconds": MAX_SECONDS}))

    def outcomes() -> list[Request]:
        return parse_loop(logs(kubectl, client_namespace, loop))

    poll(lambda: [r.outcome for r in outcomes()].count("200") >= 10, timeout=90, interval=0.5,
         message="the client loop never got a completion before the upgrade")
    upgrade()
    upgraded_at = time.time()

    def calm() -> bool:
        recent = [r.outcome for r in outcomes() if r.at > upgraded_at]
        return len(recent) >= CALM and set(recent[-CALM:]) == {"200"}

    poll(calm, timeout=60, interval=0.5, message="the data plane did not come back")
    disruption = Disruption.of(outcomes())
    # Gone before the uninstall: its lookups of the removed Service would leave NXDOMAIN
    # in CoreDNS's cache (30 s) for the next install of the same name.
    kubectl.run("delete", "pod", "-n", client_namespace, loop, "--timeout=60s", timeout=70)
    print(f"[e2e] {label} disruption ({datetime.now(UTC):%Y-%m-%d}, a completion every "
          f"{INTERVAL * 1000:.0f} ms at most): {disruption}", flush=True)
    assert disruption.total - disruption.failed >= 10 + CALM
    return disruption


def test_helm_upgrade_from_a_sidecar_release_to_the_fleet_default_keeps_serving(
    cluster, kubectl: Kubectl, installation: Installation, team, client_namespace: str,
    project_image: tuple[str, str | None], emulator: str,
):
    (sidecar,) = caller_facing_service_accounts(kubectl, installation)  # the operator's
    assert can_i(kubectl, installation.namespace, sidecar,
                 "get", "secrets", "-n", "kube-system") == "yes"
    name = next(iter(team.endpoints))
    url = kubectl.get("iep", name, team.namespace)["status"]["url"]

    # What a user does: this chart, the values they gave at install (not --reuse-values,
    # which would keep the previous chart's defaults, sidecar mode).
    measured(kubectl, client_namespace, project_image[0], url, lambda: upgrade(
        cluster, installation, *image_values(project_image[0]),
        "--set", f"anthropicBaseUrl={emulator}"), "sidecar -> fleet")
    # The status URL is the same Service, now in front of the fleet's own identity.
    assert kubectl.get("iep", name, team.namespace)["status"]["url"] == url
    (serving,) = caller_facing_service_accounts(kubectl, installation)
    assert serving == f"{installation.deployment}-gateway"
    assert can_i(kubectl, installation.namespace, serving,
                 "get", "secrets", "-n", "kube-system") == "no"
    operator_pods = [p for p in pods(kubectl, installation.namespace,
                                     installation.operator_selector)
                     if not p["metadata"].get("deletionTimestamp")]
    assert [[c["name"] for c in p["spec"]["containers"]] for p in operator_pods] == [
        ["operator"]]


def test_helm_upgrade_rolls_the_fleet_and_uninstall_keeps_the_crd(
    cluster, kubectl: Kubectl, installation: Installation, team, client_namespace: str,
    project_image: tuple[str, str | None],
):
    name = next(iter(team.endpoints))
    url = kubectl.get("iep", name, team.namespace)["status"]["url"]

    measured(kubectl, client_namespace, project_image[0], url, lambda: upgrade(
        cluster, installation, "--reuse-values",
        "--set-string", f"podAnnotations.e2e/upgraded-at={int(time.time())}"), "upgrade")
    annotations = pods(kubectl, installation.namespace, installation.selector)[0][
        "metadata"].get("annotations", {})
    assert "e2e/upgraded-at" in annotations

    # helm uninstall (the fixture does it again at teardown, harmlessly).
    kubectl.run("delete", "iep", "--all", "-n", team.namespace, "--timeout=60s", timeout=70)
    uninstall = helm(cluster, "uninstall", "e2e", "--namespace", installation.namespace,
                     "--wait", "--timeout=120s")
    assert uninstall.returncode == 0, uninstall.stderr
    assert "kept due to the resource policy" in uninstall.stdout + uninstall.stderr
    poll(lambda: not pods(kubectl, installation.namespace, installation.selector),
         timeout=60, interval=0.5, message="a Pod of the release is still there")
    kubectl.run("get", CRD)  # kept: NotFound would raise
