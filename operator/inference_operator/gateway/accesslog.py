"""The access log: one JSON line per answered request (probes and scrapes left out), for
who spent what. It holds who called, which endpoint, the status, the tokens and the
latency; never a prompt, a completion, a query string or a header (so no credential).

The lines go to the logger ``inference_operator.gateway.access`` at INFO; the command
(``inference-operator gateway``) writes them to stdout as they are, one JSON object per
line, and everything else to stderr."""

from __future__ import annotations

import datetime
import logging
import sys

from inference_operator.gateway import jsoncodec
from inference_operator.gateway.auth.caller import Caller
from inference_operator.gateway.metrics import Usage

log = logging.getLogger("inference_operator.gateway.access")


def write(*, listener: str, caller: Caller | None, method: str, path: str,
          inference_id: str | None, status: int, usage: Usage | None,
          latency: float) -> None:
    if not log.isEnabledFor(logging.INFO):
        return
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
    line = {
        "time": now.replace("+00:00", "Z"),
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
    }
    log.info("%s", jsoncodec.dumps(line).decode())


def to_stdout() -> None:
    """The command's setup: the lines alone on stdout, not in the log format on stderr."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)  # the access log is its own switch, not --log-level's
    log.propagate = False
