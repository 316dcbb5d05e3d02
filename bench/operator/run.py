"""Operator benchmark: apply → Ready latency, and 1,000 objects at once against the floor.

One run, one control plane, one machine:
1. latency: N objects created one at a time; time from the create call to Ready=True
   seen on a watch (p50/p99);
2. bulk: M objects created at once until all are Ready, side by side with the floor: a
   plain client creating the same M objects (in a namespace the operator does not watch)
   and patching each status once. Reported as a ratio, with the operator's memory.

Usage: .venv/bin/python bench/operator/run.py [--latency-objects 50] [--bulk-objects 1000]
Loopback only; every loop is bounded by its object count and a deadline.
"""

from __future__ import annotations

import argparse
import base64
import json
import platform
import signal
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/common.py
from common import percentile, splice_section

from inference_operator.api.generate import crd_yaml
from inference_operator.api.models import GROUP, PLURAL, VERSION
from inference_operator.controlplane import binaries, launcher
from inference_operator.controlplane.kubectl import Kubectl
from inference_operator.devstack.processes import Service, Stack
from inference_operator.waiting import poll

KEY = "bench-key-not-a-real-key"
OPERATOR_NS, FLOOR_NS = "bench-operator", "bench-floor"
DEADLINE_SECONDS = 600
CREATE_WORKERS = 8


def manifest(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "InferenceEndpoint",
        "metadata": {"name": name},
        "spec": {
            "task_type": "completion", "service": "anthropic",
            "service_settings": {"api_key": {"secret_key_ref": {"name": "anthropic"}},
                                 "model_id": "claude-sonnet-4-5"},
            "task_settings": {"max_tokens": 64},
        },
    }


