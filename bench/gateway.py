"""Gateway benchmark: the gateway side by side with its floor (the emulator hit directly)
and its peer (LiteLLM proxy, one worker), one load tool, one upstream answering at once,
one run: throughput, latency added at a fixed rate, time to the first streamed delta,
memory idle and the rate limiter at 600 rpm. docs/benchmarks.md says how it runs."""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
from typing import Any

import aiohttp

from bench import harness, litellm, loadgen
from bench.harness import machine_line, mark, step, table
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

    async def loop(self, session: aiohttp.ClientSession, target: Target, requests: int
                   ) -> loadgen.Sample:
        return await loadgen.closed_loop(session, target, requests=requests,
                                         concurrency=self.args.concurrency,
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
            "error_percent": round((admitted - rpm) / rpm * 100, 3) if admitted else None}

    def start_litellm(self) -> tuple[litellm.LiteLLM, Target] | None:
        """The peer started and the target that asks it, None when skipped or unavailable."""
        a, cache = self.args, harness.ROOT / ".cache" / "bench"
        info = self.results["litellm"] = {"spec": litellm.SPEC}
        if a.no_litellm or a.quick:  # its install takes minutes
            info["skipped"] = "--quick" if a.quick else "--no-litellm"
            step(f"LiteLLM skipped ({info['skipped']}): the peer's measurements are not run")
            return None
        venv = cache / "litellm-venv"
        try:
            litellm.ensure_installed(venv, cache / "litellm-install.log")
            peer = litellm.start(venv, port=free_port(), upstream=self.stack.emulator_url,
                                 model=MODEL, api_key="bench-key-litellm",
                                 log=cache / "litellm.log")
        except litellm.Unavailable as error:
            info["unavailable"] = str(error)
            step(f"LiteLLM unavailable, continuing without it: {error}")
            return None
        return peer, messages_target("litellm", peer.url + "/v1/chat/completions",
                                     {"Authorization": f"Bearer {peer.master_key}"}, b'"delta"')

    async def run(self) -> dict[str, Any]:
        a = self.args
        # No pool limit: each phase bounds its own concurrency (the rate limit's: all at once).
        connector = aiohttp.TCPConnector(limit=0)
        timeout = aiohttp.ClientTimeout(total=a.time_limit + 60)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            step(f"memory: gateway idle with {ENDPOINTS} endpoints")
            await self.memory_idle(session)
            step(f"throughput: {a.rounds}x{a.requests} requests at concurrency {a.concurrency}")
            await self.throughput(session)
            step(f"fixed rate: {a.rate:.0f} requests/s, {a.latency_rounds} alternated rounds "
                 f"of {a.rate_seconds:g} s per target")
            await self.fixed_rate(session)
            step("LiteLLM: install (first run only) and start")
            if (started := await asyncio.to_thread(self.start_litellm)) is not None:
                peer, target = started
                step(f"LiteLLM throughput: {LITELLM_REQUESTS} requests")
                try:
                    await self.loop(session, target, LITELLM_WARMUP)
                    self.results["throughput"]["litellm"] = (await self.loop(
                        session, target, LITELLM_REQUESTS)).summary()
                finally:
                    await asyncio.to_thread(peer.service.stop, litellm.STOP_GRACE)
            step(f"streaming: time to the first delta, {a.latency_rounds} rounds")
            await self.first_delta(session)
            step(f"rate limit: 600 rpm over {a.rate_window:.0f} s")
            await self.rate_limit(session)
        self.results["failed"] = self.results["throughput"]["gateway"]["errors"] > 0
        return self.results


TARGETS = ("emulator", "gateway", "litellm")


def _ms(value: Any) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{value:.2f}"


def _of_rounds(added: dict[str, Any], p: str) -> str:
    """The median of the rounds with their spread: ``+0.44 ms (median of 3 rounds, +0.40
    to +0.52)``."""
    median, rounds = added[f"{p}_median"], added[f"{p}_rounds"]
    if len(rounds) == 1:
        return f"{median:+.2f} ms"
    return (f"{median:+.2f} ms (median of {len(rounds)} rounds, {min(rounds):+.2f} to "
            f"{max(rounds):+.2f})")


