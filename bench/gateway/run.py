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
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import clientcost
import hotpath_profile
import loadgen
import peer_litellm
import report
from loadgen import Sample, Target

from inference_operator.loopback import free_port

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "inference_operator.cli.main"]
TOKEN = "bench-admin-token"
MODEL = "claude-bench"
RATE_MODEL = "claude-bench-rate"
PROMPT = "What is Elastic?"
MAX_TOKENS = 64
ENDPOINTS = 100
UNLIMITED_RPM = 10_000_000  # far above any load here: the limiter never waits


@dataclass
class Processes:
    emulator: subprocess.Popen
    gateway: subprocess.Popen
    emulator_url: str
    public_url: str
    admin_url: str

    def stop(self) -> None:
        for process in (self.gateway, self.emulator):
            process.send_signal(signal.SIGTERM)
        for process in (self.gateway, self.emulator):
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def tree_rss_mib(pid: int) -> float:
    """RSS of a process and every process in its session (LiteLLM may fork)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == pid:
                    total += rss_mib(int(entry.name))
            except (OSError, ValueError):
                continue
    return total


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_processes(work: Path) -> Processes:
    emulator_port, port, admin_port = free_port(), free_port(), free_port()
    (work / "token").write_text(TOKEN)
    emulator = subprocess.Popen([*CLI, "emulator", "--host", "127.0.0.1",
                                 "--port", str(emulator_port), "--log-level", "warning"])
    gateway = subprocess.Popen([*CLI, "gateway", "--host", "127.0.0.1", "--port", str(port),
                                "--admin-port", str(admin_port),
                                "--admin-token-file", str(work / "token"),
                                "--anthropic-base-url", f"http://127.0.0.1:{emulator_port}",
                                "--ready-without-sync", "--log-level", "warning"])
    return Processes(emulator, gateway, f"http://127.0.0.1:{emulator_port}",
                     f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}")


async def wait_up(session: aiohttp.ClientSession, url: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            async with session.get(url) as response:
                await response.read()
                return
        except aiohttp.ClientError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


class Bench:
    def __init__(self, args: argparse.Namespace, procs: Processes) -> None:
        self.args = args
        self.procs = procs
        self.results: dict[str, Any] = {}
        direct_headers = {"x-api-key": "bench-key-000", "anthropic-version": "2023-06-01"}
        self.emulator = Target(
            "emulator", procs.emulator_url + "/v1/messages",
            {"model": MODEL, "max_tokens": MAX_TOKENS,
             "messages": [{"role": "user", "content": PROMPT}]},
            direct_headers, b"event: content_block_delta")
        completion = procs.public_url + "/_inference/completion/bench-000"
        self.gateway = Target("gateway", completion, {"input": PROMPT}, {}, b'"delta"',
                              stream_url=completion + "/_stream")
        self.litellm: Target | None = None

    # -- setup -------------------------------------------------------------------------

    async def admin_put(self, session: aiohttp.ClientSession, inference_id: str, key: str,
                        model: str, rpm: int) -> None:
        async with session.put(
            f"{self.procs.admin_url}/_inference/completion/{inference_id}",
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
        async with session.put(self.procs.emulator_url + "/_emulator/latency",
                               json={"first_token": 0.0, "per_token": per_token}) as response:
            response.raise_for_status()

    # -- phases ------------------------------------------------------------------------

    async def memory_idle(self, session: aiohttp.ClientSession) -> None:
        pid = self.procs.gateway.pid
        started = rss_mib(pid)
        for n in range(ENDPOINTS):
            await self.admin_put(session, f"bench-{n:03d}", f"bench-key-{n:03d}", MODEL,
                                 UNLIMITED_RPM)
        await asyncio.sleep(1.0)
        self.results["memory"] = {"gateway_started_mib": round(started, 1),
                                  "gateway_idle_100_endpoints_mib": round(rss_mib(pid), 1)}

    async def throughput(self, session: aiohttp.ClientSession) -> None:
        a = self.args
        pid = self.procs.gateway.pid
        for target in (self.emulator, self.gateway):  # warm-up, not measured
            await loadgen.closed_loop(session, target, requests=a.warmup,
                                      concurrency=a.concurrency, time_limit=a.time_limit)
        rounds: dict[str, list[Sample]] = {"emulator": [], "gateway": []}
        gateway_cpu = 0.0
        for number in range(a.rounds):  # alternated, so drift hits both alike
            rounds["emulator"].append(await loadgen.closed_loop(
                session, self.emulator, requests=a.requests, concurrency=a.concurrency,
                time_limit=a.time_limit))
            cpu = cpu_seconds(pid)
            profiler = hotpath_profile.start(pid, a.profile) if a.profile and number == 0 else None
            rounds["gateway"].append(await loadgen.closed_loop(
                session, self.gateway, requests=a.requests, concurrency=a.concurrency,
                time_limit=a.time_limit))
            gateway_cpu += cpu_seconds(pid) - cpu
            if profiler is not None:
                self.results["profile"] = await asyncio.to_thread(profiler.finish)
        merged = {name: loadgen.merged(samples) for name, samples in rounds.items()}
        done = len(merged["gateway"].latencies)
        self.results["throughput"] = {
            "concurrency": a.concurrency, "requests_per_round": a.requests,
            "rounds": {name: [s.summary() for s in samples] for name, samples in rounds.items()},
            "emulator": merged["emulator"].summary(),
            "gateway": merged["gateway"].summary(),
            "gateway_cpu_ms_per_request": round(gateway_cpu / done * 1000, 3) if done else None,
        }

    async def throughput_litellm(self, session: aiohttp.ClientSession,
                                 peer: peer_litellm.LiteLLM) -> None:
        a = self.args
        assert self.litellm is not None
        pid = peer.process.pid
        await loadgen.closed_loop(session, self.litellm, requests=a.litellm_warmup,
                                  concurrency=a.concurrency, time_limit=a.time_limit)
        cpu = cpu_seconds(pid)
        sample = await loadgen.closed_loop(session, self.litellm, requests=a.litellm_requests,
                                           concurrency=a.concurrency, time_limit=a.time_limit)
        done = len(sample.latencies)
        self.results["throughput"]["litellm"] = {
            **sample.summary(),
            "cpu_ms_per_request": round((cpu_seconds(pid) - cpu) / done * 1000, 3)
            if done else None,
        }
        self.results["memory"]["litellm_after_load_mib"] = round(tree_rss_mib(pid), 1)

    async def fixed_rate(self, session: aiohttp.ClientSession) -> None:
        a = self.args
        per_round = a.rate_seconds / 2
        rounds: dict[str, list[Sample]] = {"emulator": [], "gateway": []}
        for _ in range(2):
            for target in (self.emulator, self.gateway):
                rounds[target.name].append(await loadgen.fixed_rate(
                    session, target, rate=a.rate, seconds=per_round,
                    time_limit=per_round + 30))
        merged = {name: loadgen.merged(samples) for name, samples in rounds.items()}
        emulator, gateway = merged["emulator"], merged["gateway"]
        self.results["fixed_rate"] = {
            "rate": a.rate, "seconds": a.rate_seconds,
            "emulator": emulator.summary(), "gateway": gateway.summary(),
            "added_p50_ms": round((gateway.percentile(50) - emulator.percentile(50)) * 1000, 3),
            "added_p99_ms": round((gateway.percentile(99) - emulator.percentile(99)) * 1000, 3),
            "latencies_ms": {name: sorted(round(x * 1000, 3) for x in s.latencies)
                             for name, s in merged.items()},
        }

    async def first_delta(self, session: aiohttp.ClientSession) -> None:
        a = self.args
        targets = [self.emulator, self.gateway] + ([self.litellm] if self.litellm else [])
        samples = {}
        for target in targets:
            count = a.ttfb_requests if target is not self.litellm else a.litellm_ttfb_requests
            await loadgen.time_to_first_delta(session, target, requests=10,
                                              time_limit=a.time_limit)
            samples[target.name] = await loadgen.time_to_first_delta(
                session, target, requests=count, time_limit=a.time_limit)
        emulator, gateway = samples["emulator"], samples["gateway"]
        self.results["first_delta"] = {
            **{name: s.summary() for name, s in samples.items()},
            "added_p50_ms": round((gateway.percentile(50) - emulator.percentile(50)) * 1000, 3),
            "added_p99_ms": round((gateway.percentile(99) - emulator.percentile(99)) * 1000, 3),
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
        pid = self.procs.gateway.pid
        peak = 0.0
        at_all_open: list[float] = []
        sampling = True

        async def sample() -> None:
            nonlocal peak
            while sampling:
                peak = max(peak, rss_mib(pid))
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
                    on_all_open=lambda: at_all_open.append(rss_mib(pid)))
            finally:
                sampling = False
                await sampler
                await self.emulator_latency(session, 0.0)
        self.results["memory"].update({
            "streams": a.streams, "streams_opened": opened, "streams_completed": completed,
            "stream_phase_seconds": round(time.monotonic() - started, 1),
            "gateway_all_streams_open_mib": round(at_all_open[0], 1) if at_all_open else None,
            "gateway_peak_streams_mib": round(peak, 1),
            "gateway_after_streams_mib": round(rss_mib(pid), 1),
        })

    async def rate_limit(self, session: aiohttp.ClientSession) -> None:
        """Keeps the 600 rpm bucket's queue full for ``--rate-window`` seconds and reads
        the upstream's arrival times (the emulator's log, monotonic clock)."""
        a = self.args
        rpm = 600
        count = round(a.rate_window * rpm / 60) + 1  # the first token is there at once
        await self.admin_put(session, "bench-rate", "bench-key-rate", RATE_MODEL, rpm)
        async with session.delete(self.procs.emulator_url + "/_emulator/requests"):
            pass
        url = (f"{self.procs.public_url}/_inference/completion/bench-rate"
               f"?timeout={round(a.rate_window + 30)}s")
        target = Target("rate", url, {"input": PROMPT})
        sample = await loadgen.closed_loop(session, target, requests=count, concurrency=count,
                                           time_limit=a.rate_window + 40)
        async with session.get(self.procs.emulator_url + "/_emulator/requests") as response:
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
            peer = peer_litellm.start(venv, port=free_port(), upstream=self.procs.emulator_url,
                                      model=MODEL, api_key="bench-key-litellm",
                                      log=cache / "litellm.log")
        except peer_litellm.Unavailable as error:
            info["unavailable"] = str(error)
            print(f"LiteLLM unavailable, continuing without it: {error}", flush=True)
            return None
        try:
            info["startup_seconds"] = round(peer_litellm.wait_ready(
                peer, lambda: _answers(peer.url + "/health/liveliness")), 1)
        except peer_litellm.Unavailable as error:
            peer.stop()
            info["unavailable"] = str(error)
            print(f"LiteLLM unavailable, continuing without it: {error}", flush=True)
            return None
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
            await wait_up(session, self.procs.emulator_url + "/_emulator/latency")
            await wait_up(session, self.procs.public_url + "/healthz")
            step("SDK against a direct request (in this process)")
            self.results["client_cost"] = await clientcost.measure(
                self.procs.emulator_url, MODEL, PROMPT, MAX_TOKENS, a.client_cost_requests)
            step(f"memory: gateway idle with {ENDPOINTS} endpoints")
            await self.memory_idle(session)
            step(f"throughput: {a.rounds}x{a.requests} requests at concurrency {a.concurrency}")
            await self.throughput(session)
            step(f"fixed rate: {a.rate:.0f} requests/s for {a.rate_seconds:.0f} s per target")
            await self.fixed_rate(session)
            step("LiteLLM: install (first run only) and start")
            peer = await asyncio.to_thread(self.start_litellm)
            try:
                if peer is not None:
                    self.results["memory"]["litellm_idle_mib"] = round(
                        tree_rss_mib(peer.process.pid), 1)
                    step(f"LiteLLM throughput: {a.litellm_requests} requests at concurrency "
                         f"{a.concurrency}")
                    await self.throughput_litellm(session, peer)
                step("streaming: time to the first delta, one stream at a time")
                await self.first_delta(session)
            finally:
                if peer is not None:
                    await asyncio.to_thread(peer.stop)
            step(f"memory: {a.streams} concurrent open streams")
            await self.open_streams()
            step(f"rate limit: 600 rpm over {a.rate_window:.0f} s")
            await self.rate_limit(session)
        return self.results


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # loopback only
            return response.status == 200
    except OSError:
        return False


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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000,
                        help="requests per throughput round and target")
    parser.add_argument("--rounds", type=int, default=2,
                        help="alternating throughput rounds per target")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--rate", type=float, default=100.0,
                        help="requests/s of the fixed-rate latency phase")
    parser.add_argument("--rate-seconds", type=float, default=20.0,
                        help="seconds of fixed-rate load per target")
    parser.add_argument("--ttfb-requests", type=int, default=300)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--stream-token-latency", type=float, default=0.5,
                        help="the emulator's seconds between deltas while streams are held")
    parser.add_argument("--rate-window", type=float, default=10.0,
                        help="seconds the 600 rpm bucket is kept busy (the target is "
                             "stated for 60)")
    parser.add_argument("--client-cost-requests", type=int, default=500)
    parser.add_argument("--no-litellm", action="store_true", help="skip the peer")
    parser.add_argument("--litellm-spec", default=peer_litellm.DEFAULT_SPEC)
    parser.add_argument("--litellm-requests", type=int, default=400)
    parser.add_argument("--litellm-warmup", type=int, default=50)
    parser.add_argument("--litellm-ttfb-requests", type=int, default=30)
    parser.add_argument("--time-limit", type=float, default=60.0,
                        help="seconds per phase and target at most")
    parser.add_argument("--profile", type=Path, metavar="FILE",
                        help="record the gateway with py-spy during the first throughput "
                             "round: raw stacks to FILE, the top functions into the results")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: small counts, no LiteLLM, results not written "
                             "to docs/")
    parser.add_argument("--out", type=Path, default=ROOT / "docs",
                        help="where benchmarks.md lives (JSON and charts go to its "
                             "benchmarks/ folder)")
    args = parser.parse_args(argv)
    if not 1 <= args.rate_window <= 180:
        # Every request of the window waits in one queue (capacity 2,000 at 600 rpm).
        parser.error("--rate-window must be between 1 and 180 seconds")
    if args.quick:
        args.requests, args.rounds, args.warmup, args.rate_seconds = 300, 1, 50, 4.0
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
    procs = start_processes(work)
    try:
        results = asyncio.run(Bench(args, procs).run())
    finally:
        procs.stop()
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
