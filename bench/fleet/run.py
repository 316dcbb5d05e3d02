"""Gateway fleet benchmark: configuration load at scale, and the rate limit shared by
replicas, each side by side with a baseline measured in the same run.

One control plane (kube-apiserver + etcd on loopback), one emulator, gateway processes in
config mode (``inference-operator gateway --config-secret ...``):

1. configuration load: 5,000 endpoint records (ids ``team-NN-ep-NNNN`` over 50 teams,
   108-character fake keys, a model, a rate limit, task settings) written into the 8
   default shard Secrets; a fresh gateway's time from process start to ``/readyz`` 200
   with all 5,000 served, and its RSS then, against a baseline gateway started the same
   way on 8 empty shards (alternated rounds, medians); then the time for one rotated key
   in one shard to show as that shard's new generation in ``/healthz``;
2. the shared rate limit: three gateways with ``--peers-service`` (a Service without a
   selector and a hand-written EndpointSlice with three ready endpoints that are never
   contacted), one endpoint at ``--rpm`` in the shards, and scenarios of ``--window``
   seconds: even load, uneven load (3:1:1, by callers and by demand), and 3 → 1 replicas
   at half time. Upstream calls are counted in the emulator's request log.

Writes docs/benchmarks/fleet.json and the fleet section of docs/benchmarks.md.

    .venv/bin/python bench/run.py --only fleet [--quick]
    .venv/bin/python bench/fleet/run.py [--window 60] [--rpm 120] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import random
import signal
import statistics
import string
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes import client, config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/common.py
from common import percentile, save_results, splice_section

from inference_devkit.controlplane import launcher
from inference_devkit.devstack.processes import Service, Stack
from inference_devkit.loopback import free_port
from inference_devkit.waiting import poll
from inference_operator.api.gateway_config import Record, Shard, Shards

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "bench-fleet"
LOADED_CONFIG = "fleet-loaded"  # the shards holding the 5,000 endpoints
EMPTY_CONFIG = "fleet-empty"  # the baseline's shards, as the installer creates them
RATE_CONFIG = "fleet-rate"  # the rate-limit scenarios' shards: one endpoint
PEERS_SERVICE = "fleet-gateways"
RATE_ID = "fleet-shared-limit"
MODELS = ("claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1")
KEY_ALPHABET = string.ascii_letters + string.digits + "-_"
START_SECONDS = 60.0
# Direct, never through a proxy from the environment (as the process supervisor does).
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def step(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


# -- the endpoint records --------------------------------------------------------------


def fake_key(rng: random.Random) -> str:
    """Shaped like an Anthropic key: ``sk-ant-api03-`` + 93 characters + ``AA``, 108."""
    return "sk-ant-api03-" + "".join(rng.choices(KEY_ALPHABET, k=93)) + "AA"


def records(count: int, teams: int, rng: random.Random) -> list[Record]:
    """``count`` records as the operator writes them (``Endpoint.stored()``), ids
    ``team-07-ep-0123``: one namespace's worth of endpoints per team."""
    per_team = -(-count // teams)
    out: list[Record] = []
    for index in range(count):
        task: dict[str, Any] = {"max_tokens": rng.choice((256, 1024, 4096))}
        if index % 3 == 0:
            task["temperature"] = rng.choice((0.2, 0.5, 0.7, 1.0))
        out.append({
            "inference_id": f"team-{index // per_team:02d}-ep-{index % per_team:04d}",
            "task_type": "completion", "service": "anthropic",
            "service_settings": {
                "api_key": fake_key(rng), "model_id": rng.choice(MODELS),
                "rate_limit": {"requests_per_minute": rng.choice((50, 100, 500, 1000, 4000))},
            },
            "task_settings": task,
        })
    return out


def by_shard(shards: Shards, endpoints: list[Record]) -> dict[str, list[Record]]:
    grouped: dict[str, list[Record]] = {name: [] for name in shards.names()}
    for record in endpoints:
        grouped[shards.of(record["inference_id"])].append(record)
    return grouped


# -- Kubernetes ------------------------------------------------------------------------


class Cluster:
    """The objects the bench writes, through the synchronous client."""

    def __init__(self, kubeconfig: Path) -> None:
        self.api = config.new_client_from_config(config_file=str(kubeconfig))
        self.core = client.CoreV1Api(self.api)
        self.discovery = client.DiscoveryV1Api(self.api)

    def write_shard(self, name: str, shard: Shard) -> int:
        """The shard's data replaced (as the operator writes it); the bytes stored."""
        data = shard.encode()
        self.core.patch_namespaced_secret(name, NAMESPACE, {"data": data})
        return sum(len(value) for value in data.values())

    def peers(self, ready: int, total: int = 3) -> None:
        """The gateways' Service without a selector, and its EndpointSlice written by
        hand: ``total`` endpoints in 10.213.0.0/16, the first ``ready`` of them ready
        (the others as a terminating Pod's). Nothing ever connects to them."""
        endpoints = [{"addresses": [f"10.213.0.{index + 1}"],
                      "conditions": {"ready": index < ready, "serving": index < ready,
                                     "terminating": index >= ready}}
                     for index in range(total)]
        body = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": f"{PEERS_SERVICE}-bench",
                             "labels": {"kubernetes.io/service-name": PEERS_SERVICE,
                                        "endpointslice.kubernetes.io/managed-by": "bench"}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 9200, "protocol": "TCP"}],
                "endpoints": endpoints}
        try:
            self.discovery.read_namespaced_endpoint_slice(body["metadata"]["name"], NAMESPACE)
        except client.ApiException as error:
            if error.status != 404:
                raise
            self.core.create_namespaced_service(NAMESPACE, {
                "apiVersion": "v1", "kind": "Service", "metadata": {"name": PEERS_SERVICE},
                "spec": {"ports": [{"name": "http", "port": 9200, "targetPort": 9200}]}})
            self.discovery.create_namespaced_endpoint_slice(NAMESPACE, body)
        else:
            self.discovery.patch_namespaced_endpoint_slice(
                body["metadata"]["name"], NAMESPACE, {"endpoints": endpoints})


