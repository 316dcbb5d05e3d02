"""Gateway fleet throughput on the local node: 3 replicas against 1, first with the chart's
resources (no CPU limit), then with each ``--cpu-limit`` per replica (so that horizontal
scaling is measured rather than the machine's cores); each round records the CPU the
gateways and the machine used. The project's image built from the working tree, the chart in
``gateway.mode=fleet``, the emulator as a Deployment, a closed loop from this host to the
gateway Service's ClusterIP through kube-proxy. docs/benchmarks.md says how it runs."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench import harness
from bench.harness import endpoint_manifest, step
from bench.loadgen import Target, closed_loop
from inference_devkit.checkout import checkout_path
from inference_devkit.controlplane import binaries, images, node
from inference_devkit.controlplane.kubectl import Kubectl, KubectlError
from inference_devkit.install import (
    RELEASE,
    RELEASE_NAMESPACE,
    all_ready,
    caller_token,
    deploy_emulator,
    grant_invoke,
    helm,
    install_chart,
    namespace,
    pods,
)
from inference_devkit.waiting import poll

NAME, HEADING = "fleet-throughput", "Gateway fleet throughput"
RPM = 1_000_000  # far above any rate here: the limiter never queues a request
INFERENCE_ID = "bench-throughput"
TARGET_RATIO = 2.5
CGROUP = Path("/sys/fs/cgroup")
TICK = os.sysconf("SC_CLK_TCK")
OPTIONS = harness.options("""
    --rounds 3 1           alternations of 1 and 3
    --requests 20000 3000  per round
    --time-limit 30.0 8.0  seconds per round
    --warmup 300 100       uncounted calls per round
    --concurrency 64 64
""")


# -- CPU accounting ------------------------------------------------------------------------


def pod_cgroup(uid: str) -> Path | None:
    """The Pod's cgroup (kubelet's cgroupfs layout: kubepods[/burstable|besteffort]/pod<uid>),
    in the v1 cpuacct hierarchy or the v2 one."""
    for root in (CGROUP / "cpuacct" / "kubepods", CGROUP / "kubepods"):
        for pattern in (f"pod{uid}", f"*/pod{uid}"):
            found = next(root.glob(pattern), None)
            if found is not None:
                return found
    return None


def cgroup_usage(path: Path) -> float:
    """CPU seconds used by every process the cgroup ever held."""
    v1 = path / "cpuacct.usage"
    if v1.exists():
        return int(v1.read_text()) / 1e9
    stat = dict(line.split() for line in (path / "cpu.stat").read_text().splitlines())
    return int(stat["usage_usec"]) / 1e6


def machine_busy() -> float:
    """CPU seconds the whole machine was busy since boot (all but idle and iowait)."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
    return (user + nice + system + irq + softirq) / TICK


