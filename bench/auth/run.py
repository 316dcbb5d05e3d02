"""Gateway authentication benchmark: what ``--auth kubernetes`` adds to a request, with a
warm cache and for a token's first call, side by side with ``--auth none`` in one run;
then how many reviews the API server sees under concurrent load.

One control plane (kube-apiserver + etcd on loopback, no controller-manager), one emulator
(answering at once), one set of shard Secrets holding two endpoints whose records name
their owner InferenceEndpoint (``ep-a``, ``ep-b`` in the callers' namespace). The gateways
run in config mode as processes (``inference-operator gateway --config-secret ...``), as
their own ServiceAccount: get/list/watch on the shards, and ``system:auth-delegator``. The
callers are the ServiceAccount ``app`` with RBAC verb ``invoke`` on both endpoints; their
tokens come from the TokenRequest API (what ``kubectl create token`` calls) with the
audience ``inference-operator``, all made before the measurement.

1. latency, sequential requests on one keep-alive connection per gateway, three gateway
   processes running at once (one per mode), alternated rounds (the order rotated each
   round) so machine noise hits all three alike:
   (a) ``--auth none``;
   (b) ``--auth kubernetes`` with a warm cache: one token, its decisions cached
       (``--auth-cache-seconds 600``, so none expires during the phase);
   (c) ``--auth kubernetes``, each call with a new token: one TokenReview and one
       SubjectAccessReview each, counted;
2. load: a fresh gateway with ``--auth-cache-seconds 10``, a new token, ``--load-callers``
   concurrent callers (each always one request in flight, alternating the two endpoints)
   for ``--load-seconds``; the TokenReviews and SubjectAccessReviews the API server
   answered (``apiserver_request_total`` deltas) against one per token and endpoint per
   cache period.

Writes docs/benchmarks/auth.json and the auth section of docs/benchmarks.md.

    .venv/bin/python bench/run.py --only auth [--quick]
    .venv/bin/python bench/auth/run.py [--rounds 10] [--warm-requests 500] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import math
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes import client, config
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: common.py, fleet/
from common import percentile, save_results, splice_section
from fleet.run import START_SECONDS, Gateway, fake_key, machine, step, wait_loaded

from inference_devkit.controlplane import binaries, launcher
from inference_devkit.controlplane.apimetrics import requests_by_resource
from inference_devkit.controlplane.kubeconfig import write_token_kubeconfig
from inference_devkit.controlplane.kubectl import Kubectl
from inference_devkit.devstack.processes import Stack
from inference_devkit.loopback import free_port
from inference_operator.api.gateway_config import OWNER_KEY, Shard, Shards
from inference_operator.gateway.auth import DEFAULT_AUDIENCE

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "bench-auth"  # the shards and the gateways' ServiceAccount
TEAM = "bench-auth-team"  # the callers and the endpoints' owners
CONFIG = "auth-bench"  # the shard Secrets' base name
GATEWAY_ACCOUNT, CALLER_ACCOUNT = "gateway", "app"
ENDPOINTS = ("ep-a", "ep-b")  # inference ids, and the names of their InferenceEndpoints
RPM = 1_000_000  # the rate limit never queues a request here
BODY = {"input": "What is Elastic?"}
MODES = {"none": "(a) --auth none",
         "warm": "(b) --auth kubernetes, warm cache",
         "cold": "(c) --auth kubernetes, a new token per call"}
LATENCY_CACHE_SECONDS = 600.0  # (b): nothing expires while the phase runs
TOKEN_SECONDS = 3600


# -- the cluster -------------------------------------------------------------------------


class Cluster:
    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig
        self.api = config.new_client_from_config(config_file=str(kubeconfig))
        self.core = client.CoreV1Api(self.api)
        self.kubectl = Kubectl(binaries.resolve("kubectl"), kubeconfig)

    def setup(self, base: Stack, work: Path) -> Path:
        """Namespaces, the gateways' identity, the caller and its RBAC, the shards with
        both endpoints; the gateways' kubeconfig."""
        for name in (NAMESPACE, TEAM):
            self.core.create_namespace({"metadata": {"name": name}})
        self.core.create_namespaced_service_account(
            NAMESPACE, {"metadata": {"name": GATEWAY_ACCOUNT}})
        self.core.create_namespaced_service_account(
            TEAM, {"metadata": {"name": CALLER_ACCOUNT}})
        shards = Shards(CONFIG)
        gateway_subject = [{"kind": "ServiceAccount", "name": GATEWAY_ACCOUNT,
                            "namespace": NAMESPACE}]
        self.kubectl.apply([
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
             "metadata": {"name": "gateway-config", "namespace": NAMESPACE},
             "rules": [{"apiGroups": [""], "resources": ["secrets"],
                        "resourceNames": shards.names(), "verbs": ["get", "list", "watch"]}]},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
             "metadata": {"name": "gateway-config", "namespace": NAMESPACE},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                         "name": "gateway-config"}, "subjects": gateway_subject},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
             "metadata": {"name": "bench-auth-gateway-auth-delegator"},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                         "name": "system:auth-delegator"}, "subjects": gateway_subject},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
             "metadata": {"name": "invoke", "namespace": TEAM},
             "rules": [{"apiGroups": ["inference-operator.dev"],
                        "resources": ["inferenceendpoints"], "verbs": ["invoke"],
                        "resourceNames": list(ENDPOINTS)}]},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
             "metadata": {"name": "invoke", "namespace": TEAM},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                         "name": "invoke"},
             "subjects": [{"kind": "ServiceAccount", "name": CALLER_ACCOUNT,
                           "namespace": TEAM}]},
        ])
        dataclasses.replace(base, config_secret=CONFIG).create_config()
        rng = random.Random(7)
        grouped: dict[str, list[dict[str, Any]]] = {}
        for inference_id in ENDPOINTS:
            grouped.setdefault(shards.of(inference_id), []).append({
                "inference_id": inference_id, "task_type": "completion",
                "service": "anthropic",
                "service_settings": {"api_key": fake_key(rng), "model_id": "claude-sonnet-4-5",
                                     "rate_limit": {"requests_per_minute": RPM}},
                "task_settings": {"max_tokens": 64},
                OWNER_KEY: {"namespace": TEAM, "name": inference_id}})
        for name, records in grouped.items():
            self.core.patch_namespaced_secret(
                name, NAMESPACE, {"data": Shard(1, tuple(records)).encode()})
        kubeconfig = work / "gateway.kubeconfig"
        write_token_kubeconfig(kubeconfig, self.kubeconfig,
                               self.token(NAMESPACE, GATEWAY_ACCOUNT, audience=None))
        return kubeconfig

    def token(self, namespace: str, account: str,
              audience: str | None = DEFAULT_AUDIENCE) -> str:
        """A ServiceAccount token from the TokenRequest API (``kubectl create token``)."""
        spec: dict[str, Any] = {"expirationSeconds": TOKEN_SECONDS}
        if audience:
            spec["audiences"] = [audience]
        answer = self.core.create_namespaced_service_account_token(
            account, namespace, {"apiVersion": "authentication.k8s.io/v1",
                                 "kind": "TokenRequest", "spec": spec})
        return answer.status.token

    def reviews(self) -> dict[str, float]:
        """TokenReviews and SubjectAccessReviews the API server answered so far
        (``apiserver_request_total``, every verb and code)."""
        text = self.kubectl.run("get", "--raw", "/metrics").stdout
        return requests_by_resource(text, ("tokenreviews", "subjectaccessreviews"))


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, int]:
    return {key: round(after[key] - before[key]) for key in after}


