"""What the benchmarks do alike (bench/gateway, bench/operator, bench/fleet)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile, ``fraction`` from 0 to 1; nan without values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def splice_section(path: Path, start: str, end: str, section: str, heading: str) -> None:
    """Put ``section`` (which begins with ``start`` and ends with ``end``) in place of the
    generated part between those markers, or append it under ``heading``."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        text = before + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + f"\n\n## {heading}\n\n" + section + "\n"
    path.write_text(text)


def save_results(args: argparse.Namespace, name: str, command: str, began: datetime,
                 machine: dict[str, Any], parts: dict[str, Any],
                 write_report: Callable[[Path, dict[str, Any]], None]) -> Path:
    """``docs/benchmarks/<name>.json`` (the run, its machine and options, then ``parts``)
    and the report's section of benchmarks.md, both under ``args.out``."""
    result = {
        "run": {"command": command, "date": began.strftime("%Y-%m-%d %H:%M UTC"),
                "duration_seconds": round((datetime.now(UTC) - began).total_seconds()),
                "machine": machine,
                "args": {k: str(v) if isinstance(v, Path) else v
                         for k, v in vars(args).items() if k != "command"}},
        **parts,
    }
    output = args.out / "benchmarks" / f"{name}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    write_report(args.out / "benchmarks.md", result)
    return output


def install_venv(venv: Path, requirements: Sequence[str], log: Path, timeout: float,
                 *, version: str = "") -> Path:
    """A virtualenv of its own under .cache/bench with ``requirements`` installed (again
    only when they or ``version`` change); its python. pip trusts the CA bundle the
    environment names, else the system's (a TLS-intercepting proxy's CA is in one of
    them). Raises
    CalledProcessError, TimeoutExpired or OSError; the log has pip's output."""
    from inference_devkit.controlplane.images import host_ca_bundle

    python = venv / "bin" / "python"
    stamp, spec = venv / ".installed-spec", " ".join([*requirements, version]).strip()
    if python.exists() and stamp.exists() and stamp.read_text() == spec:
        return python
    log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if "PIP_CERT" not in env and (bundle := host_ca_bundle()) is not None:
        env["PIP_CERT"] = str(bundle)
    with log.open("w") as out:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True,
                       stdout=out, stderr=subprocess.STDOUT, timeout=120)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *requirements],
                       check=True, stdout=out, stderr=subprocess.STDOUT, timeout=timeout,
                       env=env)
    stamp.write_text(spec)
    return python
