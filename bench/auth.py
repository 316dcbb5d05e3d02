"""Gateway authentication benchmark: what ``--auth kubernetes`` adds to a request, with a
warm cache and for a token's first call, side by side with ``--auth none`` in one run
(three gateway processes in config mode at once, alternated rounds), with the reviews
the API server answered. One
control plane (no controller-manager), one emulator; the callers' tokens come from the
TokenRequest API. docs/benchmarks.md says how it runs."""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes import client, config

from bench import harness, loadgen
from bench.harness import Gateway, mark, start_gateway, step, table
from bench.loadgen import Target
from inference_devkit.controlplane import binaries
from inference_devkit.controlplane.apimetrics import requests_by_resource
from inference_devkit.controlplane.kubeconfig import write_token_kubeconfig
from inference_devkit.controlplane.kubectl import Kubectl
from inference_devkit.devstack.processes import Stack
from inference_devkit.install import AUDIENCE  # the chart's, the gateway's default
from inference_operator.api.gateway_config import OWNER_KEY, Shards

NAME, HEADING = "auth", "Gateway authentication"
NAMESPACE = "bench-auth"  # the shards and the gateways' ServiceAccount
TEAM = "bench-auth-team"  # the callers and the endpoints' owners
CONFIG = "auth-bench"  # the shard Secrets' base name
GATEWAY_ACCOUNT, CALLER_ACCOUNT = "gateway", "app"
ENDPOINTS = ("ep-a", "ep-b")  # inference ids, and the names of their InferenceEndpoints
BODY = {"input": "What is Elastic?"}
MODES = {"none": "(a) --auth none", "warm": "(b) --auth kubernetes, warm cache",
         "cold": "(c) --auth kubernetes, a new token per call"}
LATENCY_CACHE_SECONDS = 600.0  # (b): nothing expires while the phase runs
WARM_P50_GOAL_MS = 0.2
REVIEWS = ("tokenreviews", "subjectaccessreviews")
OPTIONS = harness.options("""
    --rounds 20 2                   alternated latency rounds (the requests split among them)
    --warm-requests 500 40          sequential requests for (a) none and (b) warm, each
    --cold-requests 100 6           sequential requests for (c), a new token each
    --warmup 50 5                   uncounted calls to (a) and (b) first
    --warmup-cold 3 3               uncounted new-token calls to (c) first
    --time-limit 120.0 120.0        seconds per round and mode at most
""")


def rbac(kind: str, name: str, **body: Any) -> dict[str, Any]:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind,
            "metadata": {"name": name}, **body}


def binding(kind: str, name: str, role_kind: str, role: str, account: str,
            namespace: str) -> dict[str, Any]:
    return rbac(kind, name, roleRef={"apiGroup": "rbac.authorization.k8s.io",
                                     "kind": role_kind, "name": role},
                subjects=[{"kind": "ServiceAccount", "name": account, "namespace": namespace}])


