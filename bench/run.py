"""`make bench`: every benchmark of the project, each bounded in count and time.

The gateway's (bench/gateway/run.py; its options pass through, see ``--help``), then the
operator's (bench/operator/run.py, in its own process: it runs its own control plane).
Both rewrite their generated sections of docs/benchmarks.md."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# The gateway bench's modules import each other by name, as when run on their own.
sys.path.insert(0, str(HERE / "gateway"))

import run as gateway_bench  # noqa: E402  (bench/gateway/run.py, found via the path above)


def main() -> int:
    gateway = gateway_bench.main()
    operator = subprocess.run([sys.executable, str(HERE / "operator" / "run.py")], check=False)
    return gateway or operator.returncode


if __name__ == "__main__":
    sys.exit(main())
