"""``inference-operator dev``: the whole product on one machine, for trying it out.

A local control plane, the CRD and admission policies, the Anthropic emulator (or the
real API when ``ANTHROPIC_API_KEY`` is set), the gateway, the operator, and the examples.
``--check`` proves the path end to end and exits 0 or 1.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

import yaml

from inference_devkit.checkout import checkout_path
from inference_devkit.controlplane import binaries, launcher
from inference_devkit.controlplane.harnessstate import clean_up_dead
from inference_devkit.controlplane.kubectl import Kubectl, KubectlError
from inference_devkit.devstack import prometheus
from inference_devkit.devstack.processes import ProcessFailed, Service, Stack
from inference_devkit.waiting import poll
from inference_operator.anthropic import ANTHROPIC_API_URL as REAL_ANTHROPIC
from inference_operator.api.gateway_config import DEFAULT_SECRET_NAME
from inference_operator.api.manifests import crd_yaml, policies_yaml
from inference_operator.gateway.auth import DEFAULT_AUDIENCE as AUDIENCE

NAMESPACE = "default"
# examples/ lets this ServiceAccount call the example endpoint; the gateway checks callers
# as the chart's does (TokenReview with the default audience, then RBAC's invoke).
CALLER = "example-app"


class CheckFailed(RuntimeError):
    pass


def _say(out: IO[str], message: str) -> None:
    print(message, file=out, flush=True)


def _examples() -> list[dict]:
    folder = checkout_path("examples")
    if folder is None:
        raise CheckFailed("no examples/ folder next to the package (run from a checkout)")
    return [doc for path in sorted(folder.glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text()) if doc]


def _use_real_key(examples: list[dict], api_key: str) -> list[dict]:
    """Swap the placeholder in the example Secret for the real key, never printing it."""
    for doc in examples:
        if doc["kind"] == "Secret":
            doc["stringData"] = {k: api_key for k in doc.get("stringData", {})}
    return examples


def _post(url: str, body: dict, token: str) -> urllib.request.Request:
    return urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )


def caller_token(kubectl: Kubectl) -> str:
    """A token of the example caller, as ``kubectl create token`` gives it to a user."""
    return kubectl.run("create", "token", CALLER, "-n", NAMESPACE,
                       f"--audience={AUDIENCE}").stdout.strip()


def check(stack: Stack, kubectl: Kubectl, out: IO[str]) -> None:
    """Ready, one completion and one stream through the gateway; CheckFailed otherwise."""
    endpoints = json.loads(kubectl.run("get", "iep", "-n", NAMESPACE, "-o", "json").stdout)
    if not endpoints["items"]:
        raise CheckFailed("no InferenceEndpoint was created from examples/")
    for item in endpoints["items"]:
        name = item["metadata"]["name"]
        try:
            kubectl.wait_for_condition(f"iep/{name}", "Ready", NAMESPACE, timeout=60)
        except KubectlError as error:
            status = kubectl.get("iep", name, NAMESPACE).get("status", {})
            raise CheckFailed(f"{name} did not become Ready: {error}; status: "
                              f"{json.dumps(status.get('conditions'))}") from None
        _say(out, f"check: {name} is Ready")
    url = kubectl.get("iep", endpoints["items"][0]["metadata"]["name"], NAMESPACE)["status"]["url"]
    token = caller_token(kubectl)
    try:
        with urllib.request.urlopen(_post(url, {"input": "Say hello"}, token), timeout=60) as r:
            text = json.load(r)["completion"][0]["result"]
        _say(out, f"check: completion ok: {text[:60]!r}")
        deltas = 0
        with urllib.request.urlopen(_post(f"{url}/_stream", {"input": "Count"}, token),
                                    timeout=60) as r:
            for line in r:
                if line.startswith(b"event: error"):
                    raise CheckFailed(f"the stream reported an error: {r.read(500)!r}")
                if line.startswith(b"data: [DONE]"):
                    break
                deltas += line.startswith(b"data: ")
        if not deltas:
            raise CheckFailed("the stream ended without any delta")
        _say(out, f"check: stream ok: {deltas} deltas, then [DONE]")
    except urllib.error.HTTPError as error:
        raise CheckFailed(f"{error.url} answered {error.code}: {error.read()[:500]!r}") from None
    except (urllib.error.URLError, OSError) as error:
        raise CheckFailed(f"gateway unreachable at {url}: {error}") from None


def _prometheus(stack: Stack, work_dir: Path) -> Service:
    """Start a Prometheus scraping the stack's gateway and operator."""
    server = prometheus.service(work_dir / "prometheus", {
        "gateway": urlsplit(stack.gateway_metrics_url).netloc,
        "operator": urlsplit(stack.operator_metrics_url).netloc})
    return stack.start(server, wait=60)