class Cluster:
    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig
        self.core = client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))
        self.kubectl = Kubectl(binaries.resolve("kubectl"), kubeconfig)

    def setup(self, base: Stack, work: Path) -> Path:
        """Namespaces, the gateways' identity (read the shards, ``system:auth-delegator``),
        the caller with RBAC verb ``invoke`` on both endpoints, the shards holding them
        with their owners; the gateways' kubeconfig."""
        for name, account in ((NAMESPACE, GATEWAY_ACCOUNT), (TEAM, CALLER_ACCOUNT)):
            self.core.create_namespace({"metadata": {"name": name}})
            self.core.create_namespaced_service_account(name, {"metadata": {"name": account}})
        shards = Shards(CONFIG)
        rules = [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": shards.names(),
                  "verbs": ["get", "list", "watch"]}]
        self.kubectl.apply([
            rbac("Role", "gateway-config", rules=rules),
            binding("RoleBinding", "gateway-config", "Role", "gateway-config",
                    GATEWAY_ACCOUNT, NAMESPACE)], NAMESPACE)
        self.kubectl.apply(binding("ClusterRoleBinding", "bench-auth-gateway-auth-delegator",
                                   "ClusterRole", "system:auth-delegator", GATEWAY_ACCOUNT,
                                   NAMESPACE))
        self.kubectl.apply([
            rbac("Role", "invoke", rules=[{"apiGroups": ["inference-operator.dev"],
                                           "resources": ["inferenceendpoints"],
                                           "verbs": ["invoke"],
                                           "resourceNames": list(ENDPOINTS)}]),
            binding("RoleBinding", "invoke", "Role", "invoke", CALLER_ACCOUNT, TEAM)], TEAM)
        rng = random.Random(7)
        # The rate limit never queues a request here.
        harness.write_shards(self.core, base, CONFIG, [
            harness.record(name, harness.fake_key(rng), rpm=1_000_000,
                           **{OWNER_KEY: {"namespace": TEAM, "name": name}})
            for name in ENDPOINTS])
        kubeconfig = work / "gateway.kubeconfig"
        write_token_kubeconfig(kubeconfig, self.kubeconfig,
                               self.token(NAMESPACE, GATEWAY_ACCOUNT, audience=None))
        return kubeconfig

    def token(self, namespace: str = TEAM, account: str = CALLER_ACCOUNT,
              audience: str | None = AUDIENCE) -> str:
        """A ServiceAccount token from the TokenRequest API (``kubectl create token``)."""
        spec: dict[str, Any] = {"expirationSeconds": 3600}
        if audience:
            spec["audiences"] = [audience]
        return self.core.create_namespaced_service_account_token(
            account, namespace, {"apiVersion": "authentication.k8s.io/v1",
                                 "kind": "TokenRequest", "spec": spec}).status.token

    async def reviews(self) -> dict[str, float]:
        """The reviews the API server answered so far (``apiserver_request_total``)."""
        text = (await asyncio.to_thread(self.kubectl.run, "get", "--raw", "/metrics")).stdout
        return requests_by_resource(text, REVIEWS)


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, int]:
    return {key: round(value - before.get(key, 0)) for key, value in after.items()}


async def latency(args: argparse.Namespace, cluster: Cluster,
                  gateways: dict[str, Gateway]) -> dict[str, Any]:
    """Sequential requests on one keep-alive connection per gateway, alternated rounds."""
    path = f"/_inference/completion/{ENDPOINTS[0]}"
    warm = {"Authorization": f"Bearer {cluster.token()}"}
    targets = {"none": Target("none", gateways["none"].url + path, BODY),
               "warm": Target("warm", gateways["warm"].url + path, BODY, warm),
               "cold": Target("cold", gateways["cold"].url + path, BODY,
                              tokens=[cluster.token() for _ in range(
                                  args.cold_requests + args.warmup_cold)])}
    step(f"  {len(targets['cold'].tokens or []) + 1} tokens made beforehand (TokenRequest API)")
    per_round = {"none": args.warm_requests // args.rounds,
                 "warm": args.warm_requests // args.rounds,
                 "cold": args.cold_requests // args.rounds}
    sessions = {mode: aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))
                for mode in gateways}

    def sequential(mode: str, requests: int) -> Any:
        return loadgen.closed_loop(sessions[mode], targets[mode], requests=requests,
                                   concurrency=1, time_limit=args.time_limit)

    try:
        # Connections opened, and (b)'s decisions cached; (c)'s gateway has talked to the
        # API server about a token before, as one that has been serving would have.
        for mode, count in (("none", args.warmup), ("warm", args.warmup),
                            ("cold", args.warmup_cold)):
            if not (await sequential(mode, count)).latencies:
                raise RuntimeError(f"the {mode} gateway does not answer 200\n"
                                   + gateways[mode].service.log_tail(10))
        before_api = await cluster.reviews()
        rounds = await loadgen.alternate(tuple(MODES), args.rounds,
                                         lambda mode: sequential(mode, per_round[mode]))
        after_api = await cluster.reviews()
    finally:
        for session in sessions.values():
            await session.close()
    modes = {mode: loadgen.merged(samples).summary() for mode, samples in rounds.items()}
    result = {"path": path, "rounds": args.rounds, "per_round": per_round,
              "warmup_calls": {"none": args.warmup, "warm": args.warmup,
                               "cold": args.warmup_cold},
              "latency_cache_seconds": LATENCY_CACHE_SECONDS, "modes": modes,
              "added_ms": {mode: loadgen.added(rounds, mode, "none") for mode in ("warm", "cold")},
              "api_server_reviews": delta(after_api, before_api)}
    step(f"  added p50 vs none: warm {result['added_ms']['warm']['p50']} ms, cold "
         f"{result['added_ms']['cold']['p50']} ms; API server saw "
         f"{result['api_server_reviews']}")
    return result