class ReadyWatch:
    """Records when each object of a namespace is first seen Ready=True."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.ready_at: dict[str, float] = {}
        self._custom = client.CustomObjectsApi(api)
        self._namespace = namespace
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
                    self._custom.list_namespaced_custom_object, GROUP, VERSION,
                    self._namespace, PLURAL, timeout_seconds=60,
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
            self.ready_at.setdefault(obj["metadata"]["name"], time.perf_counter())

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


def memory(service: Service) -> dict[str, float]:
    return {"rss_mib": service.rss_mib(), "peak_rss_mib": service.rss_mib(field="VmHWM")}


def measure_latency(api, watcher: ReadyWatch, count: int) -> dict[str, float]:
    custom = client.CustomObjectsApi(api)
    took = []
    for index in range(count):
        name = f"lat-{index}"
        started = time.perf_counter()
        custom.create_namespaced_custom_object(GROUP, VERSION, OPERATOR_NS, PLURAL,
                                               manifest(name))
        watcher.wait_for({name}, 60)
        took.append(watcher.ready_at[name] - started)
    return {"objects": count, "p50_s": percentile(took, 0.5), "p99_s": percentile(took, 0.99),
            "mean_s": statistics.fmean(took), "max_s": max(took), "first_s": took[0]}


def create_all(api, namespace: str, names: list[str], patch_status: bool) -> float:
    custom = client.CustomObjectsApi(api)
    ready = {"type": "Ready", "status": "True", "reason": "Serving", "message": "floor",
             "lastTransitionTime": "2026-01-01T00:00:00Z"}

    def one(name: str) -> None:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest(name))
        if patch_status:
            custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, name,
                {"status": {"observedGeneration": 1, "conditions": [ready]}})

    started = time.perf_counter()
    with ThreadPoolExecutor(CREATE_WORKERS) as pool:
        list(pool.map(one, names))
    return time.perf_counter() - started


START, END = "<!-- operator-bench:start", "<!-- operator-bench:end -->"


def write_report(path: Path, result: dict[str, Any]) -> None:
    """Rewrite the generated section between the markers (appended if missing)."""
    latency, bulk = result["latency"], result["bulk"]
    idle, after = (result["operator_memory"][k]["rss_mib"] for k in ("idle", "after_bulk"))
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
        ("operator RSS idle / after the bulk", f"{idle:.0f} / {after:.0f} MiB", "≤ 150 MiB",
         after <= 150),
    ]
    table = "\n".join(
        f"| {name} | {value} | {target} | "
        f"{'' if ok is None else 'met' if ok else '**not met**'} |"
        for name, value, target, ok in rows
    )
    section = (f"{START} (generated by bench/operator/run.py) -->\n"
               f"`{result['command']}` on {result['machine']}, {result['date']}.\n\n"
               "| measure | result | target | |\n| --- | --- | --- | --- |\n"
               f"{table}\n{END}")
    splice_section(path, START, END, section, "Operator")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latency-objects", type=int, default=50)
    parser.add_argument("--bulk-objects", type=int, default=1000)
    parser.add_argument("--output", type=Path, default=Path("docs/benchmarks/operator.json"))
    parser.add_argument("--report", type=Path, default=Path("docs/benchmarks.md"),
                        help="markdown file whose operator-bench section is rewritten")
    args = parser.parse_args()

    # SIGTERM (a CI timeout, kill) unwinds like Ctrl-C, so the processes are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = Path(tempfile.mkdtemp(prefix="bench-operator-"))
    plane = launcher.start(work / "controlplane")
    stack = Stack(work, api_keys=(KEY,), kubeconfig=plane.kubeconfig)
    try:
        kubectl = Kubectl(binaries.resolve("kubectl"), plane.kubeconfig)
        kubectl.apply(crd_yaml())
        kubectl.wait_for_condition(f"crd/{PLURAL}.{GROUP}", "Established", timeout=30)
        secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "anthropic"},
                  "data": {"api_key": base64.b64encode(KEY.encode()).decode()}}
        for namespace in (OPERATOR_NS, FLOOR_NS):
            kubectl.run("create", "namespace", namespace)
            kubectl.apply(secret, namespace)
        stack.start(stack.emulator())
        stack.start(stack.gateway())
        operator = stack.start(stack.operator("--namespace", OPERATOR_NS))
        # The gateway turns ready once the operator's first writes: measure from there.
        gateway_ready = stack.services["gateway"]
        gateway_ready.health_url = f"{stack.gateway_url}/readyz"
        gateway_ready.wait_healthy(60)
        api = config.new_client_from_config(config_file=str(plane.kubeconfig))
        api.configuration.connection_pool_maxsize = CREATE_WORKERS * 2
        watcher = ReadyWatch(api, OPERATOR_NS)
        idle = memory(operator)

        print(f"latency: {args.latency_objects} objects, one at a time ...", flush=True)
        latency = measure_latency(api, watcher, args.latency_objects)
        print(f"  p50 {latency['p50_s'] * 1000:.0f} ms, p99 {latency['p99_s'] * 1000:.0f} ms, "
              f"first {latency['first_s'] * 1000:.0f} ms")

        names = [f"bulk-{i}" for i in range(args.bulk_objects)]
        print(f"floor: {len(names)} creates + status patches ...", flush=True)
        floor = create_all(api, FLOOR_NS, names, patch_status=True)
        print(f"  {floor:.1f} s")
        print(f"operator: {len(names)} objects at once until all Ready ...", flush=True)
        started = time.perf_counter()
        created = create_all(api, OPERATOR_NS, names, patch_status=False)
        watcher.wait_for(set(names), DEADLINE_SECONDS)
        all_ready = max(watcher.ready_at[n] for n in names) - started
        after = memory(operator)
        print(f"  {all_ready:.1f} s (creates alone {created:.1f} s); ratio to floor "
              f"{all_ready / floor:.2f}x; operator RSS {after['rss_mib']:.0f} MiB "
              f"(peak {after['peak_rss_mib']:.0f} MiB, idle {idle['rss_mib']:.0f} MiB)")
        watcher.stop()
        result = {
            "date": time.strftime("%Y-%m-%d"),
            "machine": f"{platform.machine()}, {len(__import__('os').sched_getaffinity(0))} "
                       f"cores, Python {platform.python_version()}",
            "command": " ".join(["bench/operator/run.py", *sys.argv[1:]]),
            "latency": latency,
            "bulk": {"objects": len(names), "operator_all_ready_s": all_ready,
                     "operator_creates_s": created, "floor_s": floor,
                     "ratio_to_floor": all_ready / floor},
            "operator_memory": {"idle": idle, "after_bulk": after},
        }
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2) + "\n")
        write_report(args.report, result)
        print(f"results: {args.output}, {args.report}")
        return 0
    finally:
        stack.stop()
        plane.stop()


if __name__ == "__main__":
    sys.exit(main())
