"""How answers are written: JSON, and server-sent events."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from inference_operator import jsoncodec

SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    # Proxies (nginx and friends) must pass every event on at once.
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}
DONE = b"event: message\ndata: [DONE]\n\n"


def json_response(body: Any, status: int = 200,
                  headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=jsoncodec.dumps(body), status=status, headers=headers,
                        content_type="application/json")


def sse_event(name: str, data: Any) -> bytes:
    # No byte-order mark (Elasticsearch sends one per event; strict parsers choke on it).
    return b"event: %s\ndata: %s\n\n" % (name.encode(), jsoncodec.dumps(data))
