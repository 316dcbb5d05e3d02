"""Elasticsearch time values (``30s``, ``500ms``, ``2m``, ``-1``) for ``?timeout=``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from inference_operator.gateway.errors import ESError

_UNITS = {
    "nanos": 1e-9, "micros": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0,
}
# ASCII digits only (``\d`` would take other scripts' digits) and blanks only around the
# value: the same rule as the OpenAPI document's pattern (openapi.TIME_VALUE_PATTERN).
_VALUE = re.compile(r"([0-9]+)(nanos|micros|ms|s|m|h|d)")


@dataclass(frozen=True)
class TimeValue:
    seconds: float | None  # None: no limit (``-1``)
    text: str  # as the caller wrote it, for "Request timed out after [...]"


DEFAULT_TIMEOUT = TimeValue(30.0, "30s")


@dataclass(frozen=True)
class Deadline:
    """When a request's timeout ends, on the gateway's clock, and the timeout as written."""

    at: float
    written: str


def parse_time_value(text: str | None, setting: str = "timeout",
                     default: TimeValue = DEFAULT_TIMEOUT) -> TimeValue:
    if text is None or text == "":
        return default
    normalized = text.strip(" \t").lower()
    if normalized == "-1":
        return TimeValue(None, text)
    if normalized == "0":
        return TimeValue(0.0, text)
    match = _VALUE.fullmatch(normalized)  # "$" would let a final newline through
    # Bounded: int() refuses more than 4300 digits and float() overflows long before,
    # both as exceptions that would escape as 500s; 18 digits of days is forever anyway.
    if not match or len(match.group(1)) > 18:
        raise ESError(
            400, "parse_exception",
            f"failed to parse setting [{setting}] with value [{text}] as a time value: "
            "unit is missing or unrecognized",
        )
    return TimeValue(int(match.group(1)) * _UNITS[match.group(2)], text)
