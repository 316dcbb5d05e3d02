"""Gateway fleet throughput on the local node: 3 replicas against 1, first with the chart's
resources (no CPU limit), then with each ``--cpu-limit`` per replica (so that horizontal
scaling is measured rather than the machine's cores); each round records the CPU every
consumer used. The project's image built from the working tree, the chart in
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
from inference_devkit import procfs
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
# Host processes of the node, by the name it starts them with (the rest of ours are Pods).
CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager")


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
    return cpu_stat(path)["usage_usec"] / 1e6


def cpu_stat(path: Path) -> dict[str, int]:
    """``cpu.stat`` (throttling: nr_periods, nr_throttled), from the cpu hierarchy in v1."""
    if (path / "cpuacct.usage").exists():
        path = CGROUP / "cpu" / path.relative_to(CGROUP / "cpuacct")
    pairs = (line.split() for line in (path / "cpu.stat").read_text().splitlines())
    return {key: int(value) for key, value in pairs}


def machine_seconds() -> dict[str, float]:
    """CPU seconds of the whole machine since boot, from /proc/stat: busy (all but idle and
    iowait), of which irq (hard and soft interrupts: the packets), and steal (the
    hypervisor's)."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return {"busy": (user + nice + system + irq + softirq) / TICK,
            "irq": (irq + softirq) / TICK, "steal": steal / TICK}


def kind_of(pid: int) -> str:
    """"pod" (in a Pod's cgroup), "kernel" (a kernel thread: no command line; ksoftirqd
    among them, which handles packets for every process) or "process"."""
    try:
        if "kubepods" in Path(f"/proc/{pid}/cgroup").read_text():
            return "pod"
        return "process" if Path(f"/proc/{pid}/cmdline").read_bytes() else "kernel"
    except OSError:
        return "gone"


