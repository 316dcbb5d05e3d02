"""The gateway benchmark: `python -m bench.gateway`."""
