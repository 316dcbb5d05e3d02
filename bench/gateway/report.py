"""The gateway benchmark's verdicts, its section of docs/benchmarks.md and the PNG charts
beside its JSON."""

from __future__ import annotations

import math
from pathlib import Path
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
    if (batched := _get(r, "first_delta", "batched")) is not None:
        gaps = r["first_delta"]["delta_gaps_ms"] or [0]
        out.append(("streaming: deltas never batched", "every delta alone",
                    f"{len(gaps) + 1} deltas, gaps {min(gaps):.1f} to {max(gaps):.1f} ms "
                    "(upstream: 20 ms)", not batched))
    mem = r.get("memory", {})
    if (idle := mem.get("gateway_idle_100_endpoints_mib")) is not None:
        out.append(("memory idle, 100 endpoints", "<= 80 MiB", f"{idle:.0f} MiB", idle <= 80))
    if (peak := mem.get("gateway_peak_streams_mib")) is not None:
        streams, opened = mem["streams"], mem["streams_opened"]
        out.append((f"memory with {streams} open streams", "<= 200 MiB",
                    f"{peak:.0f} MiB peak ({opened} of {streams} open at once)",
                    peak <= 200 and opened == streams and streams >= 1000))
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
                  "median (LiteLLM once, after them).", "", *_rounds(d, "streams")]
    if mem := r.get("memory"):
        rows = [("gateway just started", mem.get("gateway_started_mib")),
                ("gateway idle, 100 endpoints", mem.get("gateway_idle_100_endpoints_mib")),
                (f"gateway, {mem.get('streams')} streams open (all open / peak)",
                 f"{_ms(mem.get('gateway_all_streams_open_mib'))} / "
                 f"{_ms(mem.get('gateway_peak_streams_mib'))}"),
                ("gateway after the streams", mem.get("gateway_after_streams_mib"))]
        if "litellm_idle_mib" in mem:
            rows += [("LiteLLM idle (1 worker)", mem["litellm_idle_mib"]),
                     ("LiteLLM after its load", mem.get("litellm_after_load_mib"))]
        lines += [*table(("memory (RSS)", "MiB"),
                         ((n, v if isinstance(v, str) else _ms(v)) for n, v in rows)), ""]
    if c := r.get("client_cost"):
        imp = c["imports"]
        labels = {"sdk_aiohttp": "anthropic SDK, aiohttp transport",
                  "gateway_client": "the gateway's client (aiohttp + orjson)",
                  "bare_aiohttp": "bare aiohttp + json",
                  "socket_floor": "floor: one socket, no HTTP library"}
        lines += ["One upstream call from Python, one at a time against the emulator "
                  f"({c['rounds']}x{c['requests_per_round']} calls each, alternated):", "",
                  *table(("client", "CPU ms per call", "wall ms per call"),
                         ((label, _ms(c[n]["cpu_ms_per_call"]), _ms(c[n]["wall_ms_per_call"]))
                          for n, label in labels.items())), "",
                  f"Importing the gateway's modules: {imp['gateway_modules_mib']} MiB RSS, "
                  f"{imp['gateway_import_s']} s; `import anthropic` on top: "
                  f"+{imp['anthropic_extra_mib']} MiB, {imp['anthropic_import_s']} s.", ""]
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
    charts = _charts(r, Path(r["run"]["args"]["out"]) / "benchmarks")
    return "\n".join(lines + [f"![{name}](benchmarks/{name})" for name in charts])


def _charts(r: dict[str, Any], folder: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        step("matplotlib is missing (pip install -e '.[bench]'): no charts")
        return []
    folder.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    colors = {"emulator": "#888888", "gateway": "#1f77b4", "litellm": "#d62728"}

    def chart(name: str, title: str, ylabel: str, draw: Any, log: str = "") -> None:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        draw(ax)
        if log:
            getattr(ax, f"set_{log}scale")("log")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        fig.tight_layout()
        fig.savefig(folder / f"gateway-{name}.png", dpi=90)
        plt.close(fig)
        written.append(f"gateway-{name}.png")

    def bars(ax: Any, names: list[str], values: list[float], fmt: str, **kw: Any) -> None:
        ax.bar_label(ax.bar(names, values, **kw), fmt=fmt)

    if t := r.get("throughput"):
        names = [n for n in TARGETS if n in t]
        chart("throughput", f"Throughput at concurrency {t['concurrency']}",
              "requests/s (log)", lambda ax: bars(ax, names, [t[n]["rps"] for n in names],
                                                  "%.0f", color=[colors[n] for n in names]),
              "y")
    if f := r.get("fixed_rate"):
        def cdf(ax: Any) -> None:
            for name, values in f["latencies_ms"].items():
                ax.plot(values, [i / len(values) for i in range(len(values))], label=name,
                        color=colors[name])
            ax.set_xlabel("latency ms (log)")
            ax.legend()

        chart("latency", f"Latency at a fixed {f['rate']:.0f} requests/s",
              "fraction of requests", cdf, "x")
    if d := r.get("first_delta"):
        names = [n for n in TARGETS if n in d]

        def pair(ax: Any) -> None:
            for offset, p in ((-0.2, "p50_ms"), (0.2, "p99_ms")):
                bars(ax, [i + offset for i in range(len(names))], [d[n][p] for n in names],
                     "%.1f", width=0.4, alpha=1.0 if p == "p50_ms" else 0.5,
                     color=[colors[n] for n in names])
            ax.set_xticks(range(len(names)), names)

        chart("first-delta", "Streaming: time to first delta (p50 solid, p99 light)",
              "ms to the first delta (log)", pair, "y")
    if mem := r.get("memory"):
        items = [(label, mem.get(key), goal, colors[c]) for label, key, goal, c in (
            ("gateway idle\n100 endpoints", "gateway_idle_100_endpoints_mib", 80, "gateway"),
            (f"gateway\n{mem.get('streams')} streams", "gateway_peak_streams_mib", 200,
             "gateway"),
            ("LiteLLM idle", "litellm_idle_mib", None, "litellm")) if mem.get(key) is not None]

        def memory(ax: Any) -> None:
            bars(ax, [i[0] for i in items], [i[1] for i in items], "%.0f",
                 color=[i[3] for i in items])
            for index, item in enumerate(items):
                if item[2]:
                    ax.hlines(item[2], index - 0.4, index + 0.4, colors="black",
                              linestyles="--")

        chart("memory", "Memory", "RSS MiB (dashed: target)", memory)
    if (rl := r.get("rate_limit")) and (arrivals := rl.get("arrivals_s")):
        def admitted(ax: Any) -> None:
            ax.step(arrivals, range(1, len(arrivals) + 1), where="post",
                    label="admitted upstream", color=colors["gateway"])
            ax.plot([0, arrivals[-1]], [1, 1 + arrivals[-1] * rl["rpm"] / 60], "k--", lw=0.8,
                    label=f"{rl['rpm']} rpm exactly")
            ax.set_xlabel("seconds")
            ax.legend()

        chart("rate-limit", f"Rate limit {rl['rpm']} rpm: {rl['admitted_rpm']:.2f} rpm "
              "admitted", "requests admitted", admitted)
    return written
