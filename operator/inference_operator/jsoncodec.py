"""JSON on the hot path: orjson where it is safe to, the standard library elsewhere.

Encoding (the upstream body, every answer, one event per streamed delta) and decoding the
upstream's replies cost several times less with orjson than with ``json`` (the figures are
in docs/benchmarks.md). Client request bodies stay with ``json``: orjson reads integers
past 64 bits as floats, which would change what validation says about them."""

from __future__ import annotations

import contextlib
import gc
import itertools
import json
import re
from collections.abc import Iterator
from typing import Any

import orjson

# The nesting check keeps the brackets, both kinds read as one (depth is all it counts;
# json refuses pairs that do not match), and the quotes around strings.
_ONE_KIND = bytes.maketrans(b"{}", b"[]")
_NOT_STRUCTURE = bytes(set(range(256)) - set(b'[]{}"'))
_RUN = re.compile(rb"\[+|\]+")
_SHALLOW_PASSES = 8


def too_deep(text: bytes | str, limit: int) -> bool:
    """Whether JSON ``text`` nests arrays and objects deeper than ``limit``: checked
    before parsing, as Jackson checks while it reads, so nothing deep is ever built (json
    recurses per level). Linear, and in C but for one step per run of brackets left after
    the shallow passes; text with fewer opening brackets than ``limit`` is passed after
    two counts."""
    raw = text.encode(errors="surrogatepass") if isinstance(text, str) else text
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    # The brackets outside strings: escaped backslashes and quotes go first, so every
    # quote left opens or closes a string.
    if b"\\" in raw:
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    structure = raw.translate(_ONE_KIND, _NOT_STRUCTURE)
    brackets = structure.replace(b'""', b"")
    if b'"' in brackets:  # some string holds brackets
        brackets = b"".join(structure.split(b'"')[::2])
    # Closed at the end if it is not (it is no JSON then), so every deepest point is a
    # "[]" and each pass below takes off exactly one level.
    brackets += b"]" * (brackets.count(b"[") - brackets.count(b"]"))
    # Ordinary bodies: a few passes leave nothing. Hostile ones: what is left has a run
    # of brackets per branch at least as deep as the passes, so few runs to count.
    passes = min(_SHALLOW_PASSES, limit)
    for _ in range(passes):
        brackets = brackets.replace(b"[]", b"")
        if not brackets:
            return False
    steps = (len(run) if run[0] == ord("[") else -len(run) for run in _RUN.findall(brackets))
    return passes + max(itertools.accumulate(steps), default=0) > limit


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
    orjson raising first costs nothing on the common path; so does nesting past orjson's
    255 levels, which ``json`` takes without its cycle check, as orjson does (no value
    here has a cycle: they are built from JSON)."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, separators=(",", ":"), check_circular=False).encode()


@contextlib.contextmanager
def no_collection() -> Iterator[None]:
    """Around decoding a request and building from it, with no await inside: JSON values
    hold no reference cycles, so a collection meanwhile could free none of them, but would
    walk every object just built, again at each generation's threshold (up to half of the
    CPU a large body costs)."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
