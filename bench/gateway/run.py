"""Gateway benchmark: our gateway side by side with its floor (the Anthropic emulator hit
directly) and its peer (LiteLLM proxy, one worker), same load tool, same upstream (the
emulator answering at once), same load, one run.

Starts ``inference-operator emulator`` and ``inference-operator gateway`` (and LiteLLM,
installed on first use into .cache/bench/) as processes on 127.0.0.1 and measures:
throughput at a fixed concurrency, latency added at a fixed 100 requests/s, time to the
first streamed delta, whether deltas are batched, memory (idle with 100 endpoints; with
1,000 open streams), the rate limiter's admitted rate at 600 rpm, and the cost of the
anthropic SDK against a direct aiohttp request. Writes docs/benchmarks/gateway.json,
PNG charts beside it and the generated part of docs/benchmarks.md. Every loop is bounded
in count and time; all processes share the machine's cores, so read ratios.

    .venv/bin/python bench/run.py [--rate-window 60] [--no-litellm] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import itertools
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/common.py
import clientcost
import hotpath_profile
import loadgen
import peer_litellm
import report
from loadgen import Sample, Target

from inference_operator.devstack.processes import Stack
from inference_operator.loopback import free_port

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "bench-admin-token"
MODEL = "claude-bench"
RATE_MODEL = "claude-bench-rate"
PROMPT = "What is Elastic?"
MAX_TOKENS = 64
ENDPOINTS = 100
UNLIMITED_RPM = 10_000_000  # far above any load here: the limiter never waits
START_SECONDS = 60.0


class Bench:
    def __init__(self, args: argparse.Namespace, stack: Stack) -> None:
        self.args = args
        self.stack = stack
        self.gateway_process = stack.services["gateway"]
        self.results: dict[str, Any] = {}
        direct_headers = {"x-api-key": "bench-key-000", "anthropic-version": "2023-06-01"}
        self.emulator = Target(
            "emulator", stack.emulator_url + "/v1/messages",
            {"model": MODEL, "max_tokens": MAX_TOKENS,
             "messages": [{"role": "user", "content": PROMPT}]},
            direct_headers, b"event: content_block_delta")
        completion = stack.gateway_url + "/_inference/completion/bench-000"
        self.gateway = Target("gateway", completion, {"input": PROMPT}, {}, b'"delta"',
                              stream_url=completion + "/_stream")
        self.litellm: Target | None = None

    # -- setup -------------------------------------------------------------------------

    async def admin_put(self, session: aiohttp.ClientSession, inference_id: str, key: str,
                        model: str, rpm: int) -> None:
        async with session.put(
            f"{self.stack.admin_url}/_inference/completion/{inference_id}",
            headers={"Authorization": f"Bearer {TOKEN}"},
            json={"service": "anthropic",
                  "service_settings": {"api_key": key, "model_id": model,
                                       "rate_limit": {"requests_per_minute": rpm}},
                  "task_settings": {"max_tokens": MAX_TOKENS}},
        ) as response:
            if response.status != 200:
                raise RuntimeError(f"PUT {inference_id}: {response.status} "
                                   f"{await response.text()}")

    async def emulator_latency(self, session: aiohttp.ClientSession, per_token: float) -> None:
        async with session.put(self.stack.emulator_url + "/_emulator/latency",
                               json={"first_token": 0.0, "per_token": per_token}) as response:
            response.raise_for_status()

    # -- phases ------------------------------------------------------------------------

    async def memory_idle(self, session: aiohttp.ClientSession) -> None:
        rss_mib = self.gateway_process.rss_mib
        started = rss_mib()
        for n in range(ENDPOINTS):
            await self.admin_put(session, f"bench-{n:03d}", f"bench-key-{n:03d}", MODEL,
                                 UNLIMITED_RPM)
        await asyncio.sleep(1.0)
        self.results["memory"] = {"gateway_started_mib": round(started, 1),
                                  "gateway_idle_100_endpoints_mib": round(rss_mib(), 1)}

    async def throughput(self, session: aiohttp.ClientSession) -> None:
        a = self.args
        process = self.gateway_process
        for target in (self.emulator, self.gateway):  # warm-up, not measured
            await loadgen.closed_loop(session, target, requests=a.warmup,
                                      concurrency=a.concurrency, time_limit=a.time_limit)
        rounds: dict[str, list[Sample]] = {"emulator": [], "gateway": []}
        gateway_cpu = 0.0
        for _ in range(a.rounds):  # alternated, so drift hits both alike
            rounds["emulator"].append(await loadgen.closed_loop(
                session, self.emulator, requests=a.requests, concurrency=a.concurrency,
                time_limit=a.time_limit))
            cpu = process.cpu_seconds()
            rounds["gateway"].append(await loadgen.closed_loop(
                session, self.gateway, requests=a.requests, concurrency=a.concurrency,
                time_limit=a.time_limit))
            gateway_cpu += process.cpu_seconds() - cpu
        merged = {name: loadgen.merged(samples) for name, samples in rounds.items()}
        done = len(merged["gateway"].latencies)
        self.results["throughput"] = {
            "concurrency": a.concurrency, "requests_per_round": a.requests,
            "rounds": {name: [s.summary() for s in samples] for name, samples in rounds.items()},
            "emulator": merged["emulator"].summary(),
            "gateway": merged["gateway"].summary(),
            "gateway_cpu_ms_per_request": round(gateway_cpu / done * 1000, 3) if done else None,
        }

    async def profile(self, session: aiohttp.ClientSession) -> None:
        """py-spy on the gateway under load of its own, not during a measured round (the
        sampling takes CPU the round would miss): at the throughput phase's concurrency,
        then one request at a time, the path the latency targets are about."""
        a = self.args
        assert a.profile is not None
        self.results["profile"] = {}
        for name, concurrency in (("concurrency", a.concurrency), ("one_at_a_time", 1)):
            out = a.profile if concurrency > 1 else a.profile.with_name(
                f"{a.profile.stem}-one-at-a-time{a.profile.suffix}")
            profiler = hotpath_profile.start(self.gateway_process.pid, out)
            await loadgen.closed_loop(session, self.gateway, requests=100 * a.requests,
                                      concurrency=concurrency,
                                      time_limit=hotpath_profile.SECONDS + 1)
            self.results["profile"][name] = {"concurrency": concurrency,
                                             **await asyncio.to_thread(profiler.finish)}

    async def throughput_litellm(self, session: aiohttp.ClientSession,
                                 peer: peer_litellm.LiteLLM) -> None:
        a = self.args
        assert self.litellm is not None
        process = peer.service
        await loadgen.closed_loop(session, self.litellm, requests=a.litellm_warmup,
                                  concurrency=a.concurrency, time_limit=a.time_limit)
        cpu = process.cpu_seconds()
        sample = await loadgen.closed_loop(session, self.litellm, requests=a.litellm_requests,
                                           concurrency=a.concurrency, time_limit=a.time_limit)
        done = len(sample.latencies)
        self.results["throughput"]["litellm"] = {
            **sample.summary(),
            "cpu_ms_per_request": round((process.cpu_seconds() - cpu) / done * 1000, 3)
            if done else None,
        }
        self.results["memory"]["litellm_after_load_mib"] = round(process.rss_mib(session=True), 1)

    async def fixed_rate(self, session: aiohttp.ClientSession) -> None:
        a = self.args
        rounds: dict[str, list[Sample]] = {"emulator": [], "gateway": []}
        for _ in range(a.latency_rounds):  # alternated: one noisy stretch hits one round
            for target in (self.emulator, self.gateway):
                rounds[target.name].append(await loadgen.fixed_rate(
                    session, target, rate=a.rate, seconds=a.rate_seconds,
                    time_limit=a.rate_seconds + 30))
        merged = {name: loadgen.merged(samples) for name, samples in rounds.items()}
        self.results["fixed_rate"] = {
            "rate": a.rate, "seconds_per_round": a.rate_seconds,
            **_by_round(rounds, (50, 99)),
            "emulator": merged["emulator"].summary(), "gateway": merged["gateway"].summary(),
            "latencies_ms": {name: sorted(round(x * 1000, 3) for x in s.latencies)
                             for name, s in merged.items()},
        }

    async def first_delta(self, session: aiohttp.ClientSession) -> None:
        a = self.args
        for target in (self.emulator, self.gateway):  # warm-up, not measured
            await loadgen.time_to_first_delta(session, target, requests=10,
                                              time_limit=a.time_limit)
        rounds: dict[str, list[Sample]] = {"emulator": [], "gateway": []}
        for _ in range(a.latency_rounds):
            for target in (self.emulator, self.gateway):
                rounds[target.name].append(await loadgen.time_to_first_delta(
                    session, target, requests=a.ttfb_requests, time_limit=a.time_limit))
        samples = {name: loadgen.merged(s) for name, s in rounds.items()}
        if self.litellm is not None:  # the peer once: it is not what the target is about
            await loadgen.time_to_first_delta(session, self.litellm, requests=10,
                                              time_limit=a.time_limit)
            samples["litellm"] = await loadgen.time_to_first_delta(
                session, self.litellm, requests=a.litellm_ttfb_requests,
                time_limit=a.time_limit)
        self.results["first_delta"] = {
            **_by_round(rounds, (50, 99)),
            **{name: s.summary() for name, s in samples.items()},
        }
        # Deltas 20 ms apart upstream must reach the client 20 ms apart, one per chunk.
        await self.emulator_latency(session, 0.02)
        try:
            arrivals = await loadgen.delta_arrivals(session, self.gateway, a.time_limit)
        finally:
            await self.emulator_latency(session, 0.0)
        gaps = [round((b - a_) * 1000, 2) for a_, b in itertools.pairwise(arrivals)]
        self.results["first_delta"]["delta_gaps_ms"] = gaps
        self.results["first_delta"]["batched"] = bool(gaps) and min(gaps) < 10.0

    async def open_streams(self) -> None:
        a = self.args
        rss_mib = self.gateway_process.rss_mib
        peak = 0.0
        at_all_open: list[float] = []
        sampling = True

        async def sample() -> None:
            nonlocal peak
            while sampling:
                peak = max(peak, rss_mib())
                await asyncio.sleep(0.1)

        # A separate pool, large enough for every stream at once.
        connector = aiohttp.TCPConnector(limit=a.streams + 10)
        async with aiohttp.ClientSession(connector=connector) as session:
            await self.emulator_latency(session, a.stream_token_latency)
            sampler = asyncio.create_task(sample())
            started = time.monotonic()
            try:
                opened, completed = await loadgen.hold_streams(
                    session, self.gateway, streams=a.streams, time_limit=a.time_limit,
                    on_all_open=lambda: at_all_open.append(rss_mib()))
            finally:
                sampling = False
                await sampler
                await self.emulator_latency(session, 0.0)
        self.results["memory"].update({
            "streams": a.streams, "streams_opened": opened, "streams_completed": completed,
            "stream_phase_seconds": round(time.monotonic() - started, 1),
            "gateway_all_streams_open_mib": round(at_all_open[0], 1) if at_all_open else None,
            "gateway_peak_streams_mib": round(peak, 1),
            "gateway_after_streams_mib": round(rss_mib(), 1),
        })

    async def rate_limit(self, session: aiohttp.ClientSession) -> None:
        """Keeps the 600 rpm bucket's queue full for ``--rate-window`` seconds and reads
        the upstream's arrival times (the emulator's log, monotonic clock)."""
        a = self.args
        rpm = 600
        count = round(a.rate_window * rpm / 60) + 1  # the first token is there at once
        await self.admin_put(session, "bench-rate", "bench-key-rate", RATE_MODEL, rpm)
        async with session.delete(self.stack.emulator_url + "/_emulator/requests"):
            pass
        url = (f"{self.stack.gateway_url}/_inference/completion/bench-rate"
               f"?timeout={round(a.rate_window + 30)}s")
        target = Target("rate", url, {"input": PROMPT})
        sample = await loadgen.closed_loop(session, target, requests=count, concurrency=count,
                                           time_limit=a.rate_window + 40)
        async with session.get(self.stack.emulator_url + "/_emulator/requests") as response:
            log = await response.json()
        arrivals = sorted(e["received_at"] for e in log
                          if e["path"] == "/v1/messages" and (e.get("body") or {}).get("model")
                          == RATE_MODEL)
        span = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else float("nan")
        admitted_rpm = (len(arrivals) - 1) / span * 60 if span == span and span > 0 else None
        self.results["rate_limit"] = {
            "rpm": rpm, "window_seconds": a.rate_window, "requests": count,
            "answered": len(sample.latencies), "errors": sample.errors,
            "admitted": len(arrivals), "span_seconds": round(span, 4),
            "admitted_rpm": round(admitted_rpm, 3) if admitted_rpm else None,
            "error_percent": round((admitted_rpm - rpm) / rpm * 100, 3)
            if admitted_rpm else None,
            "arrivals_s": [round(t - arrivals[0], 4) for t in arrivals],
        }

    # -- LiteLLM -----------------------------------------------------------------------

    def start_litellm(self) -> peer_litellm.LiteLLM | None:
        a = self.args
        cache = ROOT / ".cache" / "bench"
        info: dict[str, Any] = {"spec": a.litellm_spec}
        self.results["litellm"] = info
        if a.no_litellm:
            info["skipped"] = "--no-litellm"
            return None
        venv = cache / "litellm-venv"
        try:
            info["version"] = peer_litellm.ensure_installed(
                venv, a.litellm_spec, cache / "litellm-install.log")
            started = time.monotonic()
            peer = peer_litellm.start(venv, port=free_port(), upstream=self.stack.emulator_url,
                                      model=MODEL, api_key="bench-key-litellm",
                                      log=cache / "litellm.log")
        except peer_litellm.Unavailable as error:
            info["unavailable"] = str(error)
            print(f"LiteLLM unavailable, continuing without it: {error}", flush=True)
            return None
        info["startup_seconds"] = round(time.monotonic() - started, 1)
        self.litellm = Target(
            "litellm", peer.url + "/v1/chat/completions",
            {"model": MODEL, "max_tokens": MAX_TOKENS,
             "messages": [{"role": "user", "content": PROMPT}]},
            {"Authorization": f"Bearer {peer.master_key}"}, b'"delta"')
        return peer

    # -- run ---------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        a = self.args
        connector = aiohttp.TCPConnector(limit=max(a.concurrency, 1100))
        timeout = aiohttp.ClientTimeout(total=a.time_limit + 60)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            step("SDK against a direct request (in this process)")
            self.results["client_cost"] = await clientcost.measure(
                self.stack.emulator_url, MODEL, PROMPT, MAX_TOKENS, a.client_cost_requests)
            step(f"memory: gateway idle with {ENDPOINTS} endpoints")
            await self.memory_idle(session)
            step(f"throughput: {a.rounds}x{a.requests} requests at concurrency {a.concurrency}")
            await self.throughput(session)
            if a.profile:
                step(f"profile: py-spy on the gateway, {hotpath_profile.SECONDS} s at "
                     f"concurrency {a.concurrency}, then one request at a time")
                await self.profile(session)
            step(f"fixed rate: {a.rate:.0f} requests/s, {a.latency_rounds} alternated rounds "
                 f"of {a.rate_seconds:g} s per target")
            await self.fixed_rate(session)
            step("LiteLLM: install (first run only) and start")
            peer = await asyncio.to_thread(self.start_litellm)
            try:
                if peer is not None:
                    self.results["memory"]["litellm_idle_mib"] = round(
                        peer.service.rss_mib(session=True), 1)
                    step(f"LiteLLM throughput: {a.litellm_requests} requests at concurrency "
                         f"{a.concurrency}")
                    await self.throughput_litellm(session, peer)
                step(f"streaming: time to the first delta, one stream at a time, "
                     f"{a.latency_rounds} alternated rounds")
                await self.first_delta(session)
            finally:
                if peer is not None:
                    await asyncio.to_thread(peer.service.stop, peer_litellm.STOP_GRACE)
            step(f"memory: {a.streams} concurrent open streams")
            await self.open_streams()
            step(f"rate limit: 600 rpm over {a.rate_window:.0f} s")
            await self.rate_limit(session)
        return self.results


def _by_round(rounds: dict[str, list[Sample]], percentiles: tuple[int, ...]
              ) -> dict[str, Any]:
    """What the gateway adds over the emulator, round by round (each gateway round against
    the emulator round just before it), and the median of the rounds, which the verdicts
    use: a single noisy round moves the spread, not the verdict."""
    pairs = list(zip(rounds["emulator"], rounds["gateway"], strict=True))
    out: dict[str, Any] = {"rounds": [
        {"emulator": e.summary(), "gateway": g.summary(),
         **{f"added_p{p}_ms": round((g.percentile(p) - e.percentile(p)) * 1000, 3)
            for p in percentiles}}
        for e, g in pairs]}
    for p in percentiles:
        added = [r[f"added_p{p}_ms"] for r in out["rounds"]]
        out[f"added_p{p}_ms"] = round(statistics.median(added), 3)
        out[f"added_p{p}_ms_rounds"] = added
    return out


def step(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    md = importlib.metadata
    return {"cpu": cpu, "cores": len(os.sched_getaffinity(0)),
            "memory_gib": round(mem_kib / 1024 / 1024), "arch": platform.machine(),
            "os": platform.platform(), "python": platform.python_version(),
            "aiohttp": md.version("aiohttp"), "orjson": md.version("orjson"),
            "anthropic": md.version("anthropic")}


# The numeric options: flag, default (its type is the option's), help.
NUMBERS: tuple[tuple[str, float, str | None], ...] = (
    ("--requests", 3000, "requests per throughput round and target"),
    ("--rounds", 2, "alternating throughput rounds per target"),
    ("--concurrency", 50, None),
    ("--warmup", 300, None),
    ("--rate", 100.0, "requests/s of the fixed-rate latency phase"),
    ("--rate-seconds", 20.0, "seconds of fixed-rate load per target and round"),
    ("--latency-rounds", 3,
     "alternated rounds (emulator, gateway) of the fixed-rate and first-delta phases; "
     "their verdicts are on the median of the rounds"),
    ("--ttfb-requests", 300, "streams per target and round"),
    ("--streams", 1000, None),
    ("--stream-token-latency", 0.5,
     "the emulator's seconds between deltas while streams are held"),
    ("--rate-window", 10.0,
     "seconds the 600 rpm bucket is kept busy (the target is stated for 60)"),
    ("--client-cost-requests", 500, None),
    ("--litellm-requests", 400, None),
    ("--litellm-warmup", 50, None),
    ("--litellm-ttfb-requests", 30, None),
    ("--time-limit", 60.0, "seconds per phase and target at most"),
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for flag, default, text in NUMBERS:
        parser.add_argument(flag, type=type(default), default=default, help=text)
    parser.add_argument("--no-litellm", action="store_true", help="skip the peer")
    parser.add_argument("--litellm-spec", default=peer_litellm.DEFAULT_SPEC)
    parser.add_argument("--profile", type=Path, metavar="FILE",
                        help="record the gateway with py-spy after the throughput phase, "
                             "at its concurrency (raw stacks to FILE) and one request at a "
                             "time (FILE's name plus -one-at-a-time); the top functions "
                             "into the results")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: small counts, no LiteLLM, results not written "
                             "to docs/")
    parser.add_argument("--out", type=Path, default=ROOT / "docs",
                        help="where benchmarks.md lives (JSON and charts go to its "
                             "benchmarks/ folder)")
    args = parser.parse_args(argv)
    if args.latency_rounds < 1:
        parser.error("--latency-rounds must be at least 1")
    if not 1 <= args.rate_window <= 180:
        # Every request of the window waits in one queue (capacity 2,000 at 600 rpm).
        parser.error("--rate-window must be between 1 and 180 seconds")
    if args.quick:
        args.requests, args.rounds, args.warmup, args.rate_seconds = 300, 1, 50, 2.0
        args.ttfb_requests, args.streams, args.rate_window = 30, 100, 3.0
        args.client_cost_requests, args.no_litellm = 50, True
        args.out = Path(tempfile.mkdtemp(prefix="gateway-bench-quick-"))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started, load_start = datetime.now(UTC), os.getloadavg()
    given = sys.argv[1:] if argv is None else argv
    command = " ".join(["bench/run.py", *given])
    if os.environ.get("MAKELEVEL"):
        command = "make bench" + (f' BENCH_ARGS="{" ".join(given)}"' if given else "")
    work = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    stack = Stack(work, api_keys=(), admin_token=TOKEN)  # the emulator takes any key
    step(f"emulator and gateway: logs in {work}")
    try:
        stack.start(stack.emulator("--log-level", "warning"), START_SECONDS)
        # Every stream of the memory run is on the bench's one key: the whole pool for it.
        stack.start(stack.gateway("--log-level", "warning",
                                  "--upstream-connections-per-key", "1000"),
                    START_SECONDS)
        results = asyncio.run(Bench(args, stack).run())
    finally:
        stack.stop()
    results["run"] = {"command": command, "date": started.strftime("%Y-%m-%d %H:%M UTC"),
                      "duration_seconds": round((datetime.now(UTC) - started).total_seconds()),
                      "machine": {**machine(), "load_average_start": load_start,
                                  "load_average_end": os.getloadavg()},
                      "args": {k: str(v) if isinstance(v, Path) else v
                               for k, v in vars(args).items()}}
    verdicts = report.write(results, args.out)
    print(report.console(results, verdicts))
    return 0 if results["throughput"]["gateway"]["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
