"""`make bench`: every benchmark of the project, or those named with ``--only``, each in a
process of its own (``python -m bench.MODULE``: most start a control plane, the fleet's
throughput a whole node), each bounded in count and time and rewriting its section of
docs/benchmarks.md.

    python -m bench.run [--only NAME ...] [--quick] [--out DIR] [options of the one named]

``--quick`` and ``--out`` go to every benchmark; other options to the one ``--only`` names,
or to the gateway's when several run (see ``python -m bench.gateway --help``)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from bench.harness import ROOT

BENCHMARKS = {"gateway": "bench.gateway", "operator": "bench.operator", "fleet": "bench.fleet",
              "auth": "bench.auth", "fleet-throughput": "bench.throughput",
              "chat": "bench.chat", "tracing": "bench.tracing", "admission": "bench.admission",
              "peers": "bench.peers"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", add_help=False)
    parser.add_argument("--only", action="append", choices=list(BENCHMARKS))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out")
    given = sys.argv[1:] if argv is None else argv
    selected, rest = parser.parse_known_args(given)
    if "-h" in rest or "--help" in rest:
        print(__doc__)
        return 0
    only = selected.only or list(BENCHMARKS)
    takes = only[0] if len(only) == 1 or only[0] == "gateway" else None
    if rest and takes is None:
        parser.error(f"{' '.join(rest)}: for one benchmark; name it alone with --only")
    command = " ".join(["python -m bench.run", *given])
    if os.environ.get("MAKELEVEL"):
        command = "make bench" + (f' BENCH_ARGS="{" ".join(given)}"' if given else "")
    shared = ["--quick"] * selected.quick + (["--out", selected.out] if selected.out else [])
    codes = []
    for name in only:
        extra = rest if name == takes else []
        codes.append(subprocess.run(
            [sys.executable, "-m", BENCHMARKS[name], *shared, *extra, "--command", command],
            cwd=ROOT, check=False).returncode)
    return next((code for code in codes if code), 0)


if __name__ == "__main__":
    sys.exit(main())