def section(result: dict[str, Any]) -> str:
    lat = result["latency"]
    modes, added, per_round = lat["modes"], lat["added_ms"], lat["per_round"]
    cold_reviews, cold = lat["api_server_reviews"], modes["cold"]
    calls = cold["requests"] + cold["errors"]
    warm_rounds = added["warm"]["p50_rounds"]
    return "\n".join([
        harness.machine_line(result["run"]), "",
        f"**Latency**: sequential `POST {lat['path']}`, {lat['rounds']} rounds of "
        f"{per_round['none']} / {per_round['warm']} / {per_round['cold']} requests, the order "
        f"rotated each round; `--auth-cache-seconds {lat['latency_cache_seconds']:g}`.", "",
        *table(("mode", "requests", "errors", "p50 ms", "p90 ms", "p99 ms", "added p50",
                "added p90", "added p99"),
               ((label, s["requests"] + s["errors"], s["errors"],
                 *(f"{s[f'p{q}_ms']:.3f}" for q in (50, 90, 99)),
                 *(["", "", ""] if mode == "none" else
                   [f"{added[mode][f'p{q}']:+.3f} ms" for q in (50, 90, 99)]))
                for mode, label in MODES.items() for s in [modes[mode]])), "",
        *table(("target", "goal", "measured", ""), [
            ("warm cache: added latency p50 vs `--auth none`", f"≤ {WARM_P50_GOAL_MS} ms",
             f"{added['warm']['p50']:+.3f} ms (the median of the {len(warm_rounds)} rounds' "
             f"differences {added['warm']['p50_median']:+.3f} ms, from "
             f"{min(warm_rounds):+.3f} to {max(warm_rounds):+.3f})",
             mark(added["warm"]["p50"] <= WARM_P50_GOAL_MS)),
            ("a token's first call: one TokenReview and one SubjectAccessReview",
             f"{calls} and {calls}", f"{cold_reviews['tokenreviews']} and "
             f"{cold_reviews['subjectaccessreviews']} (the API server's counts over the phase)",
             mark(all(cold_reviews[k] == calls for k in REVIEWS)))])])


def invalid(args: argparse.Namespace) -> str | None:
    if args.rounds < 1 or min(args.warm_requests, args.cold_requests) < args.rounds:
        return "every mode needs at least one request per round"
    return None


def run(args: argparse.Namespace) -> dict[str, Any]:
    with harness.control_plane(controllers=False, namespace=NAMESPACE) as (plane, base):
        cluster = Cluster(plane.kubeconfig)
        identity = cluster.setup(base, base.work_dir)
        base.start(base.emulator("--log-level", "warning"), harness.START_SECONDS)
        step("latency: three gateways, --auth none / kubernetes (warm) / kubernetes (cold)")

        def gateway(name: str, *extra: str) -> Gateway:
            return start_gateway(base, CONFIG, f"gateway-{name}", *extra, kubeconfig=identity)

        kube = ("--auth", "kubernetes", "--auth-cache-seconds", f"{LATENCY_CACHE_SECONDS:g}")
        gateways = {"none": gateway("none", "--auth", "none"), "warm": gateway("warm", *kube),
                    # What a review costs, not the budget of reviews for unknown tokens
                    # (every call here brings one): that budget lifted.
                    "cold": gateway("cold", *kube, "--auth-reviews-per-second", "1000000")}
        for one in gateways.values():
            one.wait_loaded(len(ENDPOINTS))
        return {"latency": asyncio.run(latency(args, cluster, gateways))}


if __name__ == "__main__":
    sys.exit(harness.main(sys.modules[__name__]))
