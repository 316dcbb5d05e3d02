"""``--profile``: py-spy on the gateway process while it is under load, and the functions
that took the most of its samples (own time and including callees)."""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inference_devkit.devstack.processes import Service

SECONDS = 6
TOP = 25


@dataclass
class Recording:
    spy: Service | None
    out: Path
    error: str | None = None

    def finish(self) -> dict[str, Any]:
        if self.spy is None:
            return {"error": self.error}
        assert self.spy.popen is not None
        try:
            returncode = self.spy.popen.wait(SECONDS + 30)
        except subprocess.TimeoutExpired:
            self.spy.kill()
            return {"error": "py-spy did not finish"}
        if returncode != 0 or not self.out.exists():
            return {"error": f"py-spy failed: {self.spy.log_text().strip()[-300:]}"}
        return {"raw_stacks": str(self.out), **summarise(self.out)}


def start(pid: int, out: Path) -> Recording:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        return Recording(None, out, "py-spy is not installed (pip install -e '.[bench]')")
    log = out.with_name(out.name + ".log")
    log.unlink(missing_ok=True)
    recorder = Service("py-spy", ["record", "--pid", str(pid), "--duration", str(SECONDS),
                                  "--rate", "250", "--format", "raw", "--output", str(out),
                                  "--nonblocking"], log, program=(spy,))
    return Recording(recorder.start(), out)


# Own time by where it is spent, first match of the innermost frame's file wins.
_COMPONENTS = (
    ("idle (waiting for I/O)", ("selectors.py", "concurrent/futures/thread.py")),
    ("anthropic SDK", ("anthropic/", "httpx2/", "httpcore2/")),
    # With uvloop the sends are C under aiohttp's writer (its own lines are a few), and
    # the reads C under the loop's run (uvloop's own work, counted with the loop).
    ("socket reads and writes", ("asyncio/selector_events.py", "StreamWriter._writelines",
                                 "StreamWriter._write ")),
    ("aiohttp client", ("aiohttp/client", "aiohttp/connector.py", "aiohttp/cookiejar.py")),
    ("aiohttp server", ("aiohttp/web", "aiohttp/http_writer.py", "aiohttp/base_protocol.py",
                        "aiohttp/streams.py", "aiohttp/payload.py")),
    ("event loop (with uvloop: its C code, the socket reads), tasks, timers", ("asyncio/",)),
    ("gateway code", ("inference_operator/",)),
    ("metrics", ("prometheus_client/",)),
    ("validation (pydantic)", ("pydantic",)),
    ("JSON", ("json/", "orjson")),
)


def component(frame: str) -> str:
    return next((name for name, marks in _COMPONENTS if any(m in frame for m in marks)),
                "other")


def summarise(raw: Path) -> dict[str, Any]:
    """Shares of all samples by function (file:line dropped), idle waits included, and
    own time by component."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    components: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        total += int(count)
        own[frames[-1]] += int(count)
        components[component(frames[-1])] += int(count)
        for frame in set(frames):
            inclusive[frame] += int(count)

    def top(counter: collections.Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(100 * n / total, 1)) for name, n in counter.most_common(TOP)]

    return {"samples": total, "components_percent": top(components),
            "own_percent": top(own), "inclusive_percent": top(inclusive)}
