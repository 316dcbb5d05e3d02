"""Gateway fleet benchmark: configuration load at scale (5,000 endpoint records in the
shard Secrets: a fresh gateway's time to ready and its memory, against a baseline on
empty shards), and the rate limit shared by three replicas (``--peers-service``) under
even and uneven load and 3 → 1 replicas. One control plane, one emulator, gateway
processes in config mode. docs/benchmarks.md says how it runs."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes import client, config

from bench import harness
from bench.harness import Gateway, fake_key, mark, start_gateway, step, table
from inference_devkit.devstack.processes import Stack
from inference_devkit.waiting import poll
from inference_operator.api.gateway_config import Record, Shards

NAME, HEADING = "fleet", "Gateway fleet"
NAMESPACE = "bench-fleet"
LOADED_CONFIG = "fleet-loaded"  # the shards holding the 5,000 endpoints
EMPTY_CONFIG = "fleet-empty"  # the baseline's shards, as the installer creates them
RATE_CONFIG = "fleet-rate"  # the rate-limit scenarios' shards: one endpoint
PEERS_SERVICE = "fleet-gateways"
RATE_ID = "fleet-shared-limit"
MODELS = ("claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1")
# --quick: short windows at a limit that keeps the calls per window.
OPTIONS = harness.options("""
    --endpoints 5000 500
    --teams 50 10              id prefixes team-00 …
    --rounds 3 1               alternated baseline/loaded gateway starts
    --settle 1.0 0.2           seconds after ready before RSS is read
    --rpm 120 3600             the shared endpoint's limit
    --window 60.0 2.0          seconds per rate-limit scenario (3 → 1: twice that)
    --callers 2 2              waiting callers per replica (ii: 3x on the first)
    --client-timeout 10.0 2.0
""")


def records(count: int, teams: int, rng: random.Random) -> list[Record]:
    """``count`` records, ids ``team-07-ep-0123``: one namespace's worth per team."""
    per_team = -(-count // teams)
    out: list[Record] = []
    for index in range(count):
        task: dict[str, Any] = {"max_tokens": rng.choice((256, 1024, 4096))}
        if index % 3 == 0:
            task["temperature"] = rng.choice((0.2, 0.5, 0.7, 1.0))
        out.append(harness.record(f"team-{index // per_team:02d}-ep-{index % per_team:04d}",
                                  fake_key(rng), model=rng.choice(MODELS), task=task,
                                  rpm=rng.choice((50, 100, 500, 1000, 4000))))
    return out


class Cluster:
    """The objects the bench writes, through the synchronous client."""

    def __init__(self, kubeconfig: Path) -> None:
        api = config.new_client_from_config(config_file=str(kubeconfig))
        self.core, self.discovery = client.CoreV1Api(api), client.DiscoveryV1Api(api)

    def peers(self, ready: int, total: int = 3) -> None:
        """The gateways' Service without a selector, and its EndpointSlice written by
        hand: ``total`` endpoints in 10.213.0.0/16, the first ``ready`` of them ready
        (the others as a terminating Pod's). Nothing ever connects to them."""
        endpoints = [{"addresses": [f"10.213.0.{index + 1}"],
                      "conditions": {"ready": index < ready, "serving": index < ready,
                                     "terminating": index >= ready}}
                     for index in range(total)]
        name = f"{PEERS_SERVICE}-bench"
        try:
            self.discovery.read_namespaced_endpoint_slice(name, NAMESPACE)
        except client.ApiException as error:
            if error.status != 404:
                raise
            port = {"name": "http", "port": 9200}
            self.core.create_namespaced_service(NAMESPACE, {
                "apiVersion": "v1", "kind": "Service", "metadata": {"name": PEERS_SERVICE},
                "spec": {"ports": [{**port, "targetPort": 9200}]}})
            self.discovery.create_namespaced_endpoint_slice(NAMESPACE, {
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": name,
                             "labels": {"kubernetes.io/service-name": PEERS_SERVICE,
                                        "endpointslice.kubernetes.io/managed-by": "bench"}},
                "addressType": "IPv4", "ports": [{**port, "protocol": "TCP"}],
                "endpoints": endpoints})
        else:
            self.discovery.patch_namespaced_endpoint_slice(name, NAMESPACE,
                                                           {"endpoints": endpoints})