class CpuMeter:
    """The gateway Pods' CPU (their cgroups, listed first) and the machine's, read just before
    and just after a round: only file reads, so the reading costs next to nothing."""

    def __init__(self, kubectl: Kubectl, selector: str) -> None:
        self.kubectl, self.selector = kubectl, selector

    def gateway_cgroups(self) -> list[Path]:
        listed = json.loads(self.kubectl.run("get", "pods", "-A", "-l", self.selector,
                                             "-o", "json").stdout)
        return [p for pod in listed["items"] if (p := pod_cgroup(pod["metadata"]["uid"]))]

    @staticmethod
    def read(cgroups: list[Path]) -> dict[str, Any]:
        return {"gateways": sum(cgroup_usage(p) for p in cgroups if p.exists()),
                "machine": machine_busy(), "at": time.perf_counter()}

    @staticmethod
    def cores(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
        """CPU over the round in cores (CPU seconds per second)."""
        wall = after["at"] - before["at"]
        return {"gateways": round((after["gateways"] - before["gateways"]) / wall, 3),
                "machine_busy": round((after["machine"] - before["machine"]) / wall, 3)}


# -- the fleet -----------------------------------------------------------------------------


class Fleet:
    def __init__(self, running: node.Node, kubectl: Kubectl, installation: Any) -> None:
        self.running, self.kubectl, self.installation = running, kubectl, installation
        self.namespace = installation.namespace
        self.deployment = installation.service  # the gateways' Deployment has its name
        self.selector = f"{installation.selector},app.kubernetes.io/component=gateway"

    def ready_endpoints(self) -> set[str]:
        slices = json.loads(self.kubectl.run(
            "get", "endpointslices", "-n", self.namespace, "-o", "json",
            "-l", f"kubernetes.io/service-name={self.installation.service}").stdout)["items"]
        return {f"{address}:{self.installation.port}" for s in slices
                for e in s.get("endpoints") or [] if e.get("conditions", {}).get("ready")
                for address in e["addresses"]}

    def proxied_endpoints(self) -> set[str]:
        """The Service's backends in kube-proxy's nat rules: the EndpointSlice reaches them
        a moment later, and until then the ClusterIP refuses or goes to the old Pods."""
        rules = subprocess.run(["iptables", "-w", "-t", "nat", "-S"], capture_output=True,
                               text=True, check=True, timeout=30).stdout
        marker = f'"{self.namespace}/{self.installation.service}:http -> '
        return {line.split(marker, 1)[1].split('"', 1)[0] for line in rules.splitlines()
                if line.startswith("-A KUBE-SVC-") and marker in line}

    def scale(self, replicas: int, cpu_limit: str | None) -> float:
        """Seconds until the EndpointSlice has ``replicas`` ready endpoints, kube-proxy's
        rules the same, and no other gateway Pod is left (a terminating one would still use
        CPU and connections)."""
        started = time.monotonic()
        self.kubectl.run("scale", f"deployment/{self.deployment}", "-n", self.namespace,
                         f"--replicas={replicas}")

        def settled() -> bool:
            running = pods(self.kubectl, self.namespace, self.selector)
            if len(running) != replicas or not all(map(all_ready, running)):
                return False
            ready = self.ready_endpoints()
            return len(ready) == replicas and self.proxied_endpoints() == ready

        poll(settled, timeout=180, interval=0.5,
             message=f"{replicas} ready gateway endpoint(s), proxied, no other gateway Pod")
        for pod in pods(self.kubectl, self.namespace, self.selector):
            limits = pod["spec"]["containers"][0].get("resources", {}).get("limits", {})
            if limits.get("cpu") != cpu_limit:
                raise RuntimeError(f"{pod['metadata']['name']} has CPU limit "
                                   f"{limits.get('cpu')}, expected {cpu_limit}")
        return time.monotonic() - started

    def service_url(self) -> str:
        service = self.kubectl.get("service", self.installation.service, self.namespace)
        return f"http://{service['spec']['clusterIP']}:{self.installation.port}"

    def set_cpu_limit(self, cpu: str) -> None:
        result = helm(self.running, "upgrade", RELEASE,
                      str(checkout_path("charts", "inference-operator")),
                      "--namespace", self.namespace, "--reuse-values",
                      "--set", f"gateway.resources.limits.cpu={cpu}",
                      # The replicas field is kubectl scale's now (server-side apply): the
                      # chart's value back, the next round scales it again.
                      "--force-conflicts",
                      "--wait", "--timeout=300s", timeout=330)
        if result.returncode != 0:
            raise RuntimeError(f"helm upgrade failed: {result.stderr}")


def setup(running: node.Node, kubectl: Kubectl, image: str) -> tuple[Fleet, Target]:
    emulator = deploy_emulator(kubectl, running, image, namespace(kubectl, "bench-emulator"),
                               "--log-level", "warning")
    try:
        # Not uninstalled: the node, and everything in it, goes at the end of the run.
        installation = next(install_chart(running, kubectl, image, emulator,
                                          "gateway.mode=fleet", "gateway.replicas=1"))
        team, caller = namespace(kubectl, "bench-team"), namespace(kubectl, "bench-caller")
        grant_invoke(kubectl, installation, team, caller)
        body = endpoint_manifest("throughput", rpm=RPM)
        body["spec"]["inference_id"] = INFERENCE_ID
        kubectl.apply([{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "anthropic"},
                        "stringData": {"api_key": "sk-ant-bench-throughput"}}, body], team)
        kubectl.wait_for_condition("iep/throughput", "Ready", team, timeout=90)
    except (AssertionError, KubectlError):  # what the operator and gateways said
        selector = f"app.kubernetes.io/instance={RELEASE}"
        for previous in ("--previous=true", "--previous=false"):
            print(kubectl.run("logs", "-n", RELEASE_NAMESPACE, "-l", selector, previous,
                              "--all-containers", "--prefix", "--tail=30", check=False).stdout,
                  file=sys.stderr)
        print(kubectl.run("get", "iep", "-A", "-o", "jsonpath={.items[*].status}",
                          check=False).stdout, file=sys.stderr)
        raise
    fleet = Fleet(running, kubectl, installation)
    url = f"{fleet.service_url()}/_inference/completion/{INFERENCE_ID}"
    token = caller_token(kubectl, caller)
    return fleet, Target("gateway", url, {"input": "What is Elastic?"},
                         {"Authorization": f"Bearer {token}"})


