"""Operator benchmark: apply → Ready latency (one object at a time), M objects at once
against the floor (a plain client creating them and patching each status once), and
memory at scale over many namespaces, before and after a restart. One control plane; the
operator as the image runs it, from a virtualenv with the runtime dependencies only
(.cache/bench/runtime-venv, made on first use), watching every namespace."""

from __future__ import annotations

import argparse
import base64
import hashlib
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import yaml
from kubernetes import client, config, watch

from bench import harness
from bench.harness import ROOT, endpoint_manifest, memory, percentile, step
from inference_devkit.controlplane import binaries
from inference_devkit.controlplane.kubectl import Kubectl
from inference_devkit.devstack.processes import Service, Stack
from inference_devkit.waiting import poll
from inference_operator.api.manifests import crd_yaml
from inference_operator.api.models import GROUP, PLURAL, VERSION

NAME, HEADING = "operator", "Operator"
KEY = "bench-key-not-a-real-key"
OPERATOR_NS, FLOOR_NS = "bench-operator", "bench-floor"
DEADLINE_SECONDS = 900
CREATE_WORKERS = 8
RESTART_SYNC_TIMEOUT = 600
# The chart's default memory limit must leave this much above the highest RSS measured.
HEADROOM = 1.5
OPTIONS = harness.options("""
    --latency-objects 50 3
    --bulk-objects 1000 20
    --scale-objects 5000 40  endpoints in all at the scale phase (the others count)
    --scale-namespaces 50 3
""")


def runtime_operator(quick: bool) -> tuple[str, ...] | None:
    """The CLI of a virtualenv holding the package (editable: this checkout's code) with
    its runtime dependencies only. The dev venv also has the test extras, and kopf
    imports every Kubernetes client it finds installed. None (the dev venv's) with
    ``quick``: the install takes a minute and the network."""
    if quick:
        step("runtime venv skipped (--quick): the operator runs from the dev venv")
        return None
    venv = ROOT / ".cache" / "bench" / "runtime-venv"
    version = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:12]
    step(f"runtime venv: {venv} (installed on first use)")
    python = harness.install_venv(venv, ["-e", str(ROOT)], venv.parent / "runtime-venv.log",
                                  timeout=600, version=version)
    return (str(python.parent / "inference-operator"),)


class ReadyWatch:
    """Records when each object (``namespace/name``) is first seen Ready=True."""

    def __init__(self, api: client.ApiClient) -> None:
        self.ready_at: dict[str, float] = {}
        self._custom = client.CustomObjectsApi(api)
        self._watch = watch.Watch()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        # A watch may end or break at any time (server timeouts): resume from the last
        # resourceVersion seen, so no transition is missed or seen late.
        resource_version = None
        while not self._stopped:
            try:
                for event in self._watch.stream(
                    self._custom.list_cluster_custom_object, GROUP, VERSION, PLURAL,
                    timeout_seconds=60,
                    **({"resource_version": resource_version} if resource_version else {}),
                ):
                    resource_version = event["object"]["metadata"]["resourceVersion"]
                    self._record(event["object"])
            except Exception as error:
                if not self._stopped:
                    print(f"watch restarted after: {error!r}", file=sys.stderr)
                    resource_version = None
                    time.sleep(0.2)

    def _record(self, obj: dict[str, Any]) -> None:
        conditions = (obj.get("status") or {}).get("conditions") or []
        if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
            metadata = obj["metadata"]
            self.ready_at.setdefault(f"{metadata['namespace']}/{metadata['name']}",
                                     time.perf_counter())

    def wait_for(self, names: set[str], timeout: float) -> None:
        """Until all of ``names`` are Ready (the times are the watch's, not this wait's)."""
        try:
            poll(lambda: all(name in self.ready_at for name in names), timeout=timeout,
                 interval=0.01)
        except TimeoutError:
            missing = sum(name not in self.ready_at for name in names)
            raise TimeoutError(f"{missing} object(s) not Ready in time") from None

    def stop(self) -> None:
        self._stopped = True
        self._watch.stop()


def measure_latency(api: client.ApiClient, watcher: ReadyWatch, count: int) -> dict[str, float]:
    custom = client.CustomObjectsApi(api)
    took = []
    for index in range(count):
        name = f"lat-{index}"
        started = time.perf_counter()
        custom.create_namespaced_custom_object(GROUP, VERSION, OPERATOR_NS, PLURAL,
                                               endpoint_manifest(name))
        watcher.wait_for({f"{OPERATOR_NS}/{name}"}, 60)
        took.append(watcher.ready_at[f"{OPERATOR_NS}/{name}"] - started)
    return {"objects": count, "p50_s": percentile(took, 0.5), "p99_s": percentile(took, 0.99),
            "mean_s": statistics.fmean(took), "max_s": max(took), "first_s": took[0]}


