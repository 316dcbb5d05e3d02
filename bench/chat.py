"""Chat completion streaming benchmark: what ``task_type: chat_completion`` costs against
``completion`` streaming, side by side in one run, with the emulator hit directly as the
floor: the time to the first text chunk (sequential streams, a short prompt) and the
gateway's CPU per streamed text chunk (a long prompt, batches of concurrent streams), in
alternated rounds. docs/benchmarks.md says how it runs."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

import aiohttp

from bench import harness, loadgen
from bench.harness import mark, step, table
from bench.loadgen import Target
from inference_devkit.devstack.processes import Stack
from inference_operator.emulator.wire import GREETING, tokens

NAME, HEADING = "chat", "Chat completion streaming"
MODEL = "claude-bench-chat"
MAX_TOKENS = 256  # above both prompts' replies: every stream ends with end_turn
COMPLETION_ID, CHAT_ID = "bench-completion", "bench-chat"
SHORT_PROMPT = "What is Elastic?"
# The emulator answers "<GREETING> <prompt>" one word-sized delta at a time.
LONG_PROMPT = " ".join(f"word{n}" for n in range(92))
TARGETS = {"emulator": "(a) the emulator directly", "completion": "(b) completion `_stream`",
           "chat": "(c) chat_completion `_stream`"}
ADDED_P50_GOAL_MS = 0.2
CPU_RATIO_GOAL = 1.5
OPTIONS = harness.options("""
    --rounds 10 2                alternated rounds of each phase (the streams split among them)
    --ttfc-requests 300 20       sequential streams per target for the time to first chunk
    --warmup 20 3                uncounted streams per target first
    --cpu-streams 100 10         streams per task type and round of the CPU phase
    --concurrency 10 10          streams at a time in the CPU phase
    --token-latency 0.002 0.002  the emulator's seconds between text deltas
    --time-limit 60.0 10.0       seconds per phase and target at most (a round gets its share)
""")


def expected_deltas(prompt: str) -> int:
    return len(tokens(f"{GREETING} {prompt}"))


def targets(stack: Stack, prompt: str) -> dict[str, Target]:
    """What marks a text chunk: the emulator's content_block_delta, completion's "delta"
    event, chat's "content" (the role chunk before it does not count)."""
    completion = f"{stack.gateway_url}/_inference/completion/{COMPLETION_ID}"
    chat = f"{stack.gateway_url}/_inference/chat_completion/{CHAT_ID}"
    messages = [{"role": "user", "content": prompt}]
    return {"emulator": Target("emulator", stack.emulator_url + "/v1/messages",
                               {"model": MODEL, "max_tokens": MAX_TOKENS, "messages": messages},
                               {"x-api-key": "bench-key", "anthropic-version": "2023-06-01"},
                               b"event: content_block_delta"),
            "completion": Target("completion", completion, {"input": prompt}, {}, b'"delta"',
                                 stream_url=completion + "/_stream"),
            "chat": Target("chat", chat, {"messages": messages}, {}, b'"content"',
                           stream_url=chat + "/_stream")}