def check_scraped(server: Service, out: IO[str]) -> None:
    """Prometheus has scraped the gateway and the operator; CheckFailed otherwise."""
    def both_up() -> bool:
        return {sample["metric"].get("job") for sample in prometheus.query(server, "up == 1")
                } >= {"gateway", "operator"}

    try:
        poll(both_up, timeout=30, interval=0.5)
    except TimeoutError:
        raise CheckFailed(f"Prometheus did not scrape both: "
                          f"{prometheus.query(server, 'up')}") from None
    _say(out, "check: prometheus scrapes the gateway and the operator")


def run(check_only: bool, out: IO[str] = sys.stdout, *, with_prometheus: bool = False) -> int:
    work_dir = Path(checkout_path() or Path.cwd()) / ".cache" / "dev"
    if with_prometheus and prometheus.binary() is None:
        _say(sys.stderr, f"dev: {prometheus.INSTALL_HINT}")
        return 1
    # A `dev` that was killed: its processes go before its work dir does.
    clean_up_dead(out)
    shutil.rmtree(work_dir, ignore_errors=True)
    real_key = os.environ.get("ANTHROPIC_API_KEY")
    stack = Stack(work_dir, api_keys=(), anthropic_base_url=REAL_ANTHROPIC if real_key else None,
                  config_secret=DEFAULT_SECRET_NAME)
    stop = threading.Event()
    if not check_only:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
    try:
        _say(out, "starting the control plane ...")
        plane = launcher.start(work_dir / "controlplane")
    except (launcher.ControlPlaneError, binaries.BinaryUnavailable) as error:
        _say(sys.stderr, f"dev: {error}")
        return 1
    kubectl = Kubectl(binaries.resolve("kubectl"), plane.kubeconfig)
    stack.harness = plane.harness
    try:
        kubectl.apply(crd_yaml())
        kubectl.wait_for_condition(
            "crd/inferenceendpoints.inference-operator.dev", "Established", timeout=30)
        kubectl.apply(policies_yaml())
        if real_key is None:
            stack.start(stack.emulator())
        stack.kubeconfig = plane.kubeconfig
        stack.start(stack.gateway("--auth", "kubernetes", "--auth-audience", AUDIENCE))
        stack.start(stack.operator())
        server = _prometheus(stack, work_dir) if with_prometheus else None
        graphs = (f"  prometheus:  {prometheus.url(server)} (scraping both; the dashboard and "
                  "alerts: docs/operations.md)\n") if server else ""
        examples = _examples()
        if real_key:
            examples = _use_real_key(examples, real_key)
        kubectl.apply(examples, NAMESPACE)
        upstream = "the real Anthropic API" if real_key else f"the emulator at {stack.emulator_url}"
        _say(out, f"""
inference-operator dev is up ({upstream}).
  kubeconfig:  export KUBECONFIG={plane.kubeconfig}
  kubectl:     {kubectl.binary} get iep -A
  gateway:     {stack.gateway_url}
  logs:        {work_dir}/{{gateway,operator,emulator}}.log
  metrics:     {stack.gateway_metrics_url}, {stack.operator_metrics_url}
{graphs}  token:       export TOKEN=$({kubectl.binary} --kubeconfig {plane.kubeconfig} \\
                 create token {CALLER} -n {NAMESPACE} --audience {AUDIENCE})
  try:         curl -s -XPOST {stack.gateway_url}/_inference/completion/anthropic_completion \\
                 -H "Authorization: Bearer $TOKEN" \\
                 -H 'Content-Type: application/json' -d '{{"input": "Say hello"}}'
               (callers need a token and RBAC's invoke: examples/ grants it to {CALLER})
""")
        if check_only:
            check(stack, kubectl, out)
            if server is not None:
                check_scraped(server, out)
            _say(out, "dev --check: OK")
            return 0
        _say(out, "Ctrl-C stops everything.")
        while not stop.wait(1):
            for service in stack.services.values():
                if not service.running():
                    raise ProcessFailed(f"{service.name} exited")
        return 0
    except (CheckFailed, ProcessFailed, KubectlError) as error:
        _say(sys.stderr, f"dev{' --check' if check_only else ''}: FAILED: {error}")
        _say(sys.stderr, stack.log_tails())
        return 1
    finally:
        stack.stop()
        plane.stop()