class CpuMeter:
    """The CPU seconds of each consumer, read just before and just after a round: only file
    reads, so the reading itself costs next to nothing."""

    def __init__(self, running: node.Node, kubectl: Kubectl) -> None:
        self.running, self.kubectl = running, kubectl

    def consumers(self) -> dict[str, tuple[str, list[Any]]]:
        """label -> ("cgroups", [path, ...]) or ("pids", [pid, ...]); each gateway Pod as
        gateway/<name>; "other processes": every process on the machine not of this run."""
        found: dict[str, tuple[str, list[Any]]] = {}
        listed = json.loads(self.kubectl.run("get", "pods", "-A", "-o", "json").stdout)
        for pod in listed["items"]:
            path = pod_cgroup(pod["metadata"]["uid"])
            if path is None:
                continue
            labels = pod["metadata"].get("labels", {})
            if labels.get("app.kubernetes.io/component") == "gateway":
                label = f"gateway/{pod['metadata']['name']}"
            elif labels.get("app.kubernetes.io/name") == "anthropic-emulator":
                label = "emulator"
            else:
                label = "other pods"  # the operator, CoreDNS
            found.setdefault(label, ("cgroups", []))[1].append(path)
        processes = [*self.running.plane.processes, *self.running.processes]
        if self.running.containerd.process is not None:
            processes.append(self.running.containerd.process)
        pids = {p.name: p.popen.pid for p in processes if p.popen and p.running()}
        found["control plane"] = ("pids", [pid for name, pid in pids.items()
                                           if name in CONTROL_PLANE])
        # The shims run outside the Pods' cgroups here: counted with the agents.
        found["node agents"] = ("pids", [pid for name, pid in pids.items()
                                         if name not in CONTROL_PLANE]
                                + self.running.containerd.shim_pids())
        found["load tool"] = ("pids", [os.getpid()])
        ours = {pid for kind, items in found.values() if kind == "pids" for pid in items}
        rest = [pid for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
                if pid not in ours]
        kinds = {pid: kind_of(pid) for pid in rest}
        found["kernel threads"] = ("pids", [p for p in rest if kinds[p] == "kernel"])
        found["other processes"] = ("pids", [p for p in rest if kinds[p] == "process"])
        return found

    @staticmethod
    def read(consumers: dict[str, tuple[str, list[Any]]]) -> dict[str, Any]:
        """Per label: a cgroup's CPU seconds, or each process's (start time, CPU seconds),
        so that a pid reused by a new process within the round is not taken for the old."""
        used: dict[str, Any] = {}
        for label, (kind, items) in consumers.items():
            if kind == "cgroups":
                used[label] = sum(cgroup_usage(path) for path in items if path.exists())
            else:
                used[label] = {pid: found for pid in items
                               if (found := process_cpu(pid)) is not None}
        throttled = {label: cpu_stat(items[0]) for label, (kind, items) in consumers.items()
                     if label.startswith("gateway/")}
        return {"used": used, "throttled": throttled, "machine": machine_seconds(),
                "at": time.perf_counter()}

    @staticmethod
    def cores(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
        """Each consumer's CPU over the round, in cores (CPU seconds per second); a process
        that did not last the whole round is left out (it is in "unaccounted")."""
        wall = after["at"] - before["at"]

        def per_process(label: str) -> dict[int, float]:
            first, last = before["used"][label], after["used"][label]
            return {pid: (last[pid][1] - cpu) / wall for pid, (started, cpu) in first.items()
                    if pid in last and last[pid][0] == started}

        used = {}
        for label, first in before["used"].items():
            if isinstance(first, dict):
                used[label] = sum(per_process(label).values())
            else:
                used[label] = (after["used"][label] - first) / wall
        machine = {k: (after["machine"][k] - before["machine"][k]) / wall
                   for k in before["machine"]}
        gateways = {k.split("/", 1)[1]: round(v, 3) for k, v in used.items()
                    if k.startswith("gateway/")}
        throttled = {}
        for label, stat in after["throttled"].items():
            first = before["throttled"].get(label, {})
            periods = stat.get("nr_periods", 0) - first.get("nr_periods", 0)
            hits = stat.get("nr_throttled", 0) - first.get("nr_throttled", 0)
            throttled[label.split("/", 1)[1]] = round(hits / periods, 3) if periods else 0.0
        others = per_process("other processes")
        busiest = sorted(others, key=others.get, reverse=True)[:3]
        return {"gateways": gateways, "gateways_total": round(sum(gateways.values()), 3),
                **{k: round(v, 3) for k, v in used.items() if not k.startswith("gateway/")},
                "ours": round(sum(v for k, v in used.items()
                                  if k not in ("other processes", "kernel threads")), 3),
                "machine_busy": round(machine["busy"], 3), "irq": round(machine["irq"], 3),
                "steal": round(machine["steal"], 3),
                # Busy time no process read here accounts for: interrupts charged to no
                # process, processes that started and ended within the round.
                "unaccounted": round(machine["busy"] - sum(used.values()), 3),
                "gateway_periods_throttled": throttled,
                "busiest_other_processes": [{"command": command_of(pid),
                                             "cores": round(others[pid], 3)}
                                            for pid in busiest]}


def process_cpu(pid: int) -> tuple[int, float] | None:
    """``procfs.times``, None once it is gone."""
    try:
        return procfs.times(pid)
    except OSError:
        return None


def command_of(pid: int) -> str:
    """The program's name (no arguments: they hold paths of this machine)."""
    try:
        argv = [a.decode(errors="replace")
                for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        return "(ended)"
    return Path(argv[0]).name if argv else "(kernel)"


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
        consumers = meter.consumers()
        before = meter.read(consumers)
        sample = await closed_loop(session, target, requests=args.requests,
                                   concurrency=args.concurrency, time_limit=args.time_limit)
        after = meter.read(consumers)
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
                 f"errors, p50 {result['p50_ms']:.0f} ms); gateways "
                 f"{'+'.join(f'{c:.2f}' for c in cores['gateways'].values())} cores, "
                 f"emulator {cores['emulator']:.2f}, load tool {cores['load tool']:.2f}, "
                 f"other processes {cores['other processes']:.2f}, machine busy "
                 f"{cores['machine_busy']:.2f}")
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


def median_of(variant: dict[str, Any], replicas: int, value: Any) -> float:
    """The median over the variant's rounds with ``replicas`` of ``value(round)``."""
    return statistics.median(value(r) for r in variant["rounds"] if r["replicas"] == replicas)


def cores_of(key: str) -> Any:
    return lambda r: r["cores"][key]


def throttled(r: dict[str, Any]) -> float:
    shares = r["cores"]["gateway_periods_throttled"].values()
    return statistics.fmean(shares) if shares else 0.0


def rest(cores: dict[str, Any]) -> float:
    return cores["kernel threads"] + cores["unaccounted"]


def section(result: dict[str, Any]) -> str:
    run, setup_, variants = result["run"], result["setup"], result["variants"]
    if not variants:
        return f"{harness.machine_line(run)}\n\nNot run: {result['skipped']}."
    nproc = run["machine"]["cores"]
    lines = [
        harness.machine_line(run), "",
        f"The local node; the chart in `gateway.mode=fleet` (auth `kubernetes`, the chart's "
        f"default: one ServiceAccount token, TokenReview + SubjectAccessReview cached 10 s; "
        f"access log on), the emulator as a Deployment, one endpoint at {RPM:,} rpm. Load: a "
        f"closed loop of {setup_['concurrency']} concurrent callers (aiohttp, in the bench "
        f"process on this host) against the gateway Service's ClusterIP through kube-proxy, "
        f"{setup_['requests']:,} requests or {setup_['time_limit_s']:g} s per round after "
        f"{setup_['warmup']} warm-up calls, on new connections each round. Rounds alternate "
        f"1 and 3 replicas (`kubectl scale`, then until the EndpointSlice and kube-proxy's "
        f"rules have that many ready endpoints and no other gateway Pod is left). CPU in "
        f"cores (CPU seconds per second of the round): Pods from their cgroups, processes "
        f"from /proc, the machine from /proc/stat; \"other processes\" are those on this "
        f"machine that are not this run's (other work sharing it), \"rest\" kernel threads "
        f"and what no process read accounts for. Throttled: the share of CFS periods in "
        f"which a replica hit its CPU limit.",
        "",
        "| CPU limit per replica | round | replicas | req/s | p50 / p99 ms | errors | "
        "gateways (cores each) | throttled | emulator | load tool | node agents + control "
        "plane | other processes | rest | machine busy |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for variant in variants:
        limit = variant["cpu_limit"] or "none"
        for r in variant["rounds"]:
            c = r["cores"]
            each = " + ".join(f"{v:.2f}" for v in c["gateways"].values())
            hit = " / ".join(f"{v:.0%}" for v in c["gateway_periods_throttled"].values())
            lines.append(
                f"| {limit} | {r['round']} | {r['replicas']} | {r['rps']:.0f} | "
                f"{r['p50_ms']:.0f} / {r['p99_ms']:.0f} | {r['errors']} | {each} | "
                f"{hit if variant['cpu_limit'] else ''} | {c['emulator']:.2f} | "
                f"{c['load tool']:.2f} | {c['node agents'] + c['control plane']:.2f} | "
                f"{c['other processes']:.2f} | {rest(c):.2f} | "
                f"{c['machine_busy']:.2f} of {nproc} |")
    lines += ["", "| CPU limit per replica | 1 replica (median) | 3 replicas (median) | "
              "ratio 3:1 | each alternation | target | |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for variant in variants:
        median = variant["median_rps"]
        lines.append(
            f"| {variant['cpu_limit'] or 'none (the chart default: a 100m request)'} | "
            f"{median['1']:.0f} req/s | {median['3']:.0f} req/s | {variant['ratio']:.2f}x | "
            f"{', '.join(f'{x:.2f}x' for x in variant['ratio_per_alternation'])} | "
            f"≥ {TARGET_RATIO}x | {'met' if variant['met'] else '**not met**'} |")

    free = variants[0]
    busy = [median_of(free, n, cores_of("machine_busy")) for n in (1, 3)]
    gateways = [median_of(free, n, cores_of("gateways_total")) for n in (1, 3)]
    ours = [median_of(free, n, cores_of("ours")) for n in (1, 3)]
    others = [median_of(free, n, cores_of("other processes")) for n in (1, 3)]
    per_request = [median_of(free, n, lambda r: 1000 * r["cores"]["ours"] / r["rps"])
                   for n in (1, 3)]
    gateway_ms = [median_of(free, n, lambda r: 1000 * r["cores"]["gateways_total"] / r["rps"])
                  for n in (1, 3)]
    load: dict[str, float] = {}
    for r in (r for v in variants for r in v["rounds"]):
        for other in r["cores"]["busiest_other_processes"]:
            load[other["command"]] = load.get(other["command"], 0) + other["cores"]
    busiest = ("; the busiest: " + "; ".join(
        f"`{c}`" for c in sorted(load, key=load.get, reverse=True)[:2])
        if max(others) >= 0.1 else "")
    lines += [
        "",
        f"**What limits it.** Without a CPU limit the machine was {busy[0]:.2f} (1 replica) "
        f"and {busy[1]:.2f} (3 replicas) of its {nproc} cores busy (medians): one replica's "
        f"process used {gateways[0]:.2f} of the one core it can use, three used "
        f"{gateways[1]:.2f} together, and at most {nproc - busy[0]:.2f} of a core was idle "
        f"for more replicas to take. This run's processes used {ours[0]:.2f} / {ours[1]:.2f} "
        f"cores (1 / 3 replicas: gateways, emulator, load tool, kubelet, kube-proxy, "
        f"containerd and the shims that carry the access logs, the control plane), other "
        f"processes on the machine {others[0]:.2f} / {others[1]:.2f}{busiest}. Per request "
        f"this run spent {per_request[0]:.2f} ms of CPU with one replica and "
        f"{per_request[1]:.2f} ms with three (the gateways alone {gateway_ms[0]:.2f} / "
        f"{gateway_ms[1]:.2f} ms): with the CPU all taken, req/s follows the CPU per "
        f"request, not the replicas"
        + ("; and with more busy processes than cores, each woken for fewer requests, "
           "every request costs more." if per_request[1] > 1.05 * per_request[0] else "."),
    ]
    for variant in variants[1:]:
        hit = [median_of(variant, n, throttled) for n in (1, 3)]
        busy3 = median_of(variant, 3, cores_of("machine_busy"))
        ms = [median_of(variant, n, lambda r: 1000 * r["cores"]["gateways_total"] / r["rps"])
              for n in (1, 3)]
        p50 = [median_of(variant, n, lambda r: r["p50_ms"]) for n in (1, 3)]
        if hit[1] < 0.5:
            verdict = ("three replicas seldom reached their quota: short of the machine's "
                       "CPU, not of their limit, so the machine bounds this ratio too")
        elif variant["met"] or ms[1] <= 1.05 * ms[0]:
            verdict = "each replica was held by its quota: this ratio is horizontal scaling"
        else:
            verdict = (f"each replica was held by its quota, so not the machine but the "
                       f"gateways' CPU per request, {ms[0]:.2f} ms at 1 replica against "
                       f"{ms[1]:.2f} ms at 3, keeps the ratio under 3x (the one replica, "
                       f"p50 {p50[0]:.0f} ms against {p50[1]:.0f} ms, has more requests "
                       f"waiting each time it runs)")
        lines.append(
            f"With a {variant['cpu_limit']} limit one replica was throttled in {hit[0]:.0%} "
            f"of its periods and served {variant['median_rps']['1']:.0f} req/s; three were "
            f"throttled in {hit[1]:.0%} and served {variant['median_rps']['3']:.0f} req/s "
            f"({variant['ratio']:.2f}x), the machine {busy3:.2f} of {nproc} busy: {verdict}.")
    return "\n".join(lines)


def options(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--rounds", type=int, default=3, help="alternations of 1 and 3")
    add("--requests", type=int, default=20000, help="per round")
    add("--time-limit", type=float, default=30.0, help="seconds per round")
    add("--warmup", type=int, default=300, help="uncounted calls per round")
    add("--concurrency", type=int, default=64)
    add("--cpu-limit", action="append",
        help="gateway.resources.limits.cpu of a further alternation, after the one without, "
             "in millicores as the API shows it (repeatable; default: 250m, then 100m)")


def quick(args: argparse.Namespace) -> None:
    args.rounds, args.requests, args.time_limit, args.warmup = 1, 3000, 8.0, 100


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
        meter = CpuMeter(running, kubectl)
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