async def first_chunk(args: argparse.Namespace, stack: Stack) -> dict[str, Any]:
    """Sequential streams on one keep-alive connection per target."""
    short = targets(stack, SHORT_PROMPT)
    timeout = aiohttp.ClientTimeout(total=args.time_limit + 30)
    sessions = {name: aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1),
                                            timeout=timeout) for name in short}
    per_round = max(1, args.ttfc_requests // args.rounds)
    try:
        for name, target in short.items():  # connections opened, code paths warm
            warm = await loadgen.time_to_first_delta(sessions[name], target,
                                                     requests=args.warmup,
                                                     time_limit=args.time_limit)
            if not warm.latencies:
                raise RuntimeError(f"{name}: no stream with a text chunk\n" + stack.log_tails())
        rounds = await loadgen.alternate(tuple(short), args.rounds, lambda name:
                                         loadgen.time_to_first_delta(
                                             sessions[name], short[name], requests=per_round,
                                             time_limit=args.time_limit / args.rounds))
    finally:
        for session in sessions.values():
            await session.close()
    return {"prompt": SHORT_PROMPT, "deltas_per_stream": expected_deltas(SHORT_PROMPT),
            "rounds": args.rounds, "per_round": per_round, "warmup_streams": args.warmup,
            "targets": {name: loadgen.merged(s).summary() for name, s in rounds.items()},
            "added_ms": {"completion": loadgen.added(rounds, "completion", "emulator"),
                         "chat": loadgen.added(rounds, "chat", "emulator"),
                         "chat_vs_completion": loadgen.added(rounds, "chat", "completion")}}


async def cpu_per_chunk(args: argparse.Namespace, stack: Stack) -> dict[str, Any]:
    """The gateway process's CPU (utime + stime, /proc) around each batch over the text
    chunks the client received: chat's role and usage chunks and ``[DONE]`` are not in
    the divisor, so chat is not flattered by them."""
    long, names = targets(stack, LONG_PROMPT), ("completion", "chat")
    gateway = stack.services["gateway"]
    per_stream = expected_deltas(LONG_PROMPT)
    samples: dict[str, list[loadgen.Sample]] = {name: [] for name in names}
    cpu = dict.fromkeys(names, 0.0)
    round_us: dict[str, list[float]] = {name: [] for name in names}
    timeout = aiohttp.ClientTimeout(total=args.time_limit + 30)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=args.concurrency),
                                     timeout=timeout) as session:

        async def batch(name: str, streams: int, limit: float) -> loadgen.Sample:
            return await loadgen.closed_loop(session, long[name], requests=streams,
                                             concurrency=args.concurrency,
                                             time_limit=limit, stream=True)

        for name in names:  # warm-up, not measured
            await batch(name, args.concurrency, args.time_limit)
        for number in range(args.rounds):
            order = names if number % 2 == 0 else names[::-1]
            for name in order:
                before = gateway.cpu_seconds()
                sample = await batch(name, args.cpu_streams, args.time_limit / args.rounds)
                used = gateway.cpu_seconds() - before
                cpu[name] += used
                samples[name].append(sample)
                if sample.chunks:
                    round_us[name].append(round(used / sample.chunks * 1e6, 2))
            step(f"  round {number + 1}/{args.rounds} ({', '.join(order)}): gateway CPU per "
                 "chunk " + ", ".join(f"{n} {round_us[n][-1] if round_us[n] else '-'} µs"
                                      for n in names))

    def per(value: float, count: float, scale: float) -> float | None:
        return round(value / count * scale, 3) if count else None

    task_types = {}
    for name in names:
        s, used = loadgen.merged(samples[name]), cpu[name]
        streams = len(s.latencies)
        task_types[name] = {
            "streams": streams, "errors": s.errors, "chunks": s.chunks,
            "chunks_as_expected": s.chunks == streams * per_stream,
            "seconds": round(s.seconds, 3), "gateway_cpu_s": round(used, 3),
            "gateway_cpu_us_per_chunk": per(used, s.chunks, 1e6),
            "gateway_cpu_us_per_chunk_rounds": round_us[name],
            "gateway_cpu_ms_per_stream": per(used, streams, 1e3)}
    a, b = (task_types[n]["gateway_cpu_us_per_chunk"] for n in ("chat", "completion"))
    ratios = [x / y for x, y in zip(round_us["chat"], round_us["completion"], strict=False) if y]
    return {"prompt_words": len(LONG_PROMPT.split()), "deltas_per_stream": per_stream,
            "rounds": args.rounds, "streams_per_round": args.cpu_streams,
            "concurrency": args.concurrency, "token_latency_s": args.token_latency,
            "clock_ticks_per_second": os.sysconf("SC_CLK_TCK"), "task_types": task_types,
            "ratio_chat_to_completion": round(a / b, 3) if a and b else None,
            "ratio_rounds": [round(r, 3) for r in ratios]}