def create_all(api: client.ApiClient, keys: list[str], patch_status: bool) -> float:
    """Create the ``namespace/name`` objects, CREATE_WORKERS at a time."""
    custom = client.CustomObjectsApi(api)
    ready = {"type": "Ready", "status": "True", "reason": "Serving", "message": "floor",
             "lastTransitionTime": "2026-01-01T00:00:00Z"}

    def one(key: str) -> None:
        namespace, name = key.split("/")
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                               endpoint_manifest(name))
        if patch_status:
            custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, name,
                {"status": {"observedGeneration": 1, "conditions": [ready]}})

    started = time.perf_counter()
    with ThreadPoolExecutor(CREATE_WORKERS) as pool:
        list(pool.map(one, keys))
    return time.perf_counter() - started


def restart(stack: Stack, operator: Service) -> dict[str, Any]:
    """Stop the operator and start it again: time until its first full sync is done
    (every resource reconciled, nothing to write), its memory then and the peak."""
    operator.stop()
    logged = len(operator.log_text())  # the log file is appended to
    started = time.perf_counter()
    stack.start(operator)
    poll(lambda: "first full sync done" in operator.log_text()[logged:],
         timeout=RESTART_SYNC_TIMEOUT, interval=0.2)
    return {"synced_s": time.perf_counter() - started, **memory(operator)}


def section(result: dict[str, Any]) -> str:
    latency, bulk, scale = result["latency"], result["bulk"], result["scale"]
    memory_at = result["operator_memory"]
    idle, after = memory_at["idle"]["rss_mib"], memory_at["after_bulk"]["rss_mib"]
    at_scale, restarted = memory_at["at_scale"], memory_at["after_restart"]
    highest = max(at_scale["peak_rss_mib"], restarted["peak_rss_mib"])
    limit = result["chart_memory_limit_mib"]
    rows = [
        (f"apply → Ready, p50 ({latency['objects']} objects, one at a time)",
         f"{latency['p50_s'] * 1000:.0f} ms", "≤ 500 ms", latency["p50_s"] <= 0.5),
        ("apply → Ready, p99", f"{latency['p99_s'] * 1000:.0f} ms", "≤ 2 s",
         latency["p99_s"] <= 2),
        (f"{bulk['objects']} objects at once, all Ready",
         f"{bulk['operator_all_ready_s']:.1f} s", "", None),
        ("floor: plain client, create + one status patch each", f"{bulk['floor_s']:.1f} s",
         "", None),
        ("ratio to the floor", f"{bulk['ratio_to_floor']:.2f}x", "≤ 3x",
         bulk["ratio_to_floor"] <= 3),
        (f"operator RSS idle / after the {bulk['objects']}", f"{idle:.0f} / {after:.0f} MiB",
         "≤ 150 MiB", after <= 150),
        (f"{scale['objects']} endpoints over {scale['namespaces']} namespaces, all Ready",
         f"{scale['all_ready_s']:.1f} s for the last {scale['created']}", "all Ready", True),
        (f"operator RSS at {scale['objects']} (peak so far, VmHWM)",
         f"{at_scale['rss_mib']:.0f} MiB ({at_scale['peak_rss_mib']:.0f})",
         "reported", None),
        (f"after a restart with {scale['objects']}: first full sync, RSS (peak)",
         f"{restarted['synced_s']:.1f} s, {restarted['rss_mib']:.0f} MiB "
         f"({restarted['peak_rss_mib']:.0f})", "reported", None),
        ("memory per endpoint (RSS at scale - idle) / endpoints",
         f"{result['kib_per_endpoint']:.0f} KiB", "", None),
        ("chart's operator memory limit", f"{limit} MiB",
         f"≥ {HEADROOM}x the highest RSS ({highest:.0f} MiB)", limit >= HEADROOM * highest),
    ]
    return "\n".join([
        harness.machine_line(result["run"]) + " The operator from "
        + ("the dev venv (`--quick`)" if result["run"]["args"]["quick"]
           else "a runtime-only virtualenv (as in the image)") + ", watching every namespace.",
        "", *harness.table(("measure", "result", "target", ""),
                           ((n, v, t, harness.mark(ok)) for n, v, t, ok in rows))])


def chart_memory_limit_mib() -> int:
    values = yaml.safe_load((ROOT / "charts" / "inference-operator" / "values.yaml")
                            .read_text())
    limit = values["operator"]["resources"]["limits"]["memory"]
    if not limit.endswith("Mi"):
        raise ValueError(f"the chart's operator memory limit {limit!r} is not in Mi")
    return int(limit[:-2])


def run(args: argparse.Namespace) -> dict[str, Any]:
    program = runtime_operator(args.quick)
    with harness.control_plane(api_keys=(KEY,)) as (plane, stack):
        return measure(args, plane.kubeconfig, stack, program)


