"""The gateway benchmark's verdicts and its section of docs/benchmarks.md."""

from __future__ import annotations

import math
from typing import Any

from bench.harness import machine_line, mark, step, table

TARGETS = ("emulator", "gateway", "litellm")


def _get(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


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
    out: list[tuple[str, str, str, bool | None]] = []
    emu, gw, ll = (_get(r, "throughput", name, "rps") for name in TARGETS)
    if gw and ll:
        out.append(("throughput vs LiteLLM (1 worker)", ">= 20x",
                    f"{gw / ll:.1f}x ({gw:.0f} vs {ll:.1f} req/s)", gw / ll >= 20))
    else:
        why = _get(r, "litellm", "unavailable") or _get(r, "litellm", "skipped") or "no data"
        out.append(("throughput vs LiteLLM (1 worker)", ">= 20x", f"not run: {why}", None))
    if gw and emu:
        out.append(("throughput vs emulator direct", ">= 0.25x",
                    f"{gw / emu:.2f}x ({gw:.0f} vs {emu:.0f} req/s)", gw / emu >= 0.25))
    if added := _get(r, "fixed_rate", "added_ms"):
        for p, goal in (("p50", 1.0), ("p99", 5.0)):
            out.append((f"added latency {p} at {r['fixed_rate']['rate']:.0f} req/s",
                        f"<= {goal:g} ms", _of_rounds(added, p), added[f"{p}_median"] <= goal))
    if added := _get(r, "first_delta", "added_ms"):
        out.append(("streaming: time to first delta added (p50)", "<= 2 ms",
                    _of_rounds(added, "p50"), added["p50_median"] <= 2.0))
    mem = r.get("memory", {})
    if (idle := mem.get("gateway_idle_100_endpoints_mib")) is not None:
        out.append(("memory idle, 100 endpoints", "<= 80 MiB", f"{idle:.0f} MiB", idle <= 80))
    if (error := _get(r, "rate_limit", "error_percent")) is not None:
        window = r["rate_limit"]["window_seconds"]
        note = "" if window >= 60 else "; the target is over 60 s: `--rate-window 60`"
        out.append(("rate limit admitted at 600 rpm", "within 1 % over 60 s",
                    f"{r['rate_limit']['admitted_rpm']:.2f} rpm ({error:+.2f} %) over "
                    f"{window:g} s{note}", abs(error) <= 1.0 if window >= 60 else None))
    return out


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
    if t := r.get("throughput"):
        lines += [f"Throughput: {t['concurrency']} concurrent clients, "
                  f"{t['requests_per_round']} requests per round, rounds alternated; gateway "
                  f"CPU {_ms(t.get('gateway_cpu_ms_per_request'))} ms per request.", "",
                  *table(("target", "requests", "errors", "req/s", "p50 ms", "p99 ms",
                          "load-tool CPU"),
                         ((n, s["requests"], s["errors"], f"{s['rps']:.0f}", _ms(s["p50_ms"]),
                           _ms(s["p99_ms"]), f"{s['client_cpu_share']:.0%}")
                          for n in TARGETS if (s := t.get(n)))), ""]
    if f := r.get("fixed_rate"):
        lines += [f"Fixed rate: {f['rate']:.0f} requests/s, {len(f['rounds'])} rounds of "
                  f"{f['seconds_per_round']:g} s per target, alternated (emulator, gateway, "
                  "emulator, …); latency from the scheduled send time. The verdicts are on "
                  "the median of the rounds.", "", *_rounds(f, "requests")]
    if d := r.get("first_delta"):
        lines += ["Streaming, one stream at a time: time until the first text delta arrives; "
                  f"{len(d['rounds'])} rounds per target, alternated, the verdict on their "
                  "median.", "", *_rounds(d, "streams")]
    if mem := r.get("memory"):
        rows = [("gateway just started", mem.get("gateway_started_mib")),
                ("gateway idle, 100 endpoints", mem.get("gateway_idle_100_endpoints_mib"))]
        if "litellm_idle_mib" in mem:
            rows += [("LiteLLM idle (1 worker)", mem["litellm_idle_mib"]),
                     ("LiteLLM after its load", mem.get("litellm_after_load_mib"))]
        lines += [*table(("memory (RSS)", "MiB"),
                         ((n, _ms(v)) for n, v in rows)), ""]
    if c := r.get("client_cost"):
        labels = {"sdk_aiohttp": "anthropic SDK, aiohttp transport",
                  "gateway_client": "the gateway's client (aiohttp + orjson)",
                  "bare_aiohttp": "bare aiohttp + json"}
        lines += ["One upstream call from Python, one at a time against the emulator "
                  f"({c['rounds']}x{c['requests_per_round']} calls each, alternated):", "",
                  *table(("client", "CPU ms per call", "wall ms per call"),
                         ((label, _ms(c[n]["cpu_ms_per_call"]), _ms(c[n]["wall_ms_per_call"]))
                          for n, label in labels.items())), ""]
    if rl := r.get("rate_limit"):
        lines += [f"Rate limit: {rl['requests']} requests at once to a 600 rpm endpoint; "
                  f"{rl['admitted']} reached the emulator over {rl['span_seconds']} s "
                  f"({_ms(rl['admitted_rpm'])} rpm); {rl['errors']} errors.", ""]
    lil = r.get("litellm", {})
    if lil.get("version"):
        lines += [f"LiteLLM {lil['version']} (`{lil['spec']}`), one worker, "
                  f"`/v1/chat/completions`, default settings (its access log on), started in "
                  f"{lil.get('startup_seconds')} s.", ""]
    elif lil:
        lines += [f"LiteLLM: {lil.get('unavailable') or lil.get('skipped')}.", ""]
    return "\n".join(lines)