async def load_round(args: argparse.Namespace, target: Target, meter: CpuMeter
                     ) -> dict[str, Any]:
    # New connections every round: kube-proxy picks a backend per connection, so reused
    # ones would stay on the Pods of the round before.
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:
        async with session.post(target.url, json=target.body,
                                headers=target.headers) as response:
            if response.status != 200:
                raise RuntimeError(f"probe call: {response.status} {await response.text()}")
        # Opens the connections and warms each gateway's auth cache and upstream pool.
        await closed_loop(session, target, requests=args.warmup,
                          concurrency=args.concurrency, time_limit=args.time_limit)
        cgroups = meter.gateway_cgroups()
        before = meter.read(cgroups)
        sample = await closed_loop(session, target, requests=args.requests,
                                   concurrency=args.concurrency, time_limit=args.time_limit)
        after = meter.read(cgroups)
    summary = sample.summary()
    return {"rps": summary["rps"], "requests": summary["requests"],
            "errors": summary["errors"], "seconds": summary["seconds"],
            "p50_ms": summary["p50_ms"], "p99_ms": summary["p99_ms"],
            "cores": meter.cores(before, after)}


def alternation(args: argparse.Namespace, fleet: Fleet, target: Target, meter: CpuMeter,
                cpu_limit: str | None) -> dict[str, Any]:
    rounds = []
    for index in range(args.rounds):
        for replicas in (1, 3):
            waited = fleet.scale(replicas, cpu_limit)
            result = {"round": index + 1, "replicas": replicas,
                      "scale_seconds": round(waited, 1),
                      **asyncio.run(load_round(args, target, meter))}
            rounds.append(result)
            cores = result["cores"]
            step(f"  round {index + 1}, {replicas} replica(s): {result['rps']:.0f} req/s "
                 f"({result['requests']} in {result['seconds']:.1f} s, {result['errors']} "
                 f"errors, p50 {result['p50_ms']:.0f} ms); gateways {cores['gateways']:.2f} "
                 f"cores, machine busy {cores['machine_busy']:.2f}")
    median = {n: statistics.median(r["rps"] for r in rounds if r["replicas"] == n)
              for n in (1, 3)}
    ratio = median[3] / median[1] if median[1] else float("nan")
    step(f"  median 1: {median[1]:.0f} req/s, 3: {median[3]:.0f} req/s, ratio {ratio:.2f}x "
         f"({'met' if ratio >= TARGET_RATIO else 'not met'})")
    pairs = [three["rps"] / one["rps"] for one, three in zip(rounds[::2], rounds[1::2],
                                                                strict=True) if one["rps"]]
    return {"cpu_limit": cpu_limit, "rounds": rounds,
            "median_rps": {str(n): v for n, v in median.items()}, "ratio": ratio,
            "ratio_per_alternation": [round(r, 3) for r in pairs],
            "met": ratio >= TARGET_RATIO}