def verdicts(r: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    """(target, goal, measured, met: None when not measured in this run)."""
    t, fixed, rl = r["throughput"], r["fixed_rate"], r["rate_limit"]
    emu, gw = t["emulator"]["rps"], t["gateway"]["rps"]
    if ll := t.get("litellm", {}).get("rps"):
        peer = (f"{gw / ll:.1f}x ({gw:.0f} vs {ll:.1f} req/s)", gw / ll >= 20)
    else:
        lil = r["litellm"]
        peer = (f"not run: {lil.get('unavailable') or lil.get('skipped')}", None)
    idle = r["memory"]["gateway_idle_100_endpoints_mib"]
    window, error = rl["window_seconds"], rl["error_percent"]
    note = "" if window >= 60 else "; the target is over 60 s: `--rate-window 60`"
    return [("throughput vs LiteLLM (1 worker)", ">= 20x", *peer),
            ("throughput vs emulator direct", ">= 0.25x",
             f"{gw / emu:.2f}x ({gw:.0f} vs {emu:.0f} req/s)", gw / emu >= 0.25),
            *((f"added latency {p} at {fixed['rate']:.0f} req/s", f"<= {goal:g} ms",
               _of_rounds(fixed["added_ms"], p), fixed["added_ms"][f"{p}_median"] <= goal)
              for p, goal in (("p50", 1.0), ("p99", 5.0))),
            ("streaming: time to first delta added (p50)", "<= 2 ms",
             _of_rounds(r["first_delta"]["added_ms"], "p50"),
             r["first_delta"]["added_ms"]["p50_median"] <= 2.0),
            ("memory idle, 100 endpoints", "<= 80 MiB", f"{idle:.0f} MiB", idle <= 80),
            ("rate limit admitted at 600 rpm", "within 1 % over 60 s",
             f"{_ms(rl['admitted_rpm'])} rpm ({_ms(error)} %) over {window:g} s{note}",
             abs(error) <= 1.0 if error is not None and window >= 60 else None)]


def _rounds(phase: dict[str, Any], what: str) -> list[str]:
    """One row per alternated round and one for their median, then all rounds together."""
    added = phase["added_ms"]
    rows = [(number, *(f"{_ms(one[t]['p50_ms'])} / {_ms(one[t]['p99_ms'])}"
                       for t in ("emulator", "gateway")),
             f"{added['p50_rounds'][number - 1]:+.2f}", f"{added['p99_rounds'][number - 1]:+.2f}")
            for number, one in enumerate(phase["rounds"], start=1)]
    rows.append(("median of the rounds", "", "", f"{added['p50_median']:+.2f}",
                 f"{added['p99_median']:+.2f}"))
    together = [(t, s["requests"], s["errors"], _ms(s["p50_ms"]), _ms(s["p90_ms"]),
                 _ms(s["p99_ms"]), s["late_sends"]) for t in TARGETS if (s := phase.get(t))]
    return [*table(("round", "emulator p50 / p99 ms", "gateway p50 / p99 ms", "added p50 ms",
                    "added p99 ms"), rows), "", "All rounds together:", "",
            *table(("target", what, "errors", "p50 ms", "p90 ms", "p99 ms", "late sends"),
                   together), ""]


def section(r: dict[str, Any]) -> str:
    checks = verdicts(r)
    r["verdicts"] = [dict(zip(("target", "goal", "measured", "met"), v, strict=True))
                     for v in checks]
    for target, _, measured, met in checks:
        step(f"  {target}: {measured} [{mark(met) or 'not measured'}]")
    lines = [machine_line(r["run"]) + " The load tool (an aiohttp client in the bench "
             "process), the target and the emulator share these cores, and other work ran on "
             "the machine: read ratios, not absolute numbers.", "",
             *table(("target", "goal", "measured", ""),
                    ((t, g, m, mark(ok) or "not measured") for t, g, m, ok in checks)), ""]
    t, f, d, mem, rl = (r[k] for k in ("throughput", "fixed_rate", "first_delta", "memory",
                                        "rate_limit"))
    lil = r["litellm"]
    peer = (f"LiteLLM `{lil['spec']}`, one worker, `/v1/chat/completions`, default settings "
            "(its access log on)." if "litellm" in t else
            f"LiteLLM: {lil.get('unavailable') or lil.get('skipped')}.")
    return "\n".join([
        *lines, f"Throughput: {t['concurrency']} concurrent clients, "
        f"{t['requests_per_round']} requests per round, rounds alternated; gateway "
        f"CPU {_ms(t['gateway_cpu_ms_per_request'])} ms per request.", "",
        *table(("target", "requests", "errors", "req/s", "p50 ms", "p99 ms", "load-tool CPU"),
               ((n, s["requests"], s["errors"], f"{s['rps']:.0f}", _ms(s["p50_ms"]),
                 _ms(s["p99_ms"]), f"{s['client_cpu_share']:.0%}")
                for n in TARGETS if (s := t.get(n)))), "",
        f"Fixed rate: {f['rate']:.0f} requests/s, {len(f['rounds'])} rounds of "
        f"{f['seconds_per_round']:g} s per target, alternated (emulator, gateway, emulator, "
        "…); latency from the scheduled send time. The verdicts are on the median of the "
        "rounds.", "", *_rounds(f, "requests"),
        "Streaming, one stream at a time: time until the first text delta arrives; "
        f"{len(d['rounds'])} rounds per target, alternated, the verdict on their median.", "",
        *_rounds(d, "streams"),
        f"Memory (RSS): {_ms(mem['gateway_started_mib'])} MiB just started, "
        f"{_ms(mem['gateway_idle_100_endpoints_mib'])} MiB idle with 100 endpoints.", "",
        f"Rate limit: {rl['requests']} requests at once to a 600 rpm endpoint; "
        f"{rl['admitted']} reached the emulator over {rl['span_seconds']} s "
        f"({_ms(rl['admitted_rpm'])} rpm); {rl['errors']} errors.", "", peer])


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
