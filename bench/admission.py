"""Admission benchmark: each endpoint's request-rate bucket alone, as before the
organisation budget (a), against the budget learned from Anthropic's rate-limit headers
(b), side by side in one run: two standalone gateway processes against one emulator
enforcing an organisation's limits. Under load past the limit: the upstream 429s, how much
of the binding limit is used, what callers see; unloaded: what admission adds to a
request's latency. docs/benchmarks.md says how it runs."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from bench import harness, loadgen
from bench.harness import START_SECONDS, mark, step, table
from bench.loadgen import Target
from inference_devkit.devstack.processes import Service, Stack
from inference_devkit.loopback import free_port

NAME, HEADING = "admission", "Admission: the organisation budget"
MODES = {"bucket": "(a) each endpoint's rpm bucket only (`--no-org-limits`)",
         "budget": "(b) the organisation budget (the default)"}
OUTPUT_PER_MINUTE = 6_000  # the binding limit
# The minute's burst counts as spent below this many tokens left: the gateway's budget
# keeps what Anthropic's remaining, rounded to the thousand, does not show.
SPENT = 1_000
SETTLE = 3.0  # seconds more, for the level to settle where the load keeps it
ENDS_APART = 120  # the largest max_tokens below
LIMITS = {"requests_per_minute": 100_000, "input_tokens_per_minute": 10_000_000,
          "output_tokens_per_minute": OUTPUT_PER_MINUTE}  # round_remaining: as Anthropic
UNBOUND = {"requests_per_minute": 10_000_000, "input_tokens_per_minute": 1_000_000_000,
           "output_tokens_per_minute": 1_000_000_000}
# (endpoint, model, max_tokens): one key, one model class (Sonnet 4 and 4.5 share).
ENDPOINTS = [("team-a", "claude-sonnet-4-5", 40), ("team-b", "claude-sonnet-4-20250514", 80),
             ("team-c", "claude-sonnet-4-5", 120)]
OPTIONS = harness.options("""
    --load-seconds 60.0 4.0         seconds of load measured per mode (after the burst)
    --callers 16 4                  concurrent callers of the load (closed loop)
    --requests 2000 40              sequential requests per mode, unloaded
    --rounds 4 2                    alternated rounds of those
    --time-limit 120.0 60.0         seconds per phase and mode at most
