"""Gateway benchmark: the gateway side by side with its floor (the emulator hit directly)
and its peer (LiteLLM proxy, one worker), one load tool, one upstream answering at once,
one run: throughput, latency added at a fixed rate, time to the first streamed delta,
memory idle, the rate limiter at 600 rpm and what one upstream call costs from Python.
docs/benchmarks.md says how it runs."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import aiohttp

from bench import harness, loadgen
from bench.gateway import clientcost, litellm, report
from bench.harness import step
from bench.loadgen import Target
from inference_devkit.devstack.processes import Stack
from inference_devkit.loopback import free_port

NAME, HEADING = "gateway", "Gateway"
MODEL, RATE_MODEL = "claude-bench", "claude-bench-rate"
PROMPT = "What is Elastic?"
MAX_TOKENS = 64
ENDPOINTS = 100
LITELLM_REQUESTS, LITELLM_WARMUP = 400, 50  # the peer is slow: fixed, small
UNLIMITED_RPM = 10_000_000  # far above any load here: the limiter never waits
section = report.section


def messages_target(name: str, url: str, headers: dict[str, str], marker: bytes) -> Target:
    return Target(name, url, {"model": MODEL, "max_tokens": MAX_TOKENS,
                              "messages": [{"role": "user", "content": PROMPT}]},
                  headers, marker)


class Bench:
    def __init__(self, args: argparse.Namespace, stack: Stack) -> None:
        self.args, self.stack = args, stack
        self.process = stack.services["gateway"]
        self.results: dict[str, Any] = {}
        self.emulator = messages_target(
            "emulator", stack.emulator_url + "/v1/messages",
            {"x-api-key": "bench-key-000", "anthropic-version": "2023-06-01"},
            b"event: content_block_delta")
        completion = stack.gateway_url + "/_inference/completion/bench-000"
        self.gateway = Target("gateway", completion, {"input": PROMPT}, {}, b'"delta"',
                              stream_url=completion + "/_stream")
        self.litellm: Target | None = None

    async def loop(self, session: aiohttp.ClientSession, target: Target, requests: int,
                   concurrency: int | None = None) -> loadgen.Sample:
        return await loadgen.closed_loop(session, target, requests=requests,
                                         concurrency=concurrency or self.args.concurrency,
                                         time_limit=self.args.time_limit)

    async def memory_idle(self, session: aiohttp.ClientSession) -> None:
        started = self.process.rss_mib()
        for n in range(ENDPOINTS):
            await harness.put_endpoint(session, self.stack, f"bench-{n:03d}", model=MODEL,
                                       max_tokens=MAX_TOKENS, rpm=UNLIMITED_RPM,
                                       key=f"bench-key-{n:03d}")
        await asyncio.sleep(1.0)
        self.results["memory"] = {"gateway_started_mib": round(started, 1),
                                  "gateway_idle_100_endpoints_mib":
                                      round(self.process.rss_mib(), 1)}

    async def throughput(self, session: aiohttp.ClientSession) -> None:
        a = self.args
        for target in (self.emulator, self.gateway):  # warm-up, not measured
            await self.loop(session, target, a.warmup)
        cpu = 0.0

        async def one(name: str) -> loadgen.Sample:
            nonlocal cpu
            before = self.process.cpu_seconds()
            sample = await self.loop(session, getattr(self, name), a.requests)
            if name == "gateway":
                cpu += self.process.cpu_seconds() - before
            return sample

        rounds = await loadgen.alternate(("emulator", "gateway"), a.rounds, one, rotate=False)
        merged = {name: loadgen.merged(samples) for name, samples in rounds.items()}
        done = len(merged["gateway"].latencies)
        self.results["throughput"] = {
            "concurrency": a.concurrency, "requests_per_round": a.requests,
            "rounds": {name: [s.summary() for s in samples] for name, samples in rounds.items()},
            **{name: s.summary() for name, s in merged.items()},
            "gateway_cpu_ms_per_request": round(cpu / done * 1000, 3) if done else None}

    async def throughput_litellm(self, session: aiohttp.ClientSession,
                                 peer: litellm.LiteLLM) -> None:
        assert self.litellm is not None
        await self.loop(session, self.litellm, LITELLM_WARMUP)
        sample = await self.loop(session, self.litellm, LITELLM_REQUESTS)
        self.results["throughput"]["litellm"] = sample.summary()
        self.results["memory"]["litellm_after_load_mib"] = round(
            peer.service.rss_mib(session=True), 1)

    def latency_phase(self, rounds: dict[str, list[loadgen.Sample]]) -> dict[str, Any]:
        """Each round's summaries, what the gateway added round by round and their median
        (the verdicts use it), and all rounds together."""
        pairs = zip(rounds["emulator"], rounds["gateway"], strict=True)
        merged = {name: loadgen.merged(samples) for name, samples in rounds.items()}
        return {"rounds": [{"emulator": e.summary(), "gateway": g.summary()} for e, g in pairs],
                "added_ms": loadgen.added(rounds, "gateway", "emulator", (50, 99)),
                **{name: s.summary() for name, s in merged.items()}}

    async def fixed_rate(self, session: aiohttp.ClientSession) -> None:
        a = self.args
        rounds = await loadgen.alternate(("emulator", "gateway"), a.latency_rounds, lambda n:
                                         loadgen.fixed_rate(session, getattr(self, n),
                                                            rate=a.rate, seconds=a.rate_seconds,
                                                            time_limit=a.rate_seconds + 30),
                                         rotate=False)
        self.results["fixed_rate"] = {
            "rate": a.rate, "seconds_per_round": a.rate_seconds, **self.latency_phase(rounds)}

    async def first_delta(self, session: aiohttp.ClientSession) -> None:
        a = self.args
        for target in (self.emulator, self.gateway):  # warm-up, not measured
            await loadgen.time_to_first_delta(session, target, requests=10,
                                              time_limit=a.time_limit)
        rounds = await loadgen.alternate(("emulator", "gateway"), a.latency_rounds, lambda n:
                                         loadgen.time_to_first_delta(
                                             session, getattr(self, n),
                                             requests=a.ttfb_requests, time_limit=a.time_limit),
                                         rotate=False)
        self.results["first_delta"] = self.latency_phase(rounds)

    async def rate_limit(self, session: aiohttp.ClientSession) -> None:
        """Keeps the 600 rpm bucket's queue full for ``--rate-window`` seconds and reads
        the upstream's arrival times (the emulator's log, monotonic clock)."""
        window, rpm, emulator = self.args.rate_window, 600, self.stack.emulator_url
        count = round(window * rpm / 60) + 1  # the first token is there at once
        await harness.put_endpoint(session, self.stack, "bench-rate", model=RATE_MODEL,
                                   max_tokens=MAX_TOKENS, rpm=rpm, key="bench-key-rate")
        async with session.delete(emulator + "/_emulator/requests"):
            pass
        url = (f"{self.stack.gateway_url}/_inference/completion/bench-rate"
               f"?timeout={round(window + 30)}s")
        sample = await loadgen.closed_loop(session, Target("rate", url, {"input": PROMPT}),
                                           requests=count, concurrency=count,
                                           time_limit=window + 40)
        async with session.get(emulator + "/_emulator/requests") as response:
            log = await response.json()
        arrivals = sorted(e["received_at"] for e in log if e["path"] == "/v1/messages"
                          and (e.get("body") or {}).get("model") == RATE_MODEL)
        span = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else float("nan")
        admitted = (len(arrivals) - 1) / span * 60 if span == span and span > 0 else None
        self.results["rate_limit"] = {
            "rpm": rpm, "window_seconds": window, "requests": count,
            "answered": len(sample.latencies), "errors": sample.errors,
            "admitted": len(arrivals), "span_seconds": round(span, 4),
            "admitted_rpm": round(admitted, 3) if admitted else None,
            "error_percent": round((admitted - rpm) / rpm * 100, 3) if admitted else None,
            "arrivals_s": [round(t - arrivals[0], 4) for t in arrivals]}

    def start_litellm(self) -> litellm.LiteLLM | None:
        a, cache = self.args, harness.ROOT / ".cache" / "bench"
        info: dict[str, Any] = {"spec": litellm.SPEC}
        self.results["litellm"] = info
        if a.no_litellm or a.quick:  # its install takes minutes
            info["skipped"] = "--quick" if a.quick else "--no-litellm"
            step(f"LiteLLM skipped ({info['skipped']}): the peer's measurements are not run")
            return None
        venv = cache / "litellm-venv"
        try:
            info["version"] = litellm.ensure_installed(venv, litellm.SPEC,
                                                       cache / "litellm-install.log")
            started = time.monotonic()
            peer = litellm.start(venv, port=free_port(), upstream=self.stack.emulator_url,
                                 model=MODEL, api_key="bench-key-litellm",
                                 log=cache / "litellm.log")
        except litellm.Unavailable as error:
            info["unavailable"] = str(error)
            step(f"LiteLLM unavailable, continuing without it: {error}")
            return None
        info["startup_seconds"] = round(time.monotonic() - started, 1)
        self.litellm = messages_target(
            "litellm", peer.url + "/v1/chat/completions",
            {"Authorization": f"Bearer {peer.master_key}"}, b'"delta"')
        return peer

    async def run(self) -> dict[str, Any]:
        a = self.args
        connector = aiohttp.TCPConnector(limit=max(a.concurrency, 1100))
        timeout = aiohttp.ClientTimeout(total=a.time_limit + 60)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            step("one upstream call from Python: SDK, own client, bare aiohttp")
            self.results["client_cost"] = await clientcost.measure(
                self.stack.emulator_url, MODEL, PROMPT, MAX_TOKENS, a.client_cost_requests)
            step(f"memory: gateway idle with {ENDPOINTS} endpoints")
            await self.memory_idle(session)
            step(f"throughput: {a.rounds}x{a.requests} requests at concurrency {a.concurrency}")
            await self.throughput(session)
            step(f"fixed rate: {a.rate:.0f} requests/s, {a.latency_rounds} alternated rounds "
                 f"of {a.rate_seconds:g} s per target")
            await self.fixed_rate(session)
            step("LiteLLM: install (first run only) and start")
            peer = await asyncio.to_thread(self.start_litellm)
            try:
                if peer is not None:
                    self.results["memory"]["litellm_idle_mib"] = round(
                        peer.service.rss_mib(session=True), 1)
                    step(f"LiteLLM throughput: {LITELLM_REQUESTS} requests")
                    await self.throughput_litellm(session, peer)
                step(f"streaming: time to the first delta, {a.latency_rounds} rounds")
                await self.first_delta(session)
            finally:
                if peer is not None:
                    await asyncio.to_thread(peer.service.stop, litellm.STOP_GRACE)
            step(f"rate limit: 600 rpm over {a.rate_window:.0f} s")
            await self.rate_limit(session)
        self.results["failed"] = self.results["throughput"]["gateway"]["errors"] > 0
        return self.results


OPTIONS = harness.options("""
    --requests 3000 200              requests per throughput round and target
    --rounds 2 1                     alternating throughput rounds per target
    --concurrency 50 20
    --warmup 300 20
    --rate 100.0 100.0               requests/s of the fixed-rate latency phase
    --rate-seconds 20.0 1.0          seconds of fixed-rate load per target and round
    --latency-rounds 3 1             rounds of fixed rate and first delta (verdicts: their median)
    --ttfb-requests 300 10           streams per target and round
    --rate-window 10.0 2.0           seconds the 600 rpm bucket is kept busy (the target: 60)
    --client-cost-requests 500 20
    --time-limit 60.0 20.0           seconds per phase and target at most
""")


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-litellm", action="store_true", help="skip the peer")


def invalid(args: argparse.Namespace) -> str | None:
    if args.latency_rounds < 1:
        return "--latency-rounds must be at least 1"
    # Every request of the window waits in one queue (capacity 2,000 at 600 rpm).
    return None if 1 <= args.rate_window <= 180 else "--rate-window must be 1 to 180 s"


def run(args: argparse.Namespace) -> dict[str, Any]:
    with harness.loopback_stack() as stack:
        return asyncio.run(Bench(args, stack).run())


if __name__ == "__main__":
    sys.exit(harness.main(sys.modules[__name__]))
