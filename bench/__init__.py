"""The benchmarks: `python -m bench.run` (docs/benchmarks.md)."""