def configuration_load(args: argparse.Namespace, base: Stack, cluster: Cluster) -> dict[str, Any]:
    rng = random.Random(13)
    endpoints = records(args.endpoints, args.teams, rng)
    loaded, empty = Shards(LOADED_CONFIG), Shards(EMPTY_CONFIG)
    dataclasses.replace(base, config_secret=EMPTY_CONFIG).create_config()
    started = time.perf_counter()
    grouped, stored = harness.write_shards(cluster.core, base, LOADED_CONFIG, endpoints)
    write_seconds = time.perf_counter() - started
    step(f"{len(endpoints)} endpoints in {loaded.count} shards: "
         f"{sum(stored.values()) / 1e6:.2f} MB stored (largest shard "
         f"{max(stored.values()) / 1e3:.0f} kB), written in {write_seconds:.2f} s")

    rounds: dict[str, list[dict[str, float]]] = {"baseline": [], "loaded": []}
    for index in range(args.rounds):
        order = [("baseline", empty, 0), ("loaded", loaded, len(endpoints))]
        # Alternated, so neither always pays for the first (cold) start.
        for kind, shards, count in order if index % 2 == 0 else order[::-1]:
            gateway = start_gateway(base, shards.base_name, f"gateway-{kind}-{index}")
            ready = gateway.wait_loaded(count)
            time.sleep(args.settle)  # what stays after start-up, not its transients
            sample = {"ready_s": ready, **harness.memory(gateway.service)}
            rounds[kind].append(sample)
            step(f"  round {index + 1} {kind}: ready in {ready:.2f} s, RSS "
                 f"{sample['rss_mib']:.1f} MiB (peak {sample['peak_rss_mib']:.1f})")
            gateway.service.stop()
    medians = {kind: {key: statistics.median(s[key] for s in samples) for key in samples[0]}
               for kind, samples in rounds.items()}
    return {
        "endpoints": len(endpoints), "teams": args.teams, "shards": loaded.count,
        "key_length": sorted({len(r["service_settings"]["api_key"]) for r in endpoints}),
        "stored_bytes": sum(stored.values()), "largest_shard_bytes": max(stored.values()),
        "endpoints_per_shard": sorted(len(recs) for recs in grouped.values()),
        "write_seconds": write_seconds, "rounds": rounds,
        "median": medians,
        "delta": {key: medians["loaded"][key] - medians["baseline"][key]
                  for key in medians["loaded"]}}


@dataclasses.dataclass
class Tally:
    """What one replica's callers got."""

    ok: int = 0
    timeouts: int = 0
    errors: dict[str, int] = dataclasses.field(default_factory=dict)
    sent: int = 0


Load = Callable[[aiohttp.ClientSession, str, Tally], Awaitable[None]]


