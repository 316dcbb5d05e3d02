"""What the benchmarks do alike (bench/gateway, bench/operator, bench/fleet)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


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