# -- gateway processes -----------------------------------------------------------------


@dataclasses.dataclass
class Gateway:
    service: Service
    url: str
    started_at: float  # perf_counter just before the process was started
    metrics_url: str  # its metrics listener's /metrics

    def health(self) -> dict[str, Any] | None:
        return get_json(f"{self.url}/healthz")

    def ready(self) -> bool:
        try:
            with _DIRECT.open(f"{self.url}/readyz", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False


def get_json(url: str) -> dict[str, Any] | None:
    try:
        with _DIRECT.open(url, timeout=2) as response:
            return json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def start_gateway(base: Stack, config_secret: str, name: str, *extra: str) -> Gateway:
    """A gateway in config mode on its own port, started as ``Stack.gateway`` starts one
    (its shards created empty first when missing), without waiting for it."""
    stack = dataclasses.replace(base, config_secret=config_secret, gateway_port=free_port(),
                                gateway_metrics_port=free_port(),
                                services={})
    service = stack.gateway("--log-level", "warning", *extra)
    service.name, service.health_url = name, None
    service.log_path = base.work_dir / f"{name}.log"
    started_at = time.perf_counter()
    base.start(service)
    return Gateway(service, stack.gateway_url, started_at, stack.gateway_metrics_url)


def wait_loaded(gateway: Gateway, endpoints: int, timeout: float = START_SECONDS) -> float:
    """Seconds from the process start to ``/readyz`` 200 with ``endpoints`` served."""

    def loaded() -> float | None:
        if not gateway.service.running():
            raise RuntimeError(f"{gateway.service.name} exited\n{gateway.service.log_tail()}")
        if not gateway.ready():
            return None
        health = gateway.health()
        if not health or health["endpoints"] != endpoints:
            return None
        return time.perf_counter() - gateway.started_at

    return poll(loaded, timeout=timeout, interval=0.01,
                message=f"{gateway.service.name} ready with {endpoints} endpoints")


def memory(service: Service) -> dict[str, float]:
    return {"rss_mib": service.rss_mib(), "peak_rss_mib": service.rss_mib(field="VmHWM")}


# -- 1. configuration load -------------------------------------------------------------


def configuration_load(args: argparse.Namespace, base: Stack, cluster: Cluster) -> dict[str, Any]:
    rng = random.Random(13)
    endpoints = records(args.endpoints, args.teams, rng)
    loaded, empty = Shards(LOADED_CONFIG), Shards(EMPTY_CONFIG)
    for shards in (loaded, empty):
        dataclasses.replace(base, config_secret=shards.base_name).create_config()
    grouped = by_shard(loaded, endpoints)
    generations = dict.fromkeys(loaded.names(), 1)
    started = time.perf_counter()
    stored = {name: cluster.write_shard(name, Shard(1, tuple(recs)))
              for name, recs in grouped.items()}
    write_seconds = time.perf_counter() - started
    key_lengths = {len(r["service_settings"]["api_key"]) for r in endpoints}
    step(f"{len(endpoints)} endpoints in {loaded.count} shards: "
         f"{sum(stored.values()) / 1e6:.2f} MB stored (largest shard "
         f"{max(stored.values()) / 1e3:.0f} kB), written in {write_seconds:.2f} s")

    rounds: dict[str, list[dict[str, float]]] = {"baseline": [], "loaded": []}
    last: Gateway | None = None
    for index in range(args.rounds):
        order = [("baseline", empty, 0), ("loaded", loaded, len(endpoints))]
        # Alternated, so neither always pays for the first (cold) start.
        for kind, shards, count in order if index % 2 == 0 else order[::-1]:
            gateway = start_gateway(base, shards.base_name, f"gateway-{kind}-{index}")
            ready = wait_loaded(gateway, count)
            time.sleep(args.settle)  # what stays after start-up, not its transients
            sample = {"ready_s": ready, **memory(gateway.service)}
            rounds[kind].append(sample)
            step(f"  round {index + 1} {kind}: ready in {ready:.2f} s, RSS "
                 f"{sample['rss_mib']:.1f} MiB (peak {sample['peak_rss_mib']:.1f})")
            if kind == "loaded" and index == args.rounds - 1:
                last = gateway  # kept for the propagation measurement
            else:
                gateway.service.stop()
    assert last is not None  # the last round's loaded gateway, stopped after the changes

    medians = {kind: {key: statistics.median(s[key] for s in samples)
                      for key in samples[0]} for kind, samples in rounds.items()}
    propagation = propagate(args, cluster, last, grouped, generations, rng)
    last.service.stop()
    return {
        "endpoints": len(endpoints), "teams": args.teams, "shards": loaded.count,
        "key_length": sorted(key_lengths), "stored_bytes": sum(stored.values()),
        "largest_shard_bytes": max(stored.values()),
        "endpoints_per_shard": sorted(len(recs) for recs in grouped.values()),
        "write_seconds": write_seconds, "example_record": redacted(endpoints[0]),
        "rounds": rounds, "median": medians,
        "delta": {key: medians["loaded"][key] - medians["baseline"][key]
                  for key in medians["loaded"]},
        "propagation": propagation,
    }


def redacted(record: Record) -> Record:
    out = json.loads(json.dumps(record))
    key = out["service_settings"]["api_key"]
    out["service_settings"]["api_key"] = key[:13] + "…" + f"({len(key)} characters)"
    return out


def propagate(args: argparse.Namespace, cluster: Cluster, gateway: Gateway,
              grouped: dict[str, list[Record]], generations: dict[str, int],
              rng: random.Random) -> dict[str, Any]:
    """One key rotated in one shard per change (the shards in turn); the time from the
    write's start until ``/healthz`` reports that shard's new generation."""
    took, writes = [], []
    names = sorted(grouped)
    for index in range(args.propagations):
        name = names[index % len(names)]
        record = rng.choice(grouped[name])
        record["service_settings"]["api_key"] = fake_key(rng)
        generations[name] += 1
        generation = generations[name]
        started = time.perf_counter()
        cluster.write_shard(name, Shard(generation, tuple(grouped[name])))
        writes.append(time.perf_counter() - started)

        def served(name: str = name, generation: int = generation) -> bool:
            health = gateway.health()
            return bool(health) and health["config"].get(name) == generation

        poll(served, timeout=30, interval=0.005, message=f"{name} generation {generation}")
        took.append(time.perf_counter() - started)
        time.sleep(0.3)
    step(f"  key rotation → served: median {statistics.median(took) * 1000:.0f} ms, max "
         f"{max(took) * 1000:.0f} ms ({len(took)} changes; the write alone median "
         f"{statistics.median(writes) * 1000:.0f} ms)")
    return {"changes": len(took), "median_s": statistics.median(took),
            "p90_s": percentile(took, 0.9), "max_s": max(took), "min_s": min(took),
            "write_median_s": statistics.median(writes), "samples_s": took,
            "endpoints_in_shard": {name: len(recs) for name, recs in grouped.items()}}


# -- 2. the shared rate limit ----------------------------------------------------------


@dataclasses.dataclass
class Tally:
    """What one replica's callers got."""

    ok: int = 0
    timeouts: int = 0
    errors: dict[str, int] = dataclasses.field(default_factory=dict)
    sent: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


Load = Callable[[aiohttp.ClientSession, str, Tally], Awaitable[None]]


class RateBench:
    def __init__(self, args: argparse.Namespace, base: Stack, cluster: Cluster) -> None:
        self.args = args
        self.base = base
        self.cluster = cluster
        self.gateways: list[Gateway] = []
        self.body = {"input": "What is Elastic?"}
        self.timeout = aiohttp.ClientTimeout(total=args.client_timeout)

    def setup(self) -> None:
        shards = Shards(RATE_CONFIG)
        dataclasses.replace(self.base, config_secret=RATE_CONFIG).create_config()
        record = {"inference_id": RATE_ID, "task_type": "completion", "service": "anthropic",
                  "service_settings": {"api_key": fake_key(random.Random(1)),
                                       "model_id": MODELS[0],
                                       "rate_limit": {"requests_per_minute": self.args.rpm}},
                  "task_settings": {"max_tokens": 16}}
        self.cluster.write_shard(shards.of(RATE_ID), Shard(1, (record,)))
        self.cluster.peers(ready=3)
        for index in range(3):
            self.gateways.append(start_gateway(
                self.base, RATE_CONFIG, f"gateway-peer-{index}",
                "--peers-service", PEERS_SERVICE))
        for gateway in self.gateways:
            wait_loaded(gateway, 1)
        poll(lambda: all((g.health() or {}).get("replicas") == 3 for g in self.gateways),
             timeout=30, interval=0.05, message="three replicas counted")

    # -- loads -------------------------------------------------------------------------

    async def call(self, session: aiohttp.ClientSession, gateway: str, tally: Tally) -> None:
        tally.sent += 1
        try:
            async with session.post(f"{gateway}/_inference/completion/{RATE_ID}",
                                    json=self.body, timeout=self.timeout) as response:
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

    def paced(self, rpm: float) -> Load:
        """Demand of ``rpm`` requests per minute, evenly spaced (open loop)."""

        async def load(session: aiohttp.ClientSession, gateway: str, tally: Tally) -> None:
            interval, due = 60.0 / rpm, time.monotonic()
            in_flight: set[asyncio.Task[None]] = set()
            try:
                while True:
                    task = asyncio.create_task(self.call(session, gateway, tally))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
                    due += interval
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
            finally:
                for task in in_flight:
                    task.cancel()
                await asyncio.gather(*in_flight, return_exceptions=True)

        return load

    # -- one scenario ------------------------------------------------------------------

    async def emulator(self, session: aiohttp.ClientSession, method: str) -> list[Any]:
        async with session.request(method, f"{self.base.emulator_url}/_emulator/requests") as r:
            r.raise_for_status()
            return await r.json()

    async def scenario(self, session: aiohttp.ClientSession, loads: list[Load | None],
                       seconds: float, switch: list[Load | None] | None = None,
                       ) -> dict[str, Any]:
        """``loads`` per replica for ``seconds``; with ``switch``, at half time the
        EndpointSlice goes to one ready endpoint and the loads become those."""
        await self.emulator(session, "DELETE")
        # Every bucket refills (capacity 1) while nothing is sent.
        await asyncio.sleep(max(2.0, 2 * 60.0 * 3 / self.args.rpm))
        tallies = [Tally() for _ in self.gateways]
        t0 = time.monotonic()

        def run(plan: list[Load | None]) -> list[asyncio.Task[None] | None]:
            return [asyncio.create_task(load(session, g.url, tally)) if load else None
                    for load, g, tally in zip(plan, self.gateways, tallies, strict=True)]

        tasks = run(loads)
        scaled: dict[str, Any] = {}
        if switch is not None:
            await asyncio.sleep(t0 + seconds / 2 - time.monotonic())
            switched_at = time.monotonic()
            await asyncio.to_thread(self.cluster.peers, 1)
            for index, (task, load) in enumerate(zip(tasks, switch, strict=True)):
                if task is not None and load is None:
                    task.cancel()
                    tasks[index] = None
            scaled["slice_written_s"] = time.monotonic() - switched_at
            scaled["replica_0_counts_1_after_s"] = await self.replicas_seen(
                session, self.gateways[0], 1, switched_at)
        await asyncio.sleep(max(0.0, t0 + seconds - time.monotonic()))
        for task in tasks:
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in tasks if t), return_exceptions=True)
        await asyncio.sleep(0.5)
        log = await self.emulator(session, "GET")
        received = sorted(e["received_at"] - t0 for e in log
                          if e["path"] == "/v1/messages" and 0 <= e["received_at"] - t0 < seconds)
        result = {"seconds": seconds, "calls": len(received),
                  "replicas": [t.as_dict() for t in tallies],
                  "received_s": [round(t, 3) for t in received]}
        if switch is not None:
            half = seconds / 2
            span = self.args.window  # a minute, or what --quick scales it to
            result.update(scaled)
            result["calls_first_half"] = sum(t < half for t in received)
            result["calls_second_half"] = sum(t >= half for t in received)
            result["sliding_span_s"] = span
            result["sliding_max"] = sliding_max(received, span)
        return result

    async def replicas_seen(self, session: aiohttp.ClientSession, gateway: Gateway,
                            replicas: int, since: float) -> float:
        deadline = since + 30
        while time.monotonic() < deadline:
            async with session.get(f"{gateway.url}/healthz") as response:
                if (await response.json())["replicas"] == replicas:
                    return time.monotonic() - since
            await asyncio.sleep(0.01)
        raise TimeoutError(f"{gateway.service.name} never counted {replicas} replica(s)")

    async def run(self) -> dict[str, Any]:
        rpm, window, callers = self.args.rpm, self.args.window, self.args.callers
        limit = rpm * window / 60
        results: dict[str, Any] = {"rpm": rpm, "window_s": window, "limit": limit,
                                   "callers_per_replica": callers,
                                   "client_timeout_s": self.args.client_timeout}
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            step(f"(i) even: {callers} waiting callers on each of 3 replicas, {window:g} s")
            results["even"] = await self.scenario(
                session, [self.waiting(callers)] * 3, window)
            report_line("even", results["even"], limit)

            step(f"(ii-a) uneven callers 3:1:1 ({3 * callers}:{callers}:{callers}), "
                 f"always waiting, {window:g} s")
            results["uneven_callers"] = await self.scenario(
                session, [self.waiting(3 * callers), self.waiting(callers),
                          self.waiting(callers)], window)
            report_line("uneven callers", results["uneven_callers"], limit)

            demand = [rpm * 3 / 5, rpm / 5, rpm / 5]
            step(f"(ii-b) uneven demand 3:1:1 summing to the limit "
                 f"({'/'.join(f'{d:g}' for d in demand)} rpm), {window:g} s")
            results["uneven_demand"] = await self.scenario(
                session, [self.paced(d) for d in demand], window)
            results["uneven_demand"]["demand_rpm"] = demand
            results["uneven_demand"]["expected"] = sum(
                min(d, rpm / 3) * window / 60 for d in demand)
            report_line("uneven demand", results["uneven_demand"], limit)

            scale_window = 2 * window
            step(f"(iii) 3 → 1 replicas at half time of {scale_window:g} s: waiting callers, "
                 "then the EndpointSlice to 1 ready endpoint and only replica 0 called")
            results["scale_down"] = await self.scenario(
                session, [self.waiting(callers)] * 3, scale_window,
                switch=[self.waiting(callers), None, None])
            scale = results["scale_down"]
            report_line("3 → 1", scale, rpm * scale_window / 60)
            step(f"  halves {scale['calls_first_half']} + {scale['calls_second_half']}; max in "
                 f"any {scale['sliding_span_s']:g} s: {scale['sliding_max']}; replica 0 counted "
                 f"1 after {scale['replica_0_counts_1_after_s'] * 1000:.0f} ms")
        return results


