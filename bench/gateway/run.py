"""Gateway benchmark: the same bounded load on loopback, first straight to the Anthropic
emulator, then through the gateway, in one run.

Starts ``inference-operator emulator`` and ``inference-operator gateway`` as processes,
drives them with an aiohttp client from this process, and prints requests/s, p50/p99, the
latency the gateway adds (as a ratio and a difference) and the gateway's resident memory.
All three processes share the machine's cores; read the numbers as relative.

    .venv/bin/python bench/gateway/run.py [--requests 2000] [--concurrency 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

CLI = [sys.executable, "-m", "inference_operator.cli.main"]
TOKEN = "bench-admin-token"
MODEL = "claude-bench"
PROMPT = "What is Elastic?"


@dataclass
class Result:
    name: str
    requests: int
    errors: int
    seconds: float
    latencies: list[float]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def wait_up(session: aiohttp.ClientSession, url: str, seconds: float = 30) -> None:
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


async def load(session: aiohttp.ClientSession, name: str, url: str, body: dict,
               headers: dict[str, str], requests: int, concurrency: int,
               time_limit: float) -> Result:
    """``requests`` POSTs from ``concurrency`` workers; stops early at ``time_limit``."""
    latencies: list[float] = []
    errors = 0
    issued = 0
    payload = json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **headers}
    stop_at = time.monotonic() + time_limit

    async def worker() -> None:
        nonlocal issued, errors
        while issued < requests and time.monotonic() < stop_at:
            issued += 1
            started = time.perf_counter()
            async with session.post(url, data=payload, headers=headers) as response:
                await response.read()
                if response.status != 200:
                    errors += 1
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Result(name, len(latencies), errors, time.perf_counter() - started, latencies)


@dataclass
class Targets:
    emulator: str
    public: str
    admin: str
    gateway_pid: int


def start_processes(args: argparse.Namespace) -> tuple[list[subprocess.Popen], Targets]:
    emulator_port, port, admin_port = free_port(), free_port(), free_port()
    work = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    (work / "token").write_text(TOKEN)
    processes = [
        subprocess.Popen([*CLI, "emulator", "--host", "127.0.0.1", "--port", str(emulator_port),
                          "--first-token-latency", str(args.upstream_latency),
                          "--log-level", "warning"]),
        subprocess.Popen([*CLI, "gateway", "--host", "127.0.0.1", "--port", str(port),
                          "--admin-port", str(admin_port),
                          "--admin-token-file", str(work / "token"),
                          "--anthropic-base-url", f"http://127.0.0.1:{emulator_port}",
                          "--ready-without-sync", "--log-level", "warning"]),
    ]
    return processes, Targets(f"http://127.0.0.1:{emulator_port}", f"http://127.0.0.1:{port}",
                              f"http://127.0.0.1:{admin_port}", processes[1].pid)


async def drive(args: argparse.Namespace, targets: Targets
                ) -> tuple[Result, Result, float, float]:
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await wait_up(session, targets.emulator + "/_emulator/latency")
        await wait_up(session, targets.public + "/healthz")
        # A rate limit far above the load: this measures the gateway, not the limiter.
        async with session.put(
            targets.admin + "/_inference/completion/bench",
            headers={"Authorization": f"Bearer {TOKEN}"},
            json={"service": "anthropic",
                  "service_settings": {"api_key": "bench-key", "model_id": MODEL,
                                       "rate_limit": {"requests_per_minute": 10_000_000}},
                  "task_settings": {"max_tokens": 64}},
        ) as response:
            assert response.status == 200, await response.text()

        # The body the gateway sends upstream for the same input, sent by us directly.
        direct = (targets.emulator + "/v1/messages",
                  {"model": MODEL, "max_tokens": 64,
                   "messages": [{"role": "user", "content": PROMPT}]},
                  {"x-api-key": "bench-key", "anthropic-version": "2023-06-01"})
        through = (targets.public + "/_inference/completion/bench", {"input": PROMPT}, {})
        rss_idle = rss_mib(targets.gateway_pid)
        for url, body, headers in (direct, through):  # warm-up, not measured
            await load(session, "warm-up", url, body, headers, args.warmup,
                       args.concurrency, args.time_limit)
        straight = await load(session, "emulator directly", *direct, args.requests,
                              args.concurrency, args.time_limit)
        gateway = await load(session, "through the gateway", *through, args.requests,
                             args.concurrency, args.time_limit)
        return straight, gateway, rss_idle, rss_mib(targets.gateway_pid)


def report(args: argparse.Namespace, straight: Result, gateway: Result, rss_idle: float,
           rss_after: float) -> None:
    print(f"\nmachine: {platform.machine()}, {_cores()} cores, Python "
          f"{platform.python_version()}; load: {args.requests} requests at concurrency "
          f"{args.concurrency} after {args.warmup} warm-up, upstream latency "
          f"{args.upstream_latency * 1000:.0f} ms; client, gateway and emulator share the cores")
    print(f"{'target':<22}{'requests':>9}{'errors':>8}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}")
    for r in (straight, gateway):
        print(f"{r.name:<22}{r.requests:>9}{r.errors:>8}{r.rps:>9.0f}"
              f"{r.percentile(50) * 1000:>9.1f}{r.percentile(99) * 1000:>9.1f}")
    p50_ratio = gateway.percentile(50) / straight.percentile(50)
    p50_diff = (gateway.percentile(50) - straight.percentile(50)) * 1000
    p99_diff = (gateway.percentile(99) - straight.percentile(99)) * 1000
    mean_diff = (statistics.fmean(gateway.latencies) - statistics.fmean(straight.latencies)) * 1000
    print(f"added latency: p50 x{p50_ratio:.2f} (+{p50_diff:.1f} ms), p99 +{p99_diff:.1f} ms, "
          f"mean +{mean_diff:.1f} ms; throughput ratio {gateway.rps / straight.rps:.2f}")
    print(f"gateway RSS: {rss_idle:.0f} MiB idle, {rss_after:.0f} MiB after the run")


def _cores() -> int:
    return len(os.sched_getaffinity(0))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--upstream-latency", type=float, default=0.0,
                        help="the emulator's time to first token, seconds")
    parser.add_argument("--time-limit", type=float, default=120.0,
                        help="seconds per phase at most")
    args = parser.parse_args()
    processes, targets = start_processes(args)
    try:
        straight, gateway, rss_idle, rss_after = asyncio.run(drive(args, targets))
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(timeout=15)
    report(args, straight, gateway, rss_idle, rss_after)
    return 0 if straight.errors == gateway.errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
