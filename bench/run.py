"""`make bench`: every benchmark of the project, each bounded in count and time.

The gateway's (bench/gateway/run.py; its options pass through, see ``--help``), then the
operator's (bench/operator/run.py), the gateway fleet's (bench/fleet/run.py), the
gateway authentication's (bench/auth/run.py), the fleet's throughput on the local node
(bench/fleet/throughput.py) and chat completion streaming against completion streaming
(bench/chat/run.py), each in its own process: most run their own control plane (the
fleet's throughput a whole node; the chat one only an emulator and a gateway). Each
rewrites its generated section of docs/benchmarks.md.

``--only NAME`` (repeatable: gateway, operator, fleet, auth, fleet-throughput, chat) runs only
those; the other options go to the gateway's, or to the one benchmark selected. ``--quick``
reaches the smoke modes of all but the operator's (it has none)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# The gateway bench's modules import each other by name, as when run on their own.
sys.path.insert(0, str(HERE / "gateway"))

import run as gateway_bench  # noqa: E402  (bench/gateway/run.py, found via the path above)

BENCHMARKS = ("gateway", "operator", "fleet", "auth", "fleet-throughput", "chat")
SCRIPTS = {"fleet": "fleet/run.py", "auth": "auth/run.py",
           "fleet-throughput": "fleet/throughput.py", "chat": "chat/run.py"}


def main() -> int:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--only", action="append", choices=BENCHMARKS)
    selected, rest = parser.parse_known_args()
    only = selected.only or list(BENCHMARKS)
    # Options for one benchmark alone go to it; with several, to the gateway's.
    single = only[0] if len(only) == 1 else None
    command = " ".join(["bench/run.py", *sys.argv[1:]])
    if os.environ.get("MAKELEVEL"):
        command = "make bench" + (f' BENCH_ARGS="{" ".join(sys.argv[1:])}"'
                                  if sys.argv[1:] else "")
    codes = []
    if "gateway" in only:
        codes.append(gateway_bench.main(rest))
    if "operator" in only:
        extra = rest if single == "operator" else []
        codes.append(subprocess.run(
            [sys.executable, str(HERE / "operator" / "run.py"), *extra], check=False).returncode)
    for name, script in SCRIPTS.items():  # each with a smoke mode, and the command recorded
        if name in only:
            extra = rest if single == name else [a for a in rest if a == "--quick"]
            codes.append(subprocess.run(
                [sys.executable, str(HERE / script), *extra, "--command", command],
                check=False).returncode)
    return next((code for code in codes if code), 0)


if __name__ == "__main__":
    sys.exit(main())