class RateBench:
    def __init__(self, args: argparse.Namespace, base: Stack, cluster: Cluster) -> None:
        self.args, self.base, self.cluster = args, base, cluster
        self.gateways: list[Gateway] = []
        self.timeout = aiohttp.ClientTimeout(total=args.client_timeout)

    def setup(self) -> None:
        harness.write_shards(self.cluster.core, self.base, RATE_CONFIG, [harness.record(
            RATE_ID, fake_key(random.Random(1)), rpm=self.args.rpm, task={"max_tokens": 16})])
        self.cluster.peers(ready=3)
        self.gateways = [start_gateway(self.base, RATE_CONFIG, f"gateway-peer-{index}",
                                       "--peers-service", PEERS_SERVICE) for index in range(3)]
        for gateway in self.gateways:
            gateway.wait_loaded(1)
        poll(lambda: all((g.health() or {}).get("replicas") == 3 for g in self.gateways),
             timeout=30, interval=0.05, message="three replicas counted")

    async def call(self, session: aiohttp.ClientSession, gateway: str, tally: Tally) -> None:
        tally.sent += 1
        try:
            async with session.post(f"{gateway}/_inference/completion/{RATE_ID}",
                                    json={"input": "What is Elastic?"},
                                    timeout=self.timeout) as response:
                await response.read()
                if response.status == 200:
                    tally.ok += 1
                    return
                error = str(response.status)
        except TimeoutError:
            # The client gives up: its connection closes, the gateway drops the request
            # from the queue and it uses no token.
            tally.timeouts += 1
            return
        except aiohttp.ClientError as failure:
            error = type(failure).__name__
        tally.errors[error] = tally.errors.get(error, 0) + 1
        await asyncio.sleep(0.05)  # a failing replica: no busy loop

    def waiting(self, callers: int) -> Load:
        """``callers`` that each always have a request waiting (a new one as soon as the
        previous one is answered or given up)."""

        async def load(session: aiohttp.ClientSession, gateway: str, tally: Tally) -> None:
            async def caller() -> None:
                while True:
                    await self.call(session, gateway, tally)

            await asyncio.gather(*(caller() for _ in range(callers)))

        return load

    async def scenario(self, session: aiohttp.ClientSession, name: str,
                       loads: list[Load | None], seconds: float,
                       switch: list[Load | None] | None = None) -> dict[str, Any]:
        """``loads`` per replica for ``seconds``; with ``switch``, at half time the
        EndpointSlice goes to one ready endpoint and the loads become those. Upstream
        calls are counted in the emulator's request log."""
        requests = f"{self.base.emulator_url}/_emulator/requests"
        async with session.delete(requests) as response:
            response.raise_for_status()
        # Every bucket refills (capacity 1) while nothing is sent.
        await asyncio.sleep(max(2.0, 2 * 60.0 * 3 / self.args.rpm))
        tallies = [Tally() for _ in self.gateways]
        t0 = time.monotonic()
        tasks: list[asyncio.Task[None] | None] = [
            asyncio.create_task(load(session, g.url, tally)) if load else None
            for load, g, tally in zip(loads, self.gateways, tallies, strict=True)]
        result: dict[str, Any] = {}
        if switch is not None:
            await asyncio.sleep(t0 + seconds / 2 - time.monotonic())
            switched_at = time.monotonic()
            await asyncio.to_thread(self.cluster.peers, 1)
            for index, (task, load) in enumerate(zip(tasks, switch, strict=True)):
                if task is not None and load is None:
                    task.cancel()
                    tasks[index] = None
            result["slice_written_s"] = time.monotonic() - switched_at
            result["replica_0_counts_1_after_s"] = await asyncio.to_thread(
                poll, lambda: (self.gateways[0].health() or {}).get("replicas") == 1
                and time.monotonic() - switched_at, timeout=30, interval=0.01)
        await asyncio.sleep(max(0.0, t0 + seconds - time.monotonic()))
        running = [t for t in tasks if t]
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        async with session.get(requests) as response:
            log = await response.json()
        received = sorted(e["received_at"] - t0 for e in log if e["path"] == "/v1/messages"
                          and 0 <= e["received_at"] - t0 < seconds)
        result.update({"seconds": seconds, "calls": len(received),
                       "replicas": [dataclasses.asdict(t) for t in tallies],
                       "received_s": [round(t, 3) for t in received]})
        if switch is not None:
            span = self.args.window
            result["calls_first_half"] = sum(t < seconds / 2 for t in received)
            result["calls_second_half"] = len(received) - result["calls_first_half"]
            result["sliding_span_s"], result["sliding_max"] = span, sliding_max(received, span)
        limit = self.args.rpm * seconds / 60
        step(f"  {name}: {len(received)} upstream calls, limit {limit:g}, per replica "
             + "/".join(str(t.ok) for t in tallies)
             + f", {sum(t.timeouts for t in tallies)} client timeouts")
        return result

    async def run(self) -> dict[str, Any]:
        rpm, window, callers = self.args.rpm, self.args.window, self.args.callers
        results: dict[str, Any] = {"rpm": rpm, "window_s": window, "limit": rpm * window / 60,
                                   "callers_per_replica": callers,
                                   "client_timeout_s": self.args.client_timeout}
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            step(f"(i) even, (ii) uneven callers 3:1:1, {window:g} s each")
            results["even"] = await self.scenario(session, "even",
                                                  [self.waiting(callers)] * 3, window)
            results["uneven_callers"] = await self.scenario(
                session, "uneven callers", [self.waiting(3 * callers), self.waiting(callers),
                                            self.waiting(callers)], window)
            step(f"(iii) 3 → 1 replicas at half time of {2 * window:g} s")
            results["scale_down"] = await self.scenario(
                session, "3 → 1", [self.waiting(callers)] * 3, 2 * window,
                switch=[self.waiting(callers), None, None])
        return results


def sliding_max(times: list[float], span: float) -> int:
    """The most calls in any ``span`` seconds (times sorted)."""
    best, first = 0, 0
    for last, at in enumerate(times):
        while at - times[first] >= span:
            first += 1
        best = max(best, last - first + 1)
    return best