# -- gateway processes ---------------------------------------------------------------------


def start_gateway(base: Stack, name: str, kubeconfig: Path, *extra: str) -> Gateway:
    """A gateway in config mode on its own port, as ``Stack.gateway`` starts one, with the
    gateways' ServiceAccount as its identity (bench/fleet's start_gateway, another
    kubeconfig)."""
    stack = dataclasses.replace(base, config_secret=CONFIG, gateway_port=free_port(),
                                gateway_metrics_port=free_port(),
                                services={})
    service = stack.gateway("--log-level", "warning", *extra)
    service.name, service.health_url = name, None
    service.log_path = base.work_dir / f"{name}.log"
    service.env["KUBECONFIG"] = str(kubeconfig)
    started_at = time.perf_counter()
    base.start(service)
    return Gateway(service, stack.gateway_url, started_at, stack.gateway_metrics_url)


async def gateway_reviews(session: aiohttp.ClientSession, gateway: Gateway) -> dict[str, float]:
    """The gateway's own count of the reviews it asked (inference_gateway_auth_reviews_total),
    by review and outcome."""
    async with session.get(gateway.metrics_url) as response:
        text = await response.text()
    return {f"{sample.labels['review']}/{sample.labels['outcome']}": sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples if sample.name == "inference_gateway_auth_reviews_total"}