def section(result: dict[str, Any]) -> str:
    run, setup_, variants = result["run"], result["setup"], result["variants"]
    if not variants:
        return f"{harness.machine_line(run)}\n\nNot run: {result['skipped']}."
    nproc = run["machine"]["cores"]
    rounds = [(v["cpu_limit"] or "none", r["round"], r["replicas"], f"{r['rps']:.0f}",
               f"{r['p50_ms']:.0f} / {r['p99_ms']:.0f}", r["errors"],
               f"{r['cores']['gateways']:.2f}",
               f"{1000 * r['cores']['gateways'] / r['rps']:.2f}" if r["rps"] else "",
               f"{r['cores']['machine_busy']:.2f} of {nproc}")
              for v in variants for r in v["rounds"]]
    ratios = [(v["cpu_limit"] or "none (the chart default: a 100m request)",
               f"{v['median_rps']['1']:.0f} req/s", f"{v['median_rps']['3']:.0f} req/s",
               f"{v['ratio']:.2f}x", ", ".join(f"{x:.2f}x" for x in v["ratio_per_alternation"]),
               f"≥ {TARGET_RATIO}x", harness.mark(v["met"])) for v in variants]
    return "\n".join([
        harness.machine_line(run), "",
        f"Load: {setup_['concurrency']} concurrent callers, {setup_['requests']:,} requests "
        f"or {setup_['time_limit_s']:g} s per round after {setup_['warmup']} warm-up calls, "
        f"one endpoint at {RPM:,} rpm. CPU in cores (CPU seconds per second of the round): "
        "the gateway Pods' from their cgroups, the machine's from /proc/stat.", "",
        *harness.table(("CPU limit per replica", "round", "replicas", "req/s", "p50 / p99 ms",
                        "errors", "gateways (cores)", "gateways' CPU ms per request",
                        "machine busy"), rounds), "",
        *harness.table(("CPU limit per replica", "1 replica (median)", "3 replicas (median)",
                        "ratio 3:1", "each alternation", "target", ""), ratios)])


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cpu-limit", action="append",
        help="gateway.resources.limits.cpu of a further alternation, after the one without, "
             "in millicores as the API shows it (repeatable; default: 250m, then 100m)")


def invalid(args: argparse.Namespace) -> str | None:
    args.cpu_limit = args.cpu_limit or ["250m", "100m"]
    if args.rounds < 1 or args.requests < 1 or not 1 <= args.time_limit <= 300:
        return "--rounds and --requests at least 1, --time-limit 1 to 300 seconds"
    return None


def run(args: argparse.Namespace) -> dict[str, Any]:
    setup_ = {"concurrency": args.concurrency, "requests": args.requests,
              "time_limit_s": args.time_limit, "warmup": args.warmup, "rpm": RPM,
              "target": "the gateway Service's ClusterIP, through kube-proxy"}
    try:
        node.check_supported()
        # A smoke run starts no node: building the image and the node takes minutes.
        skipped = "--quick starts no node" if args.quick else None
    except node.NodeUnavailable as error:  # as the end-to-end tests skip: say why
        skipped = str(error)
    if skipped:
        step(f"fleet throughput skipped: {skipped}")
        return {"setup": setup_, "variants": [], "skipped": skipped}
    step("the project's image, from the working tree")
    archive = images.build_project_image(sys.stderr)  # before the node: nothing to undo
    step("the local node")
    running = node.start(out=sys.stderr)
    try:
        running.load_image(archive)
        kubectl = Kubectl(binaries.resolve("kubectl"), running.plane.kubeconfig)
        fleet, target = setup(running, kubectl, images.PROJECT_REF)
        meter = CpuMeter(kubectl, fleet.selector)
        step(f"load: {args.concurrency} callers to {target.url}")
        step("1. the chart's resources: no CPU limit")
        variants = [alternation(args, fleet, target, meter, None)]
        for number, limit in enumerate(args.cpu_limit, 2):
            step(f"{number}. gateway.resources.limits.cpu={limit}")
            fleet.set_cpu_limit(limit)
            variants.append(alternation(args, fleet, target, meter, limit))
    finally:
        step("stopping the node")
        running.stop()
        if left := running.leftovers():
            print(f"the node left behind: {left}", file=sys.stderr)
    return {"setup": setup_, "variants": variants}


if __name__ == "__main__":
    sys.exit(harness.main(sys.modules[__name__]))