def measure(args: argparse.Namespace, kubeconfig: Any, stack: Stack,
            program: tuple[str, ...] | None) -> dict[str, Any]:
    kubectl = Kubectl(binaries.resolve("kubectl"), kubeconfig)
    kubectl.apply(crd_yaml())
    kubectl.wait_for_condition(f"crd/{PLURAL}.{GROUP}", "Established", timeout=30)
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "anthropic"},
              "data": {"api_key": base64.b64encode(KEY.encode()).decode()}}
    scale_namespaces = [OPERATOR_NS, *(f"bench-scale-{i:02d}"
                                      for i in range(1, args.scale_namespaces))]
    for namespace in (FLOOR_NS, *scale_namespaces):
        kubectl.run("create", "namespace", namespace)
        kubectl.apply(secret, namespace)
    api = config.new_client_from_config(config_file=str(kubeconfig))
    api.configuration.connection_pool_maxsize = CREATE_WORKERS * 2

    names = [f"{FLOOR_NS}/bulk-{i}" for i in range(args.bulk_objects)]
    step(f"floor: {len(names)} creates + status patches")
    floor = create_all(api, names, patch_status=True)
    step(f"  {floor:.1f} s")
    # Gone before the operator starts (it watches every namespace): one request.
    custom = client.CustomObjectsApi(api)
    custom.delete_collection_namespaced_custom_object(GROUP, VERSION, FLOOR_NS, PLURAL)
    poll(lambda: not custom.list_namespaced_custom_object(
        GROUP, VERSION, FLOOR_NS, PLURAL, limit=1)["items"], timeout=60, interval=0.2)

    stack.start(stack.emulator())
    stack.start(stack.gateway())
    # One namespace holds the latency and bulk objects: above the default per-namespace
    # cap on published endpoints, which is not what this measures.
    operator = stack.operator("--max-endpoints-per-namespace", str(
        args.latency_objects + args.bulk_objects + args.scale_objects))
    operator.program = program or operator.program
    stack.start(operator)
    # The gateway turns ready once the operator's first writes: measure from there.
    gateway_ready = stack.services["gateway"]
    gateway_ready.health_url = f"{stack.gateway_url}/readyz"
    gateway_ready.wait_healthy(60)
    watcher = ReadyWatch(api)
    # Idle: imports done, watches listed, its first (empty) full sync behind it.
    poll(lambda: "first full sync done" in operator.log_text(), timeout=60, interval=0.2)
    idle = memory(operator)

    step(f"latency: {args.latency_objects} objects, one at a time")
    latency = measure_latency(api, watcher, args.latency_objects)
    step(f"  p50 {latency['p50_s'] * 1000:.0f} ms, p99 {latency['p99_s'] * 1000:.0f} ms, "
         f"first {latency['first_s'] * 1000:.0f} ms")

    names = [f"{OPERATOR_NS}/bulk-{i}" for i in range(args.bulk_objects)]
    step(f"operator: {len(names)} objects at once until all Ready")
    started = time.perf_counter()
    created = create_all(api, names, patch_status=False)
    watcher.wait_for(set(names), DEADLINE_SECONDS)
    all_ready = max(watcher.ready_at[n] for n in names) - started
    after = memory(operator)
    step(f"  {all_ready:.1f} s (creates alone {created:.1f} s); ratio to floor "
         f"{all_ready / floor:.2f}x; operator RSS {after['rss_mib']:.0f} MiB "
         f"(peak {after['peak_rss_mib']:.0f} MiB, idle {idle['rss_mib']:.0f} MiB)")

    existing = args.latency_objects + args.bulk_objects
    spread_over = scale_namespaces[1:] or scale_namespaces
    more = [f"{spread_over[i % len(spread_over)]}/scale-{i}"
            for i in range(max(0, args.scale_objects - existing))]
    step(f"scale: {len(more)} more at once over {len(scale_namespaces)} namespaces, "
         f"{existing + len(more)} in all")
    started = time.perf_counter()
    create_all(api, more, patch_status=False)
    watcher.wait_for(set(more), DEADLINE_SECONDS)
    scale_ready = max((watcher.ready_at[n] for n in more), default=started) - started
    at_scale = memory(operator)
    step(f"  {scale_ready:.1f} s; operator RSS {at_scale['rss_mib']:.0f} MiB "
         f"(peak {at_scale['peak_rss_mib']:.0f} MiB)")
    watcher.stop()

    step("restart with every endpoint in place")
    restarted = restart(stack, operator)
    step(f"  first full sync after {restarted['synced_s']:.1f} s; RSS "
         f"{restarted['rss_mib']:.0f} MiB (peak {restarted['peak_rss_mib']:.0f})")
    endpoints = existing + len(more)
    return {
        "latency": latency,
        "bulk": {"objects": args.bulk_objects, "operator_all_ready_s": all_ready,
                 "operator_creates_s": created, "floor_s": floor,
                 "ratio_to_floor": all_ready / floor},
        "scale": {"objects": endpoints, "namespaces": len(scale_namespaces),
                  "created": len(more), "all_ready_s": scale_ready},
        "operator_memory": {"idle": idle, "after_bulk": after, "at_scale": at_scale,
                            "after_restart": restarted},
        "kib_per_endpoint": (at_scale["rss_mib"] - idle["rss_mib"]) * 1024 / endpoints,
        "chart_memory_limit_mib": chart_memory_limit_mib(),
    }


if __name__ == "__main__":
    sys.exit(harness.main(sys.modules[__name__]))
