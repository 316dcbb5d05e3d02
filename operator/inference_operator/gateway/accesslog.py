"""The access log: one JSON line per answered request (probes and scrapes left out), for
who spent what. It holds who called, which endpoint, the status, the tokens and the
latency; never a prompt, a completion, a query string or a header (so no credential).

The lines go to the logger ``inference_operator.gateway.access`` at INFO; the command
(``inference-operator gateway``) writes them to stdout as they are, one JSON object per
line, and everything else to stderr. There (``to_stdout``) each line is written to the
stream directly: a LogRecord per request (caller lookup, thread and process names) cost
several times the line itself, and nothing else reads that logger in the command."""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

from inference_operator import jsoncodec
from inference_operator.gateway.auth.caller import Caller
from inference_operator.gateway.metrics import Usage

log = logging.getLogger("inference_operator.gateway.access")
# The command's stdout and its handler (for reporting a failed write as logging would);
# None: the lines go through the logger.
_stdout: tuple[TextIO, logging.Handler] | None = None


class _Clock:
    """UTC time as ``2026-12-02T00:29:46.958Z``; the part up to the second is formatted
    once per second rather than once per line."""

    second = -1
    prefix = ""

    @classmethod
    def now(cls) -> str:
        now = time.time()
        second = int(now)
        if second != cls.second:
            cls.prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            cls.second = second
        return f"{cls.prefix}.{int((now - second) * 1000):03d}Z"


def write(*, listener: str, caller: Caller | None, method: str, path: str,
          inference_id: str | None, status: int, usage: Usage | None,
          latency: float) -> None:
    if _stdout is None and not log.isEnabledFor(logging.INFO):
        return
    line = jsoncodec.dumps({
        "time": _Clock.now(),
        "listener": listener,
        "caller": None if caller is None else caller.name,
        "caller_namespace": None if caller is None else caller.namespace,
        "method": method,
        "path": path,
        "endpoint": inference_id,
        "status": status,
        "input_tokens": 0 if usage is None else usage.input_tokens,
        "output_tokens": 0 if usage is None else usage.output_tokens,
        "latency_ms": round(latency * 1000, 3),
    }).decode()
    if _stdout is None:
        log.info(line)  # no arguments: the line is never %-formatted
        return
    stream, handler = _stdout
    try:
        stream.write(line + "\n")
        stream.flush()
    except Exception:
        # As logging's StreamHandler does: reported on stderr, the request not failed.
        handler.handleError(logging.makeLogRecord({"name": log.name, "msg": line}))


def to_stdout() -> None:
    """The command's setup: the lines alone on stdout, not in the log format on stderr."""
    global _stdout
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)  # the access log is its own switch, not --log-level's
    log.propagate = False
    _stdout = (sys.stdout, handler)
