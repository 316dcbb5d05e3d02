"""Where the source checkout is, for the commands that need its files (the Go modules
that pin the control-plane binaries, the examples). None in an installed wheel."""

from __future__ import annotations

from pathlib import Path

# devkit/inference_devkit/checkout.py -> the repository root
_ROOT = Path(__file__).resolve().parents[2]


def checkout_path(*parts: str) -> Path | None:
    path = _ROOT.joinpath(*parts)
    return path if path.exists() else None
