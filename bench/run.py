"""`make bench`: every benchmark of the project, each bounded in count and time.

Today that is the gateway's (bench/gateway/run.py; its options pass through, see
``--help``); the operator's benchmark joins here."""

from __future__ import annotations

import sys
from pathlib import Path

# The gateway bench's modules import each other by name, as when run on their own.
sys.path.insert(0, str(Path(__file__).resolve().parent / "gateway"))

import run as gateway_bench  # bench/gateway/run.py, found first on the path above

if __name__ == "__main__":
    sys.exit(gateway_bench.main())