def section(result: dict[str, Any]) -> str:
    first, cpu = result["first_chunk"], result["cpu"]
    tgt, added = first["targets"], first["added_ms"]
    rows = [(label, tgt[n]["requests"], tgt[n]["errors"],
             *(f"{tgt[n][f'p{q}_ms']:.3f}" for q in (50, 90, 99)),
             *(["", "", ""] if n == "emulator" else
               [f"{added[n][f'p{q}']:+.3f} ms" for q in (50, 90, 99)]))
            for n, label in TARGETS.items()]
    cc = added["chat_vs_completion"]
    rows.append(("(c) minus (b)", "", "", "", "", "", *(f"{cc[f'p{q}']:+.3f} ms"
                                                      for q in (50, 90, 99))))
    tt = cpu["task_types"]
    comp, chat, ratio = tt["completion"], tt["chat"], cpu["ratio_chat_to_completion"]
    per_round, ratio_rounds = cc["p50_rounds"], cpu["ratio_rounds"] or [float("nan")]
    lines = [
        harness.machine_line(result["run"]), "",
        f"**Time to first chunk**: the prompt `{first['prompt']}` "
        f"({first['deltas_per_stream']} text deltas a stream), {first['rounds']} rounds of "
        f"{first['per_round']} sequential streams per target, the order rotated each round.",
        "",
        *table(("target", "streams", "errors", "p50 ms", "p90 ms", "p99 ms", "added p50",
                "added p90", "added p99"), rows), "",
        f"**CPU per streamed chunk**: a prompt of {cpu['prompt_words']} words "
        f"({cpu['deltas_per_stream']} text deltas a stream), {cpu['rounds']} rounds of "
        f"{cpu['streams_per_round']} streams per task type, {cpu['concurrency']} at a time; "
        f"/proc's CPU time in {cpu['clock_ticks_per_second']} ticks/s.", "",
        *table(("task type", "streams", "errors", "text chunks", "gateway CPU",
                "per chunk", "per stream", "per chunk, each round"),
               ((TARGETS[n][4:], f"{s['streams']:,}", s["errors"],
                 f"{s['chunks']:,}" + ("" if s["chunks_as_expected"] else " (not as expected)"),
                 f"{s['gateway_cpu_s']:.2f} s",
                 f"{s['gateway_cpu_us_per_chunk']:.2f} µs",
                 f"{s['gateway_cpu_ms_per_stream']:.3f} ms",
                 ", ".join(f"{x:g}" for x in s["gateway_cpu_us_per_chunk_rounds"]) + " µs")
                for n, s in (("completion", comp), ("chat", chat)))), "",
        *table(("target (goals we set)", "goal", "measured", ""), [
            ("chat adds to first chunk vs completion, p50", f"≤ {ADDED_P50_GOAL_MS} ms",
             f"{cc['p50']:+.3f} ms (the median of the {len(per_round)} rounds' differences "
             f"{cc['p50_median']:+.3f} ms, from {min(per_round):+.3f} to "
             f"{max(per_round):+.3f})", mark(cc["p50"] <= ADDED_P50_GOAL_MS)),
            ("gateway CPU per streamed chunk, chat / completion", f"≤ {CPU_RATIO_GOAL}x",
             f"{ratio or float('nan'):.2f}x ({chat['gateway_cpu_us_per_chunk']:.2f} / "
             f"{comp['gateway_cpu_us_per_chunk']:.2f} µs; rounds {min(ratio_rounds):.2f}x to "
             f"{max(ratio_rounds):.2f}x)", mark(ratio is not None and ratio <= CPU_RATIO_GOAL))])]
    return "\n".join(lines)


def invalid(args: argparse.Namespace) -> str | None:
    ok = args.rounds >= 1 and args.ttfc_requests >= args.rounds and args.cpu_streams >= 1 \
        and args.concurrency >= 1
    return None if ok else "every target needs at least one stream per round"


def run(args: argparse.Namespace) -> dict[str, Any]:
    with harness.loopback_stack(emulator=("--token-latency", f"{args.token_latency:g}")
                                ) as stack:
        result = asyncio.run(phases(args, stack))
        if not stack.services["gateway"].running():
            raise RuntimeError("the gateway exited\n" + stack.services["gateway"].log_tail())
    errors = sum(t["errors"] for t in result["first_chunk"]["targets"].values()) + sum(
        t["errors"] for t in result["cpu"]["task_types"].values())
    return {**result, "failed": errors > 0}


async def phases(args: argparse.Namespace, stack: Stack) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        for task_type, inference_id in (("completion", COMPLETION_ID),
                                        ("chat_completion", CHAT_ID)):
            await harness.put_endpoint(session, stack, inference_id, model=MODEL,
                                       max_tokens=MAX_TOKENS, rpm=10_000_000,
                                       task_type=task_type)
    step(f"1. time to first chunk: {args.ttfc_requests} sequential streams per target, "
         f"{args.rounds} rounds")
    first = await first_chunk(args, stack)
    step(f"2. CPU per streamed chunk: {args.rounds} rounds of {args.cpu_streams} streams per "
         f"task type, {args.concurrency} at a time")
    return {"first_chunk": first, "cpu": await cpu_per_chunk(args, stack)}


if __name__ == "__main__":
    sys.exit(harness.main(sys.modules[__name__]))
