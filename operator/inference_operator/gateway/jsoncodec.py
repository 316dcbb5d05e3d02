"""JSON on the hot path: orjson where it is safe to, the standard library elsewhere.

Encoding (the upstream body, every answer, one event per streamed delta) and decoding the
upstream's replies cost several times less with orjson than with ``json`` (the figures are
in docs/benchmarks.md). Client request bodies stay with ``json``: orjson reads integers
past 64 bits as floats, which would change what validation says about them."""

from __future__ import annotations

import json
from typing import Any

import orjson


def loads(raw: bytes | str) -> Any:
    """An upstream reply; what orjson refuses (NaN, invalid UTF-8, ...) goes to ``json``,
    so nothing the SDK (``json`` too) read is lost."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON. What orjson cannot encode goes to ``json``, which escapes it:
    integers past 64 bits (``max_tokens`` may be any JSON integer) and
    lone surrogates (``"\\ud800"`` in a client's JSON is valid and decodes to one).
    orjson raising first costs nothing on the common path."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, separators=(",", ":")).encode()
