"""Chat completion streaming benchmark: what ``task_type: chat_completion`` costs per
streamed chunk against ``completion`` streaming, side by side in one run, with the
emulator hit directly as the floor.

One emulator process (``--token-latency``: seconds between its text deltas, so each delta
reaches the gateway in a read of its own), one gateway process (the
admin listener with a token file), two endpoints on it with the same model and
settings: ``bench-completion`` (``PUT /_inference/completion/...``) and ``bench-chat``
(``PUT /_inference/chat_completion/...``).

1. time to first chunk: sequential streams on one keep-alive connection per target, a
   short prompt (about 10 deltas a stream), alternated rounds (the order of the three
   targets rotated each round): the time from sending to the arrival of the first chunk
   holding text of
   (a) the emulator directly: its first ``content_block_delta``;
   (b) ``POST /_inference/completion/{id}/_stream``: the first ``"delta"`` event;
   (c) ``POST /_inference/chat_completion/{id}/_stream``: the first chunk with
       ``"content"`` (the role chunk before it does not count);
2. CPU per streamed chunk: a long prompt (about 100 deltas a stream), ``--cpu-streams``
   streams per task type and round, ``--concurrency`` at a time, alternated rounds; the
   gateway process's CPU time (utime + stime, /proc) before and after each batch, divided
   by the text chunks the client received (chat's role and usage chunks and ``[DONE]``
   are not in the divisor, so chat is not flattered by them).

Writes docs/benchmarks/chat.json and the chat section of docs/benchmarks.md.

    .venv/bin/python bench/run.py --only chat [--quick]
    .venv/bin/python bench/chat/run.py [--rounds 10] [--ttfc-requests 300] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

BENCH = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(BENCH / "gateway"))  # loadgen.py
sys.path.insert(0, str(BENCH))  # common.py, fleet/
import loadgen  # noqa: E402
from common import percentile, save_results, splice_section  # noqa: E402
from fleet.run import START_SECONDS, machine, step  # noqa: E402
from loadgen import Sample, Target  # noqa: E402

from inference_operator.devstack.processes import Service, Stack  # noqa: E402
from inference_operator.emulator.wire import GREETING, tokens  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "bench-admin-token"
MODEL = "claude-bench-chat"
MAX_TOKENS = 256  # above both prompts' replies: every stream ends with end_turn
UNLIMITED_RPM = 10_000_000
COMPLETION_ID, CHAT_ID = "bench-completion", "bench-chat"
SHORT_PROMPT = "What is Elastic?"
# The emulator answers "<GREETING> <prompt>" one word-sized delta at a time.
LONG_PROMPT = " ".join(f"word{n}" for n in range(92))
TARGETS = {"emulator": "(a) the emulator directly",
           "completion": "(b) completion `_stream`",
           "chat": "(c) chat_completion `_stream`"}
# What marks a text chunk in each target's stream.
MARKERS = {"emulator": b"event: content_block_delta", "completion": b'"delta"',
           "chat": b'"content"'}


def expected_deltas(prompt: str) -> int:
    return len(tokens(f"{GREETING} {prompt}"))


def targets(stack: Stack, prompt: str) -> dict[str, Target]:
    emulator = Target(
        "emulator", stack.emulator_url + "/v1/messages",
        {"model": MODEL, "max_tokens": MAX_TOKENS,
         "messages": [{"role": "user", "content": prompt}]},
        {"x-api-key": "bench-key-chat", "anthropic-version": "2023-06-01"},
        MARKERS["emulator"])
    completion = f"{stack.gateway_url}/_inference/completion/{COMPLETION_ID}"
    chat = f"{stack.gateway_url}/_inference/chat_completion/{CHAT_ID}"
    return {
        "emulator": emulator,
        "completion": Target("completion", completion, {"input": prompt}, {},
                             MARKERS["completion"], stream_url=completion + "/_stream"),
        "chat": Target("chat", chat, {"messages": [{"role": "user", "content": prompt}]}, {},
                       MARKERS["chat"], stream_url=chat + "/_stream"),
    }


async def put_endpoints(session: aiohttp.ClientSession, stack: Stack) -> None:
    """The two endpoints, one body: same key, model, limit and max_tokens."""
    body = {"service": "anthropic",
            "service_settings": {"api_key": "bench-key-chat", "model_id": MODEL,
                                 "rate_limit": {"requests_per_minute": UNLIMITED_RPM}},
            "task_settings": {"max_tokens": MAX_TOKENS}}
    for task_type, inference_id in (("completion", COMPLETION_ID),
                                    ("chat_completion", CHAT_ID)):
        async with session.put(f"{stack.admin_url}/_inference/{task_type}/{inference_id}",
                               headers={"Authorization": f"Bearer {TOKEN}"},
                               json=body) as response:
            if response.status != 200:
                raise RuntimeError(f"PUT {task_type}/{inference_id}: {response.status} "
                                   f"{await response.text()}")


# -- 1. time to first chunk ----------------------------------------------------------------


def summary(sample: Sample) -> dict[str, Any]:
    ms = [x * 1000 for x in sample.latencies]
    return {"streams": len(ms) + sample.errors, "ok": len(ms), "errors": sample.errors,
            **{f"p{q}_ms": round(percentile(ms, q / 100), 3) for q in (50, 90, 99)},
            "mean_ms": round(statistics.fmean(ms), 3) if ms else None,
            "min_ms": round(min(ms), 3) if ms else None,
            "max_ms": round(max(ms), 3) if ms else None}


async def first_chunk(args: argparse.Namespace, stack: Stack) -> dict[str, Any]:
    short = targets(stack, SHORT_PROMPT)
    timeout = aiohttp.ClientTimeout(total=args.time_limit + 30)
    sessions = {name: aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1),
                                            timeout=timeout) for name in short}
    try:
        for name, target in short.items():  # connections opened, code paths warm
            warm = await loadgen.time_to_first_delta(sessions[name], target,
                                                     requests=args.warmup,
                                                     time_limit=args.time_limit)
            if not warm.latencies:
                raise RuntimeError(f"{name}: no stream with a text chunk\n"
                                   + stack.log_tails())
        rounds: dict[str, list[Sample]] = {name: [] for name in short}
        orders = list(itertools.permutations(short))
        per_round = max(1, args.ttfc_requests // args.rounds)
        limit = args.time_limit / args.rounds
        for number in range(args.rounds):
            order = orders[number % len(orders)]
            for name in order:
                rounds[name].append(await loadgen.time_to_first_delta(
                    sessions[name], short[name], requests=per_round, time_limit=limit))
            step(f"  round {number + 1}/{args.rounds} ({', '.join(order)}): p50 "
                 + ", ".join(f"{n} {rounds[n][-1].percentile(50) * 1000:.3f} ms"
                             for n in short))
    finally:
        for session in sessions.values():
            await session.close()
    merged = {name: loadgen.merged(samples) for name, samples in rounds.items()}
    result: dict[str, Any] = {
        "prompt": SHORT_PROMPT, "deltas_per_stream": expected_deltas(SHORT_PROMPT),
        "rounds": args.rounds, "per_round": per_round, "warmup_streams": args.warmup,
        "orders": [list(orders[n % len(orders)]) for n in range(args.rounds)],
        "targets": {name: summary(sample) for name, sample in merged.items()},
    }
    tgt = result["targets"]

    def diff(a: str, b: str) -> dict[str, float]:
        return {f"p{q}": round(tgt[a][f"p{q}_ms"] - tgt[b][f"p{q}_ms"], 3)
                for q in (50, 90, 99)}

    result["added_ms"] = {"completion": diff("completion", "emulator"),
                          "chat": diff("chat", "emulator"),
                          "chat_vs_completion": diff("chat", "completion")}
    per_round_diffs = [round((c.percentile(50) - p.percentile(50)) * 1000, 3)
                       for c, p in zip(rounds["chat"], rounds["completion"], strict=True)]
    result["chat_vs_completion_p50_per_round_ms"] = per_round_diffs
    result["chat_vs_completion_p50_round_median_ms"] = round(
        statistics.median(per_round_diffs), 3)
    for name in short:
        s = tgt[name]
        step(f"  {name}: {s['ok']} ok, {s['errors']} errors; p50 {s['p50_ms']:.3f} ms, "
             f"p90 {s['p90_ms']:.3f} ms, p99 {s['p99_ms']:.3f} ms")
    step(f"  added: completion {result['added_ms']['completion']}, chat "
         f"{result['added_ms']['chat']}, chat - completion "
         f"{result['added_ms']['chat_vs_completion']}")
    return result


# -- 2. CPU per streamed chunk ---------------------------------------------------------------


async def stream_batch(session: aiohttp.ClientSession, target: Target, *, streams: int,
                       concurrency: int, time_limit: float) -> dict[str, int]:
    """``streams`` streams read to their end, ``concurrency`` at a time; the text chunks
    and SSE events the client received, and the streams that failed."""
    url, payload = target.stream_request()
    headers = target.request_headers()
    counts = {"streams": 0, "errors": 0, "chunks": 0, "events": 0}
    issued = 0
    stop_at = time.monotonic() + time_limit

    async def worker() -> None:
        nonlocal issued
        while issued < streams and time.monotonic() < stop_at:
            issued += 1
            try:
                async with session.post(url, data=payload, headers=headers) as response:
                    body = await response.read()
                    ok = response.status == 200
            except aiohttp.ClientError:
                ok, body = False, b""
            counts["streams" if ok else "errors"] += 1
            if ok:
                counts["chunks"] += body.count(target.delta_marker)
                counts["events"] += body.count(b"\n\n")

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return counts


async def cpu_per_chunk(args: argparse.Namespace, stack: Stack) -> dict[str, Any]:
    long = targets(stack, LONG_PROMPT)
    names = ("completion", "chat")
    gateway, emulator = stack.services["gateway"], stack.services["emulator"]
    per_stream = expected_deltas(LONG_PROMPT)
    totals = {name: {"streams": 0, "errors": 0, "chunks": 0, "events": 0,
                     "gateway_cpu_s": 0.0, "emulator_cpu_s": 0.0, "seconds": 0.0}
              for name in names}
    round_us: dict[str, list[float]] = {name: [] for name in names}
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    timeout = aiohttp.ClientTimeout(total=args.time_limit + 30)
    limit = args.time_limit / args.rounds  # per batch: far above what one takes
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        for name in names:  # warm-up, not measured
            await stream_batch(session, long[name], streams=args.concurrency,
                               concurrency=args.concurrency, time_limit=args.time_limit)
        for number in range(args.rounds):
            order = names if number % 2 == 0 else names[::-1]
            for name in order:
                before = gateway.cpu_seconds(), emulator.cpu_seconds(), time.perf_counter()
                counts = await stream_batch(session, long[name], streams=args.cpu_streams,
                                            concurrency=args.concurrency, time_limit=limit)
                cpu = gateway.cpu_seconds() - before[0]
                total = totals[name]
                total["gateway_cpu_s"] += cpu
                total["emulator_cpu_s"] += emulator.cpu_seconds() - before[1]
                total["seconds"] += time.perf_counter() - before[2]
                for key, value in counts.items():
                    total[key] += value
                if counts["chunks"]:
                    round_us[name].append(round(cpu / counts["chunks"] * 1e6, 2))
            step(f"  round {number + 1}/{args.rounds} ({', '.join(order)}): gateway CPU per "
                 "chunk " + ", ".join(f"{n} {round_us[n][-1] if round_us[n] else '-'} µs"
                                      for n in names))
    result: dict[str, Any] = {
        "prompt_words": len(LONG_PROMPT.split()), "deltas_per_stream": per_stream,
        "rounds": args.rounds, "streams_per_round": args.cpu_streams,
        "concurrency": args.concurrency, "token_latency_s": args.token_latency,
        "clock_ticks_per_second": os.sysconf("SC_CLK_TCK"), "task_types": {}}
    for name in names:
        t = totals[name]
        chunks = t["chunks"]
        result["task_types"][name] = {
            "streams": t["streams"], "errors": t["errors"], "chunks": chunks,
            "events": t["events"], "chunks_as_expected": chunks == t["streams"] * per_stream,
            "seconds": round(t["seconds"], 3),
            "gateway_cpu_s": round(t["gateway_cpu_s"], 3),
            "gateway_cpu_us_per_chunk": round(t["gateway_cpu_s"] / chunks * 1e6, 2)
            if chunks else None,
            "gateway_cpu_us_per_chunk_rounds": round_us[name],
            "gateway_cpu_ms_per_stream": round(t["gateway_cpu_s"] / t["streams"] * 1e3, 3)
            if t["streams"] else None,
            "emulator_cpu_us_per_chunk": round(t["emulator_cpu_s"] / chunks * 1e6, 2)
            if chunks else None,
        }
    tt = result["task_types"]
    a, b = tt["chat"]["gateway_cpu_us_per_chunk"], tt["completion"]["gateway_cpu_us_per_chunk"]
    result["ratio_chat_to_completion"] = round(a / b, 3) if a and b else None
    ratios = [x / y for x, y in zip(round_us["chat"], round_us["completion"], strict=False)
              if y]
    result["ratio_rounds"] = [round(r, 3) for r in ratios]
    for name in names:
        s = tt[name]
        step(f"  {name}: {s['streams']} streams, {s['errors']} errors, {s['chunks']} chunks; "
             f"gateway CPU {s['gateway_cpu_s']:.2f} s, {s['gateway_cpu_us_per_chunk']} µs "
             f"per chunk")
    step(f"  chat / completion: {result['ratio_chat_to_completion']}x")
    return result


# -- the report ----------------------------------------------------------------------------

START = "<!-- chat-bench:start (generated by bench/chat/run.py) -->"
END = "<!-- chat-bench:end -->"
ADDED_P50_GOAL_MS = 0.2
CPU_RATIO_GOAL = 1.5


def mark(ok: bool) -> str:
    return "met" if ok else "**not met**"


def section(result: dict[str, Any]) -> str:
    run, first, cpu = result["run"], result["first_chunk"], result["cpu"]
    info = run["machine"]
    tgt, added = first["targets"], first["added_ms"]
    lines = [
        f"`{run['command']}` on {info['cpu']} ({info['nproc']} cores, `nproc`), "
        f"{info['memory_gib']} GiB, Python {info['python']}, {run['date']}; load average "
        f"{info['load_average_start'][0]:.1f} at the start, "
        f"{info['load_average_end'][0]:.1f} at the end; {run['duration_seconds']} s.",
        "",
        f"**Time to first chunk**: one emulator (`--token-latency "
        f"{result['token_latency_s']:g}`), one gateway with a completion and a "
        f"chat_completion endpoint (same model, key and `max_tokens`), sequential streams on "
        f"one keep-alive connection per target, measured in the bench's aiohttp client; the "
        f"prompt `{first['prompt']}` ({first['deltas_per_stream']} text deltas a stream); "
        f"{first['rounds']} rounds of {first['per_round']} streams per target, the order "
        f"rotated each round; {first['warmup_streams']} warm-up streams each not counted.",
        "",
        "| target | streams | errors | p50 ms | p90 ms | p99 ms | added p50 | added p90 "
        "| added p99 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, label in TARGETS.items():
        s = tgt[name]
        more = (["", "", ""] if name == "emulator" else
                [f"{added[name][f'p{q}']:+.3f} ms" for q in (50, 90, 99)])
        lines.append(f"| {label} | {s['streams']} | {s['errors']} | {s['p50_ms']:.3f} | "
                     f"{s['p90_ms']:.3f} | {s['p99_ms']:.3f} | " + " | ".join(more) + " |")
    cc = added["chat_vs_completion"]
    lines.append(f"| (c) minus (b) | | | | | | {cc['p50']:+.3f} ms | {cc['p90']:+.3f} ms | "
                 f"{cc['p99']:+.3f} ms |")
    tt = cpu["task_types"]
    comp, chat = tt["completion"], tt["chat"]
    lines += [
        "",
        f"**CPU per streamed chunk**: the prompt of {cpu['prompt_words']} words "
        f"({cpu['deltas_per_stream']} text deltas a stream), {cpu['rounds']} rounds of "
        f"{cpu['streams_per_round']} streams per task type, {cpu['concurrency']} at a time, "
        f"the order alternated each round; the gateway process's CPU time (utime + stime, "
        f"{cpu['clock_ticks_per_second']} ticks/s) around each batch over the text chunks "
        f"the client received.",
        "",
        "| task type | streams | errors | text chunks | SSE events | gateway CPU | per chunk "
        "| per stream | per chunk, each round | emulator per chunk |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in ("completion", "chat"):
        s = tt[name]
        rounds = ", ".join(f"{x:g}" for x in s["gateway_cpu_us_per_chunk_rounds"])
        lines.append(
            f"| {TARGETS[name][4:]} | {s['streams']:,} | {s['errors']} | {s['chunks']:,}"
            f"{'' if s['chunks_as_expected'] else ' (not as expected)'} | {s['events']:,} | "
            f"{s['gateway_cpu_s']:.2f} s | {s['gateway_cpu_us_per_chunk']:.2f} µs | "
            f"{s['gateway_cpu_ms_per_stream']:.3f} ms | {rounds} µs | "
            f"{s['emulator_cpu_us_per_chunk']:.2f} µs |")
    ratio = cpu["ratio_chat_to_completion"]
    ratio_rounds = cpu["ratio_rounds"]
    per_round = first["chat_vs_completion_p50_per_round_ms"]
    lines += [
        "",
        "| target (goals we set) | goal | measured | |",
        "| --- | --- | --- | --- |",
        f"| chat adds to first chunk vs completion, p50 | ≤ {ADDED_P50_GOAL_MS} ms | "
        f"{cc['p50']:+.3f} ms (the median of the {len(per_round)} rounds' differences "
        f"{first['chat_vs_completion_p50_round_median_ms']:+.3f} ms, from "
        f"{min(per_round):+.3f} to {max(per_round):+.3f}) | "
        f"{mark(cc['p50'] <= ADDED_P50_GOAL_MS)} |",
        f"| gateway CPU per streamed chunk, chat / completion | ≤ {CPU_RATIO_GOAL}x | "
        f"{ratio:.2f}x ({chat['gateway_cpu_us_per_chunk']:.2f} / "
        f"{comp['gateway_cpu_us_per_chunk']:.2f} µs; rounds "
        f"{min(ratio_rounds):.2f}x to {max(ratio_rounds):.2f}x) | "
        f"{mark(ratio is not None and ratio <= CPU_RATIO_GOAL)} |",
        f"| completion and chat add to first chunk over the emulator, p50 | reported | "
        f"{added['completion']['p50']:+.3f} / {added['chat']['p50']:+.3f} ms | reported |",
    ]
    return "\n".join(lines)


def write_report(path: Path, result: dict[str, Any]) -> None:
    splice_section(path, START, END, f"{START}\n{section(result)}\n{END}",
                   "Chat completion streaming")


# -- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10,
                        help="alternated rounds of each phase (the streams split among them)")
    parser.add_argument("--ttfc-requests", type=int, default=300,
                        help="sequential streams per target for the time to first chunk")
    parser.add_argument("--warmup", type=int, default=20,
                        help="uncounted streams per target first")
    parser.add_argument("--cpu-streams", type=int, default=100,
                        help="streams per task type and round of the CPU phase")
    parser.add_argument("--concurrency", type=int, default=10,
                        help="streams at a time in the CPU phase")
    parser.add_argument("--token-latency", type=float, default=0.002,
                        help="the emulator's seconds between text deltas")
    parser.add_argument("--time-limit", type=float, default=60.0,
                        help="seconds per phase and target at most (a round gets its share)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 2 rounds, 30 streams per target, 10 per CPU "
                             "batch; results not written to docs/")
    parser.add_argument("--out", type=Path, default=ROOT / "docs",
                        help="where benchmarks.md lives (the JSON goes to its benchmarks/)")
    parser.add_argument("--command", help=argparse.SUPPRESS)  # as bench/run.py was called
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.ttfc_requests, args.warmup, args.cpu_streams = 2, 30, 5, 10
        args.time_limit = 10.0
        args.out = Path(tempfile.mkdtemp(prefix="chat-bench-quick-"))
    if args.rounds < 1 or args.ttfc_requests < args.rounds or args.cpu_streams < 1 \
            or args.concurrency < 1:
        parser.error("every target needs at least one stream per round")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    given = sys.argv[1:] if argv is None else argv
    command = args.command or " ".join(["bench/chat/run.py", *given])
    began, info = datetime.now(UTC), machine()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds: processes stopped
    work = Path(tempfile.mkdtemp(prefix="bench-chat-"))
    stack = Stack(work, api_keys=(), admin_token=TOKEN)  # the emulator takes any key
    step(f"emulator (--token-latency {args.token_latency:g}) and gateway; logs in {work}")
    try:
        stack.start(stack.emulator("--log-level", "warning", "--token-latency",
                                   f"{args.token_latency:g}"), START_SECONDS)
        gateway: Service = stack.start(
            stack.gateway("--log-level", "warning"), START_SECONDS)
        result = asyncio.run(phases(args, stack))
        if not gateway.running():
            raise RuntimeError("the gateway exited\n" + gateway.log_tail())
    finally:
        stack.stop()
    info["load_average_end"] = os.getloadavg()
    output = save_results(args, "chat", command, began, info,
                          {"token_latency_s": args.token_latency, **result}, write_report)
    step(f"results: {output}, {args.out / 'benchmarks.md'}")
    errors = sum(t["errors"] for t in result["first_chunk"]["targets"].values()) + sum(
        t["errors"] for t in result["cpu"]["task_types"].values())
    return 0 if errors == 0 else 1


async def phases(args: argparse.Namespace, stack: Stack) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        await put_endpoints(session, stack)
    step(f"1. time to first chunk: {args.ttfc_requests} sequential streams per target, "
         f"{args.rounds} rounds")
    first = await first_chunk(args, stack)
    step(f"2. CPU per streamed chunk: {args.rounds} rounds of {args.cpu_streams} streams per "
         f"task type, {args.concurrency} at a time")
    cpu = await cpu_per_chunk(args, stack)
    return {"first_chunk": first, "cpu": cpu}


if __name__ == "__main__":
    sys.exit(main())