# -- 1. latency ----------------------------------------------------------------------------


@dataclasses.dataclass
class Series:
    latencies: list[float] = dataclasses.field(default_factory=list)  # seconds, answers 200
    errors: dict[str, int] = dataclasses.field(default_factory=dict)
    round_p50s: list[float] = dataclasses.field(default_factory=list)
    # The gateway process's CPU over the whole phase (it idles during the other modes'
    # rounds): /proc counts 10 ms ticks, so over 500 requests that is ±0.02 ms each.
    cpu_seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        ms = [x * 1000 for x in self.latencies]
        return {"requests": len(ms) + sum(self.errors.values()), "ok": len(ms),
                "errors": self.errors,
                **{f"p{q}_ms": round(percentile(ms, q / 100), 3) for q in (50, 90, 99)},
                "mean_ms": round(statistics.fmean(ms), 3) if ms else math.nan,
                "min_ms": round(min(ms), 3) if ms else math.nan,
                "max_ms": round(max(ms), 3) if ms else math.nan,
                "round_p50s_ms": [round(x * 1000, 3) for x in self.round_p50s],
                "gateway_cpu_ms_per_request": round(self.cpu_seconds / len(ms) * 1000, 3)
                if ms else math.nan}


async def timed(session: aiohttp.ClientSession, url: str, headers: dict[str, str],
                series: Series | None) -> float | None:
    started = time.perf_counter()
    try:
        async with session.post(url, json=BODY, headers=headers) as response:
            await response.read()
            took = time.perf_counter() - started
            error = None if response.status == 200 else str(response.status)
    except aiohttp.ClientError as failure:
        took, error = 0.0, type(failure).__name__
    if series is not None:
        if error is None:
            series.latencies.append(took)
        else:
            series.errors[error] = series.errors.get(error, 0) + 1
    return None if error else took


