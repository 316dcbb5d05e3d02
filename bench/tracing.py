"""Tracing benchmark: what tracing costs a gateway request, off (the default) and on with
every request sampled and exported to a real receiver (Jaeger v2), side by side in one
run: two standalone gateway processes against one emulator, alternated rounds of
sequential requests; their latency, the gateways' CPU per request and memory, and what
importing OpenTelemetry costs a process. docs/benchmarks.md says how it runs."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiohttp

from bench import harness, loadgen
from bench.harness import START_SECONDS, mark, step, table
from bench.loadgen import Target
from inference_devkit.controlplane.jaeger import running_jaeger
from inference_devkit.devstack.processes import Service, Stack
from inference_devkit.loopback import free_port
from inference_operator import telemetry

NAME, HEADING = "tracing", "Gateway tracing"
MODES = {"off": "(a) tracing off (the default)", "on": "(b) tracing on, every request sampled"}
ENDPOINT = "traced"
BODY = {"input": "What is Elastic?"}
# "Free when off": importing the gateway loads nothing of OpenTelemetry (a test checks it);
# on, the SDK and its OTLP/HTTP exporter are imported once, at start.
GATEWAY_IMPORTS = "import inference_operator.gateway.server"
TRACING_IMPORTS = ("from inference_operator import telemetry; "
                   "telemetry.tracer_provider('bench').shutdown()")
OPTIONS = harness.options("""
    --rounds 10 2                   alternated rounds (the requests split among them)
    --requests 2000 40              sequential requests per mode
    --warmup 100 5                  uncounted requests per mode first
    --imports 5 2                   fresh interpreters per import measurement
    --time-limit 120.0 60.0         seconds per round and mode at most
""")


def import_cost(repeat: int) -> dict[str, Any]:
    """Seconds and peak memory of a fresh interpreter importing the gateway, and the
    gateway plus what tracing on loads: the medians of ``repeat`` runs."""
    probe = ("import resource, time; started = time.perf_counter(); {code}; "
             "print(time.perf_counter() - started, "
             "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    out: dict[str, Any] = {}
    for name, code in (("off", GATEWAY_IMPORTS), ("on", f"{GATEWAY_IMPORTS}; {TRACING_IMPORTS}")):
        runs = [subprocess.run([sys.executable, "-c", probe.format(code=code)], check=True,
                               capture_output=True, text=True, timeout=120).stdout.split()
                for _ in range(repeat)]
        out[name] = {"seconds": round(statistics.median(float(r[0]) for r in runs), 3),
                     "max_rss_mib": round(statistics.median(int(r[1]) for r in runs) / 1024, 1)}
    return out


async def latency(args: argparse.Namespace, gateways: dict[str, tuple[Stack, Service]]
                  ) -> dict[str, Any]:
    """Sequential requests on one keep-alive connection per gateway, alternated rounds;
    the gateways' CPU over the counted rounds."""
    targets = {mode: Target(mode, f"{stack.gateway_url}/_inference/completion/{ENDPOINT}",
                            BODY) for mode, (stack, _) in gateways.items()}
    sessions = {mode: aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))
                for mode in gateways}
    per_round = args.requests // args.rounds

    def sequential(mode: str, requests: int) -> Any:
        return loadgen.closed_loop(sessions[mode], targets[mode], requests=requests,
                                   concurrency=1, time_limit=args.time_limit)

    try:
        for mode in gateways:
            await harness.put_endpoint(sessions[mode], gateways[mode][0], ENDPOINT,
                                       model="claude-sonnet-4-5", max_tokens=64, rpm=1_000_000)
            if not (await sequential(mode, args.warmup)).latencies:
                raise RuntimeError(f"the {mode} gateway does not answer 200\n"
                                   + gateways[mode][1].log_tail(10))
        cpu_before = {mode: service.cpu_seconds() for mode, (_, service) in gateways.items()}
        rounds = await loadgen.alternate(tuple(MODES), args.rounds,
                                         lambda mode: sequential(mode, per_round))
        cpu = {mode: service.cpu_seconds() - cpu_before[mode]
               for mode, (_, service) in gateways.items()}
    finally:
        for session in sessions.values():
            await session.close()
    modes = {mode: loadgen.merged(samples).summary() for mode, samples in rounds.items()}
    result = {"rounds": args.rounds, "per_round": per_round, "modes": modes,
              "added_ms": loadgen.added(rounds, "on", "off"),
              "cpu_ms_per_request": {
                  mode: round(cpu[mode] * 1000 / max(1, modes[mode]["requests"]), 3)
                  for mode in MODES},
              "rss_mib": {mode: round(service.rss_mib(), 1)
                          for mode, (_, service) in gateways.items()}}
    step(f"  added p50 {result['added_ms']['p50']:+.3f} ms, CPU per request "
         f"{result['cpu_ms_per_request']}")
    return result