def section(result: dict[str, Any]) -> str:
    load, rate = result["config_load"], result["rate_limit"]
    base, full, delta = load["median"]["baseline"], load["median"]["loaded"], load["delta"]
    limit, n = rate["limit"], 3
    even, callers = rate["even"], rate["uneven_callers"]
    scale = rate["scale_down"]
    scale_limit = rate["rpm"] * scale["seconds"] / 60
    span_limit = rate["rpm"] * scale["sliding_span_s"] / 60

    def row(label: str, s: dict[str, Any] | None, calls: Any, count: int, lim: float,
            target: str = "", ok: bool | None = None) -> tuple[Any, ...]:
        replicas = " / ".join(str(r["ok"]) for r in s["replicas"]) if s else ""
        return (label, calls, f"{lim:g}", f"{count / lim:.1%}", replicas, target, mark(ok))

    names = ("even", "uneven_callers", "scale_down")
    timeouts = {name: sum(r["timeouts"] for r in rate[name]["replicas"]) for name in names}
    errors = sum(sum(r["errors"].values()) for name in names for r in rate[name]["replicas"])
    return "\n".join([
        harness.machine_line(result["run"]), "",
        f"**Configuration load**: {load['endpoints']:,} endpoints "
        f"({'/'.join(map(str, load['key_length']))}-character keys) in {load['shards']} "
        f"shard Secrets, {load['stored_bytes'] / 1e6:.2f} MB stored (largest "
        f"{load['largest_shard_bytes'] / 1e3:.0f} kB, {min(load['endpoints_per_shard'])} to "
        f"{max(load['endpoints_per_shard'])} endpoints each); medians of "
        f"{len(load['rounds']['loaded'])} alternated rounds.", "",
        *table(("measure", "baseline (empty shards)", f"{load['endpoints']:,} endpoints",
                "difference", "target", ""), [
            ("process start → `/readyz` 200 with every endpoint served",
             f"{base['ready_s']:.2f} s", f"{full['ready_s']:.2f} s", f"{delta['ready_s']:+.2f} s",
             "< 5 s", mark(full["ready_s"] < 5)),
            ("RSS when ready", f"{base['rss_mib']:.1f} MiB", f"{full['rss_mib']:.1f} MiB",
             f"{delta['rss_mib']:+.1f} MiB", "< 50 MiB more", mark(delta["rss_mib"] < 50)),
            ("peak RSS (VmHWM)", f"{base['peak_rss_mib']:.1f} MiB",
             f"{full['peak_rss_mib']:.1f} MiB", f"{delta['peak_rss_mib']:+.1f} MiB", "", "")]),
        "",
        f"**The shared rate limit** at {rate['rpm']} rpm: {limit:g} calls per "
        f"{rate['window_s']:g} s window (3 → 1: {2 * rate['window_s']:g} s).", "",
        *table(("scenario", "upstream calls", "limit", "ratio", "per replica (answers)",
                "target", ""), [
            row(f"(i) even: {rate['callers_per_replica']} waiting callers per replica", even,
                even["calls"], even["calls"], limit, "≤ limit + 3, ≥ 95 %",
                0.95 * limit <= even["calls"] <= limit + n),
            row("(ii) uneven callers 3:1:1, each always waiting", callers, callers["calls"],
                callers["calls"], limit),
            row("(iii) 3 → 1 at half time, whole window", scale,
                f"{scale['calls']} ({scale['calls_first_half']} + "
                f"{scale['calls_second_half']})", scale["calls"], scale_limit, "≤ limit + 3",
                scale["calls"] <= scale_limit + n),
            row(f"(iii) 3 → 1, most calls in any {scale['sliding_span_s']:g} s", None,
                scale["sliding_max"], scale["sliding_max"], span_limit, "≤ limit + 3",
                scale["sliding_max"] <= span_limit + n)]), "",
        f"After the EndpointSlice update (written in {scale['slice_written_s'] * 1000:.0f} ms) "
        f"replica 0 counted 1 replica after {scale['replica_0_counts_1_after_s'] * 1000:.0f} "
        f"ms. Client timeouts (requests given up while queued): "
        + ", ".join(f"{name} {count}" for name, count in timeouts.items())
        + f"; other errors: {errors}."])


def invalid(args: argparse.Namespace) -> str | None:
    ok = 1 <= args.window <= 300 and args.rpm >= 3
    return None if ok else "--window must be 1 to 300 seconds and --rpm at least 3"


def run(args: argparse.Namespace) -> dict[str, Any]:
    with harness.control_plane(namespace=NAMESPACE) as (plane, base):
        cluster = Cluster(plane.kubeconfig)
        cluster.core.create_namespace({"metadata": {"name": NAMESPACE}})
        base.start(base.emulator("--log-level", "warning"), harness.START_SECONDS)
        step("1. configuration load")
        config_load = configuration_load(args, base, cluster)
        step("2. the shared rate limit: three gateways with --peers-service")
        rate = RateBench(args, base, cluster)
        rate.setup()
        return {"config_load": config_load, "rate_limit": asyncio.run(rate.run())}


if __name__ == "__main__":
    sys.exit(harness.main(sys.modules[__name__]))