async def latency(args: argparse.Namespace, cluster: Cluster,
                  gateways: dict[str, Gateway]) -> dict[str, Any]:
    warm_token = cluster.token(TEAM, CALLER_ACCOUNT)
    cold_tokens = [cluster.token(TEAM, CALLER_ACCOUNT)
                   for _ in range(args.cold_requests + args.warmup_cold)]
    step(f"  {len(cold_tokens) + 1} tokens made beforehand (TokenRequest API)")
    path = f"/_inference/completion/{ENDPOINTS[0]}"
    sessions = {mode: aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))
                for mode in gateways}
    try:
        # Connections opened, and (b)'s decisions cached; (c)'s gateway has talked to the
        # API server about a token before, as one that has been serving would have.
        for _ in range(args.warmup):
            for mode in ("none", "warm"):
                headers = {} if mode == "none" else {"Authorization": f"Bearer {warm_token}"}
                await timed(sessions[mode], gateways[mode].url + path, headers, None)
        for _ in range(args.warmup_cold):
            await timed(sessions["cold"], gateways["cold"].url + path,
                        {"Authorization": f"Bearer {cold_tokens.pop()}"}, None)
        for mode in ("none", "warm"):
            headers = {} if mode == "none" else {"Authorization": f"Bearer {warm_token}"}
            if await timed(sessions[mode], gateways[mode].url + path, headers, None) is None:
                raise RuntimeError(f"the {mode} gateway does not answer 200\n"
                                   + gateways[mode].service.log_tail(10))
        before_api = await asyncio.to_thread(cluster.reviews)
        before_gw = {m: await gateway_reviews(sessions[m], g) for m, g in gateways.items()}

        series = {mode: Series() for mode in gateways}
        per_round = {"none": args.warm_requests // args.rounds,
                     "warm": args.warm_requests // args.rounds,
                     "cold": args.cold_requests // args.rounds}
        orders = list(itertools.permutations(gateways))
        cpu = {mode: gateway.service.cpu_seconds() for mode, gateway in gateways.items()}
        for number in range(args.rounds):
            order = orders[number % len(orders)]
            for mode in order:
                gateway, samples = gateways[mode], series[mode]
                url, session = gateway.url + path, sessions[mode]
                start = len(samples.latencies)
                for _ in range(per_round[mode]):
                    bearer = (None if mode == "none" else
                              warm_token if mode == "warm" else cold_tokens.pop())
                    await timed(session, url,
                                {} if bearer is None else {"Authorization": f"Bearer {bearer}"},
                                samples)
                samples.round_p50s.append(statistics.median(samples.latencies[start:])
                                          if len(samples.latencies) > start else math.nan)
            step(f"  round {number + 1}/{args.rounds} ({' → '.join(order)}): p50 "
                 + ", ".join(f"{m} {series[m].round_p50s[-1] * 1000:.2f} ms" for m in gateways))

        for mode, gateway in gateways.items():
            series[mode].cpu_seconds = gateway.service.cpu_seconds() - cpu[mode]
        after_api = await asyncio.to_thread(cluster.reviews)
        after_gw = {m: await gateway_reviews(sessions[m], g) for m, g in gateways.items()}
    finally:
        for session in sessions.values():
            await session.close()

    results: dict[str, Any] = {
        "path": path, "rounds": args.rounds, "per_round": per_round,
        "orders": [list(orders[n % len(orders)]) for n in range(args.rounds)],
        "warmup_calls": {"none": args.warmup, "warm": args.warmup, "cold": args.warmup_cold},
        "latency_cache_seconds": LATENCY_CACHE_SECONDS,
        "modes": {mode: series[mode].summary() for mode in gateways},
        "api_server_reviews": delta(after_api, before_api),
        "gateway_reviews": {m: {k: round(after_gw[m].get(k, 0) - before_gw[m].get(k, 0))
                                for k in after_gw[m]} for m in gateways},
    }
    base = results["modes"]["none"]
    results["added_ms"] = {
        mode: {f"p{q}": round(results["modes"][mode][f"p{q}_ms"] - base[f"p{q}_ms"], 3)
               for q in (50, 90, 99)} for mode in ("warm", "cold")}
    results["added_p50_per_round_ms"] = {
        mode: [round((x - y) * 1000, 3) for x, y in
               zip(series[mode].round_p50s, series["none"].round_p50s, strict=True)]
        for mode in ("warm", "cold")}
    results["added_p50_round_median_ms"] = {
        mode: round(statistics.median(values), 3)
        for mode, values in results["added_p50_per_round_ms"].items()}
    for mode in gateways:
        s = results["modes"][mode]
        step(f"  {mode}: {s['ok']} ok, {sum(s['errors'].values())} errors; p50 "
             f"{s['p50_ms']:.3f} ms, p90 {s['p90_ms']:.3f} ms, p99 {s['p99_ms']:.3f} ms; "
             f"gateway CPU {s['gateway_cpu_ms_per_request']:.3f} ms per request")
    step(f"  added vs none: warm {results['added_ms']['warm']}, "
         f"cold {results['added_ms']['cold']}; API server saw {results['api_server_reviews']}")
    return results


# -- 2. load -------------------------------------------------------------------------------


async def load(args: argparse.Namespace, cluster: Cluster, gateway: Gateway) -> dict[str, Any]:
    bearer = cluster.token(TEAM, CALLER_ACCOUNT)
    headers = {"Authorization": f"Bearer {bearer}"}
    statuses: dict[str, int] = {}
    latencies: list[float] = []
    sends: list[float] = []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        before_gw = await gateway_reviews(session, gateway)
        before = await asyncio.to_thread(cluster.reviews)
        t0 = time.monotonic()
        deadline = t0 + args.load_seconds

        async def caller(index: int) -> None:
            for number in itertools.count(index):
                now = time.monotonic()
                if now >= deadline:
                    return
                sends.append(now - t0)
                url = f"{gateway.url}/_inference/completion/{ENDPOINTS[number % 2]}"
                try:
                    async with session.post(url, json=BODY, headers=headers) as response:
                        await response.read()
                        status = str(response.status)
                except aiohttp.ClientError as failure:
                    status = type(failure).__name__
                latencies.append(time.monotonic() - now)
                statuses[status] = statuses.get(status, 0) + 1

        await asyncio.gather(*(caller(i) for i in range(args.load_callers)))
        elapsed = time.monotonic() - t0
        after = await asyncio.to_thread(cluster.reviews)
        after_gw = await gateway_reviews(session, gateway)
    seen = delta(after, before)
    span = max(sends) - min(sends)
    # A decision is asked again only once its lifetime is over: continuous demand over
    # ``span`` seconds touches floor(span / cache) + 1 cache periods.
    periods = math.floor(span / args.load_cache_seconds) + 1
    result = {
        "callers": args.load_callers, "seconds": args.load_seconds,
        "cache_seconds": args.load_cache_seconds, "tokens": 1, "endpoints": len(ENDPOINTS),
        "requests": len(latencies), "statuses": statuses,
        "requests_per_second": round(len(latencies) / elapsed, 1),
        "elapsed_s": round(elapsed, 3), "send_span_s": round(span, 3),
        "cache_periods": periods,
        "latency_ms": {f"p{q}": round(percentile(latencies, q / 100) * 1000, 2)
                       for q in (50, 90, 99)},
        "api_server_reviews": seen,
        "gateway_reviews": {k: round(after_gw.get(k, 0) - before_gw.get(k, 0))
                            for k in after_gw},
        "bound": {"tokenreviews": periods, "subjectaccessreviews": periods * len(ENDPOINTS)},
    }
    result["met"] = (seen["tokenreviews"] <= periods
                     and seen["subjectaccessreviews"] <= periods * len(ENDPOINTS))
    step(f"  {result['requests']} requests ({result['requests_per_second']} req/s, statuses "
         f"{statuses}) in {elapsed:.1f} s; API server saw {seen['tokenreviews']} TokenReviews "
         f"and {seen['subjectaccessreviews']} SubjectAccessReviews (bound "
         f"{result['bound']['tokenreviews']} and {result['bound']['subjectaccessreviews']})")
    return result


# -- the report ----------------------------------------------------------------------------

START = "<!-- auth-bench:start (generated by bench/auth/run.py) -->"
END = "<!-- auth-bench:end -->"
WARM_P50_GOAL_MS = 0.2


def mark(ok: bool) -> str:
    return "met" if ok else "**not met**"


def section(result: dict[str, Any]) -> str:
    run, lat, burst = result["run"], result["latency"], result["load"]
    info = run["machine"]
    modes, added = lat["modes"], lat["added_ms"]
    cold_reviews = lat["api_server_reviews"]
    cold = modes["cold"]
    cold_ok = cold_reviews == {"tokenreviews": cold["requests"],
                               "subjectaccessreviews": cold["requests"]}
    lines = [
        f"`{run['command']}` on {info['cpu']} ({info['nproc']} cores, `nproc`), "
        f"{info['memory_gib']} GiB, Python {info['python']}, {run['date']}; load average "
        f"{info['load_average_start'][0]:.1f} at the start, "
        f"{info['load_average_end'][0]:.1f} at the end; {run['duration_seconds']} s.",
        "",
        f"**Latency**: three gateway processes at once in config mode (one per mode, the "
        f"same shard Secrets, emulator and control plane), sequential `POST "
        f"{lat['path']}` on one keep-alive connection each, measured in the bench's aiohttp "
        f"client; {lat['rounds']} rounds of {lat['per_round']['none']} / "
        f"{lat['per_round']['warm']} / {lat['per_round']['cold']} requests, the order "
        f"rotated each round; warm-up calls not counted. Both kubernetes gateways ran with "
        f"`--auth-cache-seconds {lat['latency_cache_seconds']:g}`, so no (b) decision "
        f"expired during the phase.",
        "",
        "| mode | requests | errors | p50 ms | p90 ms | p99 ms | added p50 | added p90 "
        "| added p99 | gateway CPU per request |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for mode, label in MODES.items():
        s = modes[mode]
        more = (["", "", ""] if mode == "none" else
                [f"{added[mode][f'p{q}']:+.3f} ms" for q in (50, 90, 99)])
        lines.append(f"| {label} | {s['requests']} | {sum(s['errors'].values())} | "
                     f"{s['p50_ms']:.3f} | {s['p90_ms']:.3f} | {s['p99_ms']:.3f} | "
                     + " | ".join(more) + f" | {s['gateway_cpu_ms_per_request']:.3f} ms |")
    per_round = lat["added_p50_per_round_ms"]["warm"]
    warm_ok = added["warm"]["p50"] <= WARM_P50_GOAL_MS
    lines += [
        "",
        "| target | goal | measured | |",
        "| --- | --- | --- | --- |",
        f"| warm cache: added latency p50 vs `--auth none` | ≤ {WARM_P50_GOAL_MS} ms | "
        f"{added['warm']['p50']:+.3f} ms (the median of the {len(per_round)} rounds' "
        f"differences {lat['added_p50_round_median_ms']['warm']:+.3f} ms, from "
        f"{min(per_round):+.3f} to {max(per_round):+.3f}) | {mark(warm_ok)} |",
        f"| a token's first call: one TokenReview and one SubjectAccessReview | "
        f"{cold['requests']} and {cold['requests']} | {cold_reviews['tokenreviews']} and "
        f"{cold_reviews['subjectaccessreviews']} (the API server's counts over the phase) | "
        f"{mark(cold_ok)} |",
        f"| load: reviews per token and endpoint per cache period | ≤ 1 | "
        f"{burst['api_server_reviews']['tokenreviews']} TokenReview(s), "
        f"{burst['api_server_reviews']['subjectaccessreviews']} SubjectAccessReview(s) for 1 "
        f"token and {burst['endpoints']} endpoints over {burst['cache_periods']} period(s) | "
        f"{mark(burst['met'])} |",
        "",
        f"**Load**: a fresh gateway with `--auth kubernetes --auth-cache-seconds "
        f"{burst['cache_seconds']:g}`, one new token, {burst['callers']} concurrent callers "
        f"(each always one request in flight, alternating `{ENDPOINTS[0]}` and "
        f"`{ENDPOINTS[1]}`) for {burst['seconds']:g} s: {burst['requests']:,} requests "
        f"({burst['requests_per_second']:,.0f} req/s; statuses "
        + ", ".join(f"{k}: {v:,}" for k, v in sorted(burst["statuses"].items()))
        + f"; p50 {burst['latency_ms']['p50']:.1f} ms, p99 {burst['latency_ms']['p99']:.1f} ms "
        f"at that concurrency). The API server answered "
        f"{burst['api_server_reviews']['tokenreviews']} TokenReview(s) and "
        f"{burst['api_server_reviews']['subjectaccessreviews']} SubjectAccessReview(s) "
        f"(`apiserver_request_total` before and after); sends spanned "
        f"{burst['send_span_s']:.1f} s, {burst['cache_periods']} cache period(s), so at most "
        f"{burst['bound']['tokenreviews']} and {burst['bound']['subjectaccessreviews']}. "
        f"The gateway's own count (`inference_gateway_auth_reviews_total`): "
        + ", ".join(f"{k} {v}" for k, v in sorted(burst["gateway_reviews"].items()) if v)
        + ".",
    ]
    return "\n".join(lines)


def write_report(path: Path, result: dict[str, Any]) -> None:
    splice_section(path, START, END, f"{START}\n{section(result)}\n{END}",
                   "Gateway authentication")


# -- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20,
                        help="alternated latency rounds (the requests split among them)")
    parser.add_argument("--warm-requests", type=int, default=500,
                        help="sequential requests for (a) none and (b) warm, each")
    parser.add_argument("--cold-requests", type=int, default=100,
                        help="sequential requests for (c), a new token each")
    parser.add_argument("--warmup", type=int, default=50,
                        help="uncounted calls to (a) and (b) first")
    parser.add_argument("--warmup-cold", type=int, default=3,
                        help="uncounted new-token calls to (c) first")
    parser.add_argument("--load-callers", type=int, default=200)
    parser.add_argument("--load-seconds", type=float, default=9.5,
                        help="the load phase; under --load-cache-seconds: one cache period")
    parser.add_argument("--load-cache-seconds", type=float, default=10.0)
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 2 rounds, 100/20 requests, 3 s of load; results "
                             "not written to docs/")
    parser.add_argument("--out", type=Path, default=ROOT / "docs",
                        help="where benchmarks.md lives (the JSON goes to its benchmarks/)")
    parser.add_argument("--command", help=argparse.SUPPRESS)  # as bench/run.py was called
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.warm_requests, args.cold_requests = 2, 100, 20
        args.warmup, args.load_seconds = 10, 3.0
        args.out = Path(tempfile.mkdtemp(prefix="auth-bench-quick-"))
    if args.rounds < 1 or min(args.warm_requests, args.cold_requests) < args.rounds:
        parser.error("every mode needs at least one request per round")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    given = sys.argv[1:] if argv is None else argv
    command = args.command or " ".join(["bench/auth/run.py", *given])
    began, info = datetime.now(UTC), machine()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds: processes stopped
    work = Path(tempfile.mkdtemp(prefix="bench-auth-"))
    step(f"control plane, emulator; logs in {work}")
    plane = launcher.start(work / "controlplane", controllers=False)
    base = Stack(work, api_keys=(), kubeconfig=plane.kubeconfig, config_namespace=NAMESPACE)
    try:
        cluster = Cluster(plane.kubeconfig)
        identity = cluster.setup(base, work)
        base.start(base.emulator("--log-level", "warning"), START_SECONDS)
        step("1. latency: three gateways, --auth none / kubernetes (warm) / kubernetes (cold)")
        kube = ("--auth", "kubernetes", "--auth-cache-seconds", f"{LATENCY_CACHE_SECONDS:g}")
        gateways = {"none": start_gateway(base, "gateway-none", identity, "--auth", "none"),
                    "warm": start_gateway(base, "gateway-warm", identity, *kube),
                    # What a review costs, not the budget of reviews for unknown tokens
                    # (every call here brings one): that budget lifted.
                    "cold": start_gateway(base, "gateway-cold", identity, *kube,
                                          "--auth-reviews-per-second", "1000000")}
        for gateway in gateways.values():
            wait_loaded(gateway, len(ENDPOINTS))
        latency_result = asyncio.run(latency(args, cluster, gateways))
        for gateway in gateways.values():
            gateway.service.stop()
        step(f"2. load: {args.load_callers} concurrent callers, one token, "
             f"{len(ENDPOINTS)} endpoints, --auth-cache-seconds {args.load_cache_seconds:g}")
        loaded = start_gateway(base, "gateway-load", identity, "--auth", "kubernetes",
                               "--auth-cache-seconds", f"{args.load_cache_seconds:g}")
        wait_loaded(loaded, len(ENDPOINTS))
        load_result = asyncio.run(load(args, cluster, loaded))
    finally:
        base.stop()
        plane.stop()
    info["load_average_end"] = os.getloadavg()
    output = save_results(args, "auth", command, began, info,
                          {"latency": latency_result, "load": load_result}, write_report)
    step(f"results: {output}, {args.out / 'benchmarks.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