def section(result: dict[str, Any]) -> str:
    lat, imports = result["latency"], result["imports"]
    modes, added, cpu, rss = lat["modes"], lat["added_ms"], lat["cpu_ms_per_request"], lat[
        "rss_mib"]
    return "\n".join([
        harness.machine_line(result["run"]), "",
        f"**Latency and CPU**: sequential `POST /_inference/completion/{ENDPOINT}` on one "
        f"keep-alive connection per gateway, {lat['rounds']} rounds of {lat['per_round']} "
        "requests each, the order rotated each round; (b) exports every span over OTLP/HTTP "
        "to Jaeger v2 on loopback (`OTEL_BSP_SCHEDULE_DELAY=50`). CPU: the gateway "
        "process's, over the counted rounds, per answered request.", "",
        *table(("mode", "requests", "errors", "p50 ms", "p90 ms", "p99 ms", "added p50",
                "added p99", "gateway CPU per request", "gateway RSS"),
               ((label, s["requests"] + s["errors"], s["errors"],
                 *(f"{s[f'p{q}_ms']:.3f}" for q in (50, 90, 99)),
                 *(["", ""] if mode == "off" else
                   [f"{added[f'p{q}']:+.3f} ms" for q in (50, 99)]),
                 f"{cpu[mode]:.3f} ms", f"{rss[mode]} MiB")
                for mode, label in MODES.items() for s in [modes[mode]])), "",
        f"**Imports**: a fresh interpreter importing the gateway's server module, the median "
        f"of {result['run']['args']['imports']} runs, and the same plus what tracing on "
        "loads (the SDK, the OTLP/HTTP exporter, a tracer provider).", "",
        *table(("", "seconds", "peak RSS"),
               [(MODES[mode], f"{imports[mode]['seconds']:.3f}",
                 f"{imports[mode]['max_rss_mib']} MiB") for mode in MODES]), "",
        *table(("check", "measured", ""), [
            ("every request answered in both modes",
             f"{modes['off']['errors']} and {modes['on']['errors']} errors",
             mark(modes["off"]["errors"] == modes["on"]["errors"] == 0))])])


def invalid(args: argparse.Namespace) -> str | None:
    if args.rounds < 1 or args.requests < args.rounds:
        return "every round needs at least one request"
    return None


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-tracing-"))
    step(f"emulator, Jaeger and two gateways: logs in {work}")
    imports = import_cost(args.imports)
    step(f"  imports: {json.dumps(imports)}")
    with running_jaeger(work / "jaeger") as receiver:
        off = Stack(work, api_keys=(), admin_token=harness.ADMIN_TOKEN)
        on = dataclasses.replace(off, gateway_port=free_port(), admin_port=free_port(),
                                 gateway_metrics_port=free_port(), services={})
        try:
            off.start(off.emulator("--log-level", "warning"), START_SECONDS)
            gateways: dict[str, tuple[Stack, Service]] = {}
            for mode, stack in (("off", off), ("on", on)):
                service = stack.gateway("--log-level", "warning")
                service.name, service.log_path = f"gateway-{mode}", work / f"gateway-{mode}.log"
                service.env.update(receiver.exporting_env() if mode == "on"
                                   else dict.fromkeys(telemetry.ENDPOINT_VARIABLES))
                gateways[mode] = (stack, stack.start(service, START_SECONDS))
            return {"imports": imports, "latency": asyncio.run(latency(args, gateways))}
        finally:
            on.stop()
            off.stop()


if __name__ == "__main__":
    sys.exit(harness.main(sys.modules[__name__]))