def sliding_max(times: list[float], span: float) -> int:
    """The most calls in any ``span`` seconds (times sorted)."""
    best, first = 0, 0
    for last, at in enumerate(times):
        while at - times[first] >= span:
            first += 1
        best = max(best, last - first + 1)
    return best


def report_line(name: str, result: dict[str, Any], limit: float) -> None:
    per = "/".join(str(r["ok"]) for r in result["replicas"])
    timeouts = sum(r["timeouts"] for r in result["replicas"])
    errors = sum(sum(r["errors"].values()) for r in result["replicas"])
    step(f"  {name}: {result['calls']} upstream calls, limit {limit:g}, "
         f"{result['calls'] / limit:.1%}; per replica {per}; "
         f"{timeouts} client timeouts, {errors} errors")


# -- the report --------------------------------------------------------------------------

START = "<!-- fleet-bench:start (generated by bench/fleet/run.py) -->"
END = "<!-- fleet-bench:end -->"


def mark(ok: bool | None) -> str:
    return "" if ok is None else "met" if ok else "**not met**"


def section(result: dict[str, Any]) -> str:
    run, load, rate = result["run"], result["config_load"], result["rate_limit"]
    base, full, delta = load["median"]["baseline"], load["median"]["loaded"], load["delta"]
    prop = load["propagation"]
    machine = run["machine"]
    lines = [
        f"`{run['command']}` on {machine['cpu']} ({machine['nproc']} cores, `nproc`), "
        f"{machine['memory_gib']} GiB, Python {machine['python']}, {run['date']}; load "
        f"average {machine['load_average_start'][0]:.1f} at the start, "
        f"{machine['load_average_end'][0]:.1f} at the end; {run['duration_seconds']} s.",
        "",
        f"**Configuration load**: {load['endpoints']:,} endpoints (ids `team-00-ep-0000` … "
        f"over {load['teams']} teams, {'/'.join(map(str, load['key_length']))}-character keys) "
        f"in {load['shards']} shard Secrets, {load['stored_bytes'] / 1e6:.2f} MB stored "
        f"(largest {load['largest_shard_bytes'] / 1e3:.0f} kB, "
        f"{min(load['endpoints_per_shard'])} to {max(load['endpoints_per_shard'])} endpoints "
        f"each). A fresh gateway process each time, against a baseline started the same way "
        f"on {load['shards']} empty shards; medians of {len(load['rounds']['loaded'])} "
        f"alternated rounds; RSS read {run['args']['settle']:g} s after ready.",
        "",
        "| measure | baseline (empty shards) | 5,000 endpoints | difference | target | |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| process start → `/readyz` 200 with every endpoint served | {base['ready_s']:.2f} s "
        f"| {full['ready_s']:.2f} s | {delta['ready_s']:+.2f} s | < 5 s | "
        f"{mark(full['ready_s'] < 5)} |",
        f"| RSS when ready | {base['rss_mib']:.1f} MiB | {full['rss_mib']:.1f} MiB | "
        f"{delta['rss_mib']:+.1f} MiB | < 50 MiB more | {mark(delta['rss_mib'] < 50)} |",
        f"| peak RSS (VmHWM) | {base['peak_rss_mib']:.1f} MiB | {full['peak_rss_mib']:.1f} MiB "
        f"| {delta['peak_rss_mib']:+.1f} MiB | | |",
        f"| one key rotated in one shard → `/healthz` shows its generation ({prop['changes']} "
        f"changes, shards in turn) | | median {prop['median_s'] * 1000:.0f} ms, p90 "
        f"{prop['p90_s'] * 1000:.0f} ms, max {prop['max_s'] * 1000:.0f} ms | the write alone: "
        f"median {prop['write_median_s'] * 1000:.0f} ms | | |",
        "",
        f"**The shared rate limit**: three gateways with `--peers-service`, one endpoint at "
        f"{rate['rpm']} rpm, one emulator (calls counted in its request log by receive time); "
        f"windows of {rate['window_s']:g} s (3 → 1: {2 * rate['window_s']:g} s), so the limit "
        f"is {rate['limit']:g} calls per window. Callers: {rate['callers_per_replica']} per "
        f"replica that always have a request waiting, or paced demand; client timeout "
        f"{rate['client_timeout_s']:g} s (the gateway then drops the queued request).",
        "",
        "| scenario | upstream calls | limit | ratio | per replica (answers) | target | |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    limit, n = rate["limit"], 3

    def per(scenario: dict[str, Any]) -> str:
        return " / ".join(str(r["ok"]) for r in scenario["replicas"])

    even = rate["even"]
    lines.append(f"| (i) even: {rate['callers_per_replica']} waiting callers per replica | "
                 f"{even['calls']} | {limit:g} | {even['calls'] / limit:.1%} | {per(even)} | "
                 f"≤ limit + 3, ≥ 95 % | {mark(0.95 * limit <= even['calls'] <= limit + n)} |")
    callers = rate["uneven_callers"]
    lines.append(f"| (ii-a) uneven callers 3:1:1, each always waiting | {callers['calls']} | "
                 f"{limit:g} | {callers['calls'] / limit:.1%} | {per(callers)} | | |")
    demand = rate["uneven_demand"]
    lines.append(f"| (ii-b) uneven demand 3:1:1 summing to the limit "
                 f"({' / '.join(f'{d:g}' for d in demand['demand_rpm'])} rpm) | "
                 f"{demand['calls']} | {limit:g} | {demand['calls'] / limit:.1%} | "
                 f"{per(demand)} | expected Σ min(demand, rpm/3) = {demand['expected']:g} | |")
    scale = rate["scale_down"]
    scale_limit = rate["rpm"] * scale["seconds"] / 60
    span_limit = rate["rpm"] * scale["sliding_span_s"] / 60
    lines.append(f"| (iii) 3 → 1 at half time, whole window | {scale['calls']} "
                 f"({scale['calls_first_half']} + {scale['calls_second_half']}) | "
                 f"{scale_limit:g} | {scale['calls'] / scale_limit:.1%} | {per(scale)} | "
                 f"≤ limit + 3 | {mark(scale['calls'] <= scale_limit + n)} |")
    lines.append(f"| (iii) 3 → 1, most calls in any {scale['sliding_span_s']:g} s | "
                 f"{scale['sliding_max']} | {span_limit:g} | "
                 f"{scale['sliding_max'] / span_limit:.1%} | | ≤ limit + 3 | "
                 f"{mark(scale['sliding_max'] <= span_limit + n)} |")
    timeouts = {name: sum(r["timeouts"] for r in rate[name]["replicas"])
                for name in ("even", "uneven_callers", "uneven_demand", "scale_down")}
    errors = sum(sum(r["errors"].values()) for name in timeouts for r in rate[name]["replicas"])
    lines += ["", f"After the EndpointSlice update (written in "
              f"{scale['slice_written_s'] * 1000:.0f} ms) replica 0 counted 1 replica after "
              f"{scale['replica_0_counts_1_after_s'] * 1000:.0f} ms. Client timeouts "
              f"(requests given up while queued): "
              + ", ".join(f"{name} {count}" for name, count in timeouts.items())
              + f"; other errors: {errors}."]
    return "\n".join(lines)


def write_report(path: Path, result: dict[str, Any]) -> None:
    """Rewrite the generated section between the markers (appended if missing)."""
    splice_section(path, START, END, f"{START}\n{section(result)}\n{END}", "Gateway fleet")


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return {"cpu": cpu, "nproc": len(os.sched_getaffinity(0)),
            "memory_gib": round(mem_kib / 1024 / 1024), "arch": platform.machine(),
            "os": platform.platform(), "python": platform.python_version(),
            "load_average_start": os.getloadavg()}


# -- main ------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoints", type=int, default=5000)
    parser.add_argument("--teams", type=int, default=50, help="id prefixes team-00 …")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternated baseline/loaded gateway starts")
    parser.add_argument("--settle", type=float, default=1.0,
                        help="seconds after ready before RSS is read")
    parser.add_argument("--propagations", type=int, default=10, help="key rotations timed")
    parser.add_argument("--rpm", type=int, default=120, help="the shared endpoint's limit")
    parser.add_argument("--window", type=float, default=60.0,
                        help="seconds per rate-limit scenario (3 → 1: twice that)")
    parser.add_argument("--callers", type=int, default=2,
                        help="waiting callers per replica (ii-a: 3x on the first)")
    parser.add_argument("--client-timeout", type=float, default=10.0)
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: one round, 12 s windows at a limit scaled to "
                             "keep the calls per window, results not written to docs/")
    parser.add_argument("--out", type=Path, default=ROOT / "docs",
                        help="where benchmarks.md lives (the JSON goes to its benchmarks/)")
    parser.add_argument("--command", help=argparse.SUPPRESS)  # as bench/run.py was called
    args = parser.parse_args(argv)
    if args.quick:
        args.rpm = round(args.rpm * args.window / 12)
        args.window, args.rounds, args.propagations = 12.0, 1, 3
        args.client_timeout = 5.0
        args.out = Path(tempfile.mkdtemp(prefix="fleet-bench-quick-"))
    if not 1 <= args.window <= 300 or args.rpm < 3:
        parser.error("--window must be 1 to 300 seconds and --rpm at least 3")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    given = sys.argv[1:] if argv is None else argv
    command = args.command or " ".join(["bench/fleet/run.py", *given])
    began, info = datetime.now(UTC), machine()
    # SIGTERM (a CI timeout, kill) unwinds like Ctrl-C, so the processes are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    step(f"control plane, emulator; logs in {work}")
    plane = launcher.start(work / "controlplane")
    base = Stack(work, api_keys=(), kubeconfig=plane.kubeconfig, config_namespace=NAMESPACE)
    try:
        cluster = Cluster(plane.kubeconfig)
        cluster.core.create_namespace({"metadata": {"name": NAMESPACE}})
        base.start(base.emulator("--log-level", "warning"), START_SECONDS)
        step("1. configuration load")
        config_load = configuration_load(args, base, cluster)
        step("2. the shared rate limit: three gateways with --peers-service")
        rate = RateBench(args, base, cluster)
        rate.setup()
        rate_limit = asyncio.run(rate.run())
    finally:
        base.stop()
        plane.stop()
    info["load_average_end"] = os.getloadavg()
    output = save_results(args, "fleet", command, began, info,
                          {"config_load": config_load, "rate_limit": rate_limit}, write_report)
    step(f"results: {output}, {args.out / 'benchmarks.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
