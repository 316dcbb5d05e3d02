"""The program a client Pod runs (``python -c`` with this file's text; the image has no
curl): what an application in the cluster does, with the standard library only, its
ServiceAccount token (``TOKEN_FILE``) sent as a bearer token when it has one.

    calls '[{"method": "POST", "url": ..., "body": {...}}, ...]'
        one JSON line per call: {"url", "status", "body", "www_authenticate"}
    loop '{"url": ..., "body": {...}, "interval": 0.1, "count": 1200, "seconds": 120}'
        POST every ``interval`` seconds, at most ``count`` times and ``seconds`` long;
        one line per request: "<unix time> <HTTP status or error:<kind>> <milliseconds>"
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request


def headers() -> dict[str, str]:
    """Content type, and the Pod's projected token when it has one: read for every call,
    since the kubelet rotates it."""
    sent = {"Content-Type": "application/json"}
    if os.environ.get("TOKEN_FILE"):
        with open(os.environ["TOKEN_FILE"]) as token:
            sent["Authorization"] = f"Bearer {token.read().strip()}"
    return sent


def call(method: str, url: str, body: object = None,
         timeout: float = 30) -> tuple[int, str, str | None]:
    """(status, body, WWW-Authenticate)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers())
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode(), None
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(), error.headers.get("WWW-Authenticate")


def calls(spec: list[dict]) -> None:
    for one in spec:
        status, text, challenge = call(one["method"], one["url"], one.get("body"))
        print(json.dumps({"url": one["url"], "status": status, "body": text,
                          "www_authenticate": challenge}), flush=True)


def loop(spec: dict) -> None:
    deadline = time.monotonic() + spec["seconds"]
    for _ in range(spec["count"]):
        if time.monotonic() > deadline:
            break
        began = time.time()
        try:
            outcome = str(call("POST", spec["url"], spec["body"], timeout=2)[0])
        except (OSError, ValueError) as error:  # refused, reset, timed out, bad response
            reason = getattr(error, "reason", error)
            outcome = f"error:{type(reason).__name__}"
        print(f"{began:.3f} {outcome} {(time.time() - began) * 1000:.0f}", flush=True)
        time.sleep(max(0.0, spec["interval"] - (time.time() - began)))


if __name__ == "__main__":
    # PID 1 of its container ignores SIGTERM unless it handles it: without this a deleted
    # loop Pod would go on resolving and calling for the whole grace period.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    {"calls": calls, "loop": loop}[sys.argv[1]](json.loads(sys.argv[2]))