""")


async def emulator(session: aiohttp.ClientSession, stack: Stack, method: str, path: str,
                   body: Any = None) -> Any:
    async with session.request(method, f"{stack.emulator_url}/_emulator/{path}",
                               json=body) as response:
        response.raise_for_status()
        return await response.json()


async def output_level(session: aiohttp.ClientSession, stack: Stack) -> float:
    limits = await emulator(session, stack, "GET", "limits")
    return limits["classes"].get("sonnet-4", {}).get("output-tokens", {}).get(
        "remaining", OUTPUT_PER_MINUTE)


async def load(args: argparse.Namespace, session: aiohttp.ClientSession, stack: Stack
               ) -> dict[str, Any]:
    """Callers past the limit: the minute's burst spent first, then ``load_seconds``
    measured: the output limit's use (what its bucket lost plus what refilled; reserved
    counts, as Anthropic counts it), the upstream's 429s, the callers' answers."""
    await emulator(session, stack, "POST", "reset")
    await emulator(session, stack, "PUT", "limits", LIMITS)
    await emulator(session, stack, "PUT", "latency", {"per_token": 0.001})
    rng, numbers = random.Random(7), itertools.count()
    statuses: Counter[str] = Counter()
    stop = asyncio.Event()

    async def caller() -> None:
        while not stop.is_set():
            n = next(numbers)
            inference_id = ENDPOINTS[n % len(ENDPOINTS)][0]
            stream = "/_stream" if n % 2 else ""
            prompt = " ".join(["word"] * rng.randint(5, 200))
            try:
                async with session.post(
                        f"{stack.gateway_url}/_inference/completion/{inference_id}{stream}",
                        json={"input": prompt}) as answer:
                    await answer.read()
                    statuses[str(answer.status)] += 1
            except aiohttp.ClientError as error:
                statuses[type(error).__name__] += 1

    callers = [asyncio.create_task(caller()) for _ in range(args.callers)]
    try:
        for _ in range(round(args.time_limit * 10)):
            if await output_level(session, stack) < SPENT:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(SETTLE)
        statuses.clear()
        upstream_before = len(await emulator(session, stack, "GET", "requests"))
        level, started = await output_level(session, stack), time.monotonic()
        await asyncio.sleep(args.load_seconds)
        # Ended where the bucket is as full as it was at the start (within a request's
        # max_tokens, or 10 s more at most): a fuller or emptier bucket would count as use.
        for _ in range(100):
            end_level = await output_level(session, stack)
            if abs(end_level - level) <= ENDS_APART:
                break
            await asyncio.sleep(0.1)
        elapsed = time.monotonic() - started
        used = level - end_level + OUTPUT_PER_MINUTE / 60 * elapsed
        calls = (await emulator(session, stack, "GET", "requests"))[upstream_before:]
    finally:
        stop.set()
        await asyncio.gather(*callers)
    outcomes = Counter(call["outcome"] for call in calls if call["path"] == "/v1/messages")
    return {"seconds": round(elapsed, 1), "levels": [level, end_level],
            "callers": dict(statuses),
            "upstream": dict(outcomes),
            "output_tokens_per_second": round(used / elapsed, 1),
            "utilisation": round(used / (OUTPUT_PER_MINUTE / 60 * elapsed), 3)}


async def measure(args: argparse.Namespace, gateways: dict[str, Stack]) -> dict[str, Any]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        some = next(iter(gateways.values()))
        for stack in gateways.values():
            for inference_id, model, max_tokens in ENDPOINTS:
                await harness.put_endpoint(session, stack, inference_id, model=model,
                                           max_tokens=max_tokens, rpm=1_000_000)
        loaded = {}
        for mode, stack in gateways.items():
            step(f"  {mode}: load past {OUTPUT_PER_MINUTE:,} output tokens a minute")
            loaded[mode] = await load(args, session, stack)
            step(f"    {loaded[mode]}")
        # Unloaded: limits far away, answers at once; what admission costs a request.
        await emulator(session, some, "POST", "reset")
        await emulator(session, some, "PUT", "limits", UNBOUND)
        per_round = args.requests // args.rounds
        rounds = await loadgen.sequential_rounds(
            {mode: Target(mode, f"{gateways[mode].gateway_url}/_inference/completion/team-a",
                          {"input": "What is Elastic?"}) for mode in MODES},
            rounds=args.rounds, per_round=per_round, time_limit=args.time_limit)
    return {"load": loaded, "latency": {
        "rounds": args.rounds, "per_round": per_round,
        "modes": {mode: loadgen.merged(samples).summary() for mode, samples in rounds.items()},
        "added_ms": loadgen.added(rounds, "budget", "bucket")}}


def section(result: dict[str, Any]) -> str:
    load, lat = result["load"], result["latency"]
    budget, added = load["budget"], lat["added_ms"]
    zero = budget["upstream"].get("429", 0) == 0
    used = budget["utilisation"] >= 0.9
    answered = set(budget["callers"]) == {"200"}
    measured = harness.bound(used, result["run"])
    result["failed"] = not (zero and measured and answered)
    return "\n".join([
        harness.machine_line(result["run"]), "",
        f"**Load past the limit**: the emulator allows {OUTPUT_PER_MINUTE:,} output tokens "
        "a minute (requests and input far away), remaining rounded to the thousand as "
        "Anthropic sends it, 1 ms a generated token; three endpoints on one key and model "
        "class (`max_tokens` 40, 80, 120), streamed and not, prompts of 5 to 200 words, "
        f"{result['run']['args']['callers']} callers each sending its next request as soon "
        "as the last is answered. Measured once the minute's burst is spent (fewer than "
        f"{SPENT:,} tokens left, and {SETTLE:.0f} s more), over a window whose two ends "
        "find the bucket within "
        f"{ENDS_APART} tokens of each other: the output limit's use (what refilled over the "
        "window, plus what the bucket lost; reservations included, as Anthropic counts "
        "them).", "",
        *table(("mode", "seconds", "upstream answers", "upstream 429s",
                "output tokens a second", "of the limit", "callers' answers"),
               ((label, r["seconds"], sum(r["upstream"].values()), r["upstream"].get("429", 0),
                 r["output_tokens_per_second"], f"{r['utilisation']:.0%}",
                 ", ".join(f"{status}: {n}" for status, n in sorted(r["callers"].items())))
                for mode, label in MODES.items() for r in [load[mode]])), "",
        f"**Added latency**: sequential `POST /_inference/completion/team-a` on one "
        f"keep-alive connection per gateway, limits far away, {lat['rounds']} rounds of "
        f"{lat['per_round']} requests, the order rotated each round. Every request here is "
        "admitted by the gateway that holds the budget (one replica); what a request "
        "another replica must admit pays is in \"Peer admission: asking the owner\" "
        "below.", "",
        *table(("mode", "requests", "errors", "p50 ms", "p99 ms", "added p50", "added p99"),
               ((label, s["requests"] + s["errors"], s["errors"],
                 *(f"{s[f'p{q}_ms']:.3f}" for q in (50, 99)),
                 *(["", ""] if mode == "bucket" else
                   [f"{added[f'p{q}']:+.3f} ms" for q in (50, 99)]))
                for mode, label in MODES.items() for s in [lat["modes"][mode]])), "",
        *table(("check", "measured", ""), [
            ("(b) no upstream 429 once the limits are known",
             f"{budget['upstream'].get('429', 0)}", mark(zero)),
            ("(b) at least 90 % of the binding limit used", f"{budget['utilisation']:.0%}",
             mark(used)),
            ("(b) every caller answered 200", str(budget["callers"]), mark(answered))])])


def invalid(args: argparse.Namespace) -> str | None:
    if args.rounds < 1 or args.requests < args.rounds:
        return "every round needs at least one request"
    if args.callers < 1 or args.load_seconds <= 0:
        return "the load needs callers and seconds"
    return None


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-admission-"))
    step(f"emulator and two gateways: logs in {work}")
    bucket = Stack(work, api_keys=(), admin_token=harness.ADMIN_TOKEN)
    budget = dataclasses.replace(bucket, gateway_port=free_port(), admin_port=free_port(),
                                 gateway_metrics_port=free_port(), services={})
    try:
        bucket.start(bucket.emulator("--log-level", "warning"), START_SECONDS)
        services: dict[str, Service] = {}
        for mode, stack, extra in (("bucket", bucket, ("--no-org-limits",)),
                                   ("budget", budget, ())):
            service = stack.gateway("--log-level", "warning", "--no-access-log", *extra)
            service.name, service.log_path = f"gateway-{mode}", work / f"gateway-{mode}.log"
            services[mode] = stack.start(service, START_SECONDS)
        return asyncio.run(measure(args, {"bucket": bucket, "budget": budget}))
    finally:
        budget.stop()
        bucket.stop()


if __name__ == "__main__":
    sys.exit(harness.main(sys.modules[__name__]))
