"""`helm upgrade` that changes a pod annotation while a client Pod sends a completion every
100 ms: the one-replica Recreate sidecar drops requests for a few seconds (expected until
the gateway fleet; docs/benchmarks.md keeps the baseline), and the data plane must come
back. Then `helm uninstall` leaves no Pod of the release and keeps the CRD
(docs/install.md, crds.keep)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

from e2e_support import (
    Disruption,
    Installation,
    Request,
    completion,
    elapsed,
    helm,
    logs,
    parse_loop,
    pods,
    start_client,
)

from inference_operator.checkout import checkout_path
from inference_operator.controlplane.kubectl import Kubectl
from inference_operator.waiting import poll

INTERVAL = 0.1
MAX_REQUESTS = 1200
MAX_SECONDS = 120.0
CALM = 30  # successes in a row after the upgrade that end the measurement
CRD = "crd/inferenceendpoints.inference-operator.dev"


def test_helm_upgrade_drops_requests_briefly_and_uninstall_keeps_the_crd(
    cluster, kubectl: Kubectl, installation: Installation, team, client_namespace: str,
    project_image: tuple[str, str | None],
):
    name = next(iter(team.endpoints))
    url = kubectl.get("iep", name, team.namespace)["status"]["url"]
    request = completion(url)
    loop = start_client(kubectl, client_namespace, project_image[0], "loop", json.dumps({
        "url": request["url"], "body": request["body"], "interval": INTERVAL,
        "count": MAX_REQUESTS, "seconds": MAX_SECONDS}))

    def outcomes() -> list[Request]:
        return parse_loop(logs(kubectl, client_namespace, loop))

    poll(lambda: [r.outcome for r in outcomes()].count("200") >= 10, timeout=90, interval=0.5,
         message="the client loop never got a completion before the upgrade")
    started = time.monotonic()
    upgrade = helm(cluster, "upgrade", "e2e", str(checkout_path("charts", "inference-operator")),
                   "--namespace", installation.namespace, "--reuse-values",
                   "--set-string", f"podAnnotations.e2e/upgraded-at={int(time.time())}",
                   "--wait", "--timeout=180s")
    assert upgrade.returncode == 0, upgrade.stderr
    upgraded_at = time.time()
    elapsed("helm upgrade --wait", started)

    def calm() -> bool:
        recent = [r.outcome for r in outcomes() if r.at > upgraded_at]
        return len(recent) >= CALM and set(recent[-CALM:]) == {"200"}

    poll(calm, timeout=60, interval=0.5, message="the data plane did not come back")
    disruption = Disruption.of(outcomes())
    # Gone before the uninstall: its lookups of the removed Service would leave NXDOMAIN
    # in CoreDNS's cache (30 s) for the next install of the same name.
    kubectl.run("delete", "pod", "-n", client_namespace, loop, "--timeout=60s", timeout=70)
    print(f"[e2e] upgrade disruption ({datetime.now(UTC):%Y-%m-%d}, a completion every "
          f"{INTERVAL * 1000:.0f} ms at most): {disruption}", flush=True)
    # Not zero failures: a Recreate of the one pod drops requests until the gateway fleet.
    assert disruption.total - disruption.failed >= 10 + CALM
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
